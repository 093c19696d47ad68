"""Raspberry Pi 5 + AI HAT+ 26 TOPS (Hailo-8), HailoRT 4.x.

Board class ``pi5-hailo8l`` (the Pi 5 class inventories already use for either HAT: ``board:
pi5-hailo8l``, ``accelerator: hailo8``). Runs HEFs compiled for hailo8 and, at lower
performance, for hailo8l (HailoRT ``hef.cpp``: "Hailo8 can work with Hailo8L configurations";
the reverse is refused).

Sources: raspberrypi.com/documentation/accessories/ai-hat-plus.html (Hailo-8, 26 TOPS);
github.com/hailo-ai/hailort (hef.cpp, DeviceBase::is_hef_compatible); hailort-drivers branch
hailo8 (``hailo_pci`` 4.x).
"""

from .base import BoardFamily
from .pi5_hailo8l import HAILO_DFC_HINT, PI5_ACTIVE_COOLER

FAMILY = BoardFamily(
    name="pi5-hailo8",
    title="Raspberry Pi 5 + AI HAT+ 26 TOPS (Hailo-8)",
    accelerator="hailo8",
    board_class="pi5-hailo8l",
    npu_backend="hailo",
    artifact_format="hef",
    targets=("hailo8", "hailo8l"),
    toolchain="hailo-dfc",
    toolchain_hint=HAILO_DFC_HINT,
    runtime="HailoRT 4.x",
    runtime_major=(4,),
    driver_module="hailo_pci",
    sensors=("linux", "pi5", "hailo"),
    thermal=PI5_ACTIVE_COOLER,
    sim_host="pi5h8",
    doctor_checks=("hailo", "hailo.pcie"),
    sources=("https://www.raspberrypi.com/documentation/accessories/ai-hat-plus.html",
             "https://github.com/hailo-ai/hailort"),
)
