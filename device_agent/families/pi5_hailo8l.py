"""Raspberry Pi 5 + AI Kit / AI HAT+ 13 TOPS (Hailo-8L), HailoRT 4.x.

Sources: Raspberry Pi AI Kit and AI HAT+ documentation
(raspberrypi.com/documentation/accessories/ai-kit.html, .../ai-hat-plus.html: Hailo-8L, 13 TOPS,
PCIe Gen 3 recommended); hailort-drivers (github.com/hailo-ai/hailort-drivers, branch hailo8:
the 4.x ``hailo_pci`` driver for Hailo-8/8R/8L). Thermal model: see device_agent.telemetry.emulated.
"""

from .base import BoardFamily, ThermalConstants

PI5_ACTIVE_COOLER = ThermalConstants(
    20.0, 3.0, 6.2, 6.7, 55.0, 80.0,
    "fit to Pi 5 + Active Cooler idle/stress temperatures (qiita j-baba); P split assumed; "
    "throttle 80 °C per frequency-management.adoc")

HAILO_DFC_HINT = ("the Hailo Dataflow Compiler (Python package hailo_sdk_client), which is not on "
                  "PyPI: download it from the Hailo Developer Zone (developer.hailo.ai)")

FAMILY = BoardFamily(
    name="pi5-hailo8l",
    title="Raspberry Pi 5 + AI Kit / AI HAT+ 13 TOPS (Hailo-8L)",
    accelerator="hailo8l",
    board_class="pi5-hailo8l",
    npu_backend="hailo",
    artifact_format="hef",
    targets=("hailo8l",),
    toolchain="hailo-dfc",
    toolchain_hint=HAILO_DFC_HINT,
    runtime="HailoRT 4.x",
    runtime_major=(4,),
    driver_module="hailo_pci",
    sensors=("linux", "pi5", "hailo"),
    thermal=PI5_ACTIVE_COOLER,
    sim_host="pi5",
    doctor_checks=("hailo", "hailo.pcie"),
    sources=("https://www.raspberrypi.com/documentation/accessories/ai-kit.html",
             "https://github.com/hailo-ai/hailort-drivers"),
)
