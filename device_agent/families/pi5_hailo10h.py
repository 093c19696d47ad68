"""Raspberry Pi 5 + AI HAT+ 2 (Hailo-10H, 8 GB LPDDR4X on the HAT), HailoRT 5.x.

The Hailo-10H is rated 40 TOPS INT4 (Hailo's product page; 20 TOPS INT8 as reported by the
press), with its own DRAM so LLM/VLM weights do not live in the Pi's memory. It is driven by the
5.x HailoRT line: the ``hailo1x_pci`` kernel module of hailort-drivers' master branch (v5.x:
Hailo-10H/15L), not the 4.x ``hailo_pci`` of the Hailo-8 line; the two coexist and bind different
PCI ids. A HEF must be compiled for ``hw_arch="hailo10h"`` (DFC 5.x); Hailo-8/8L HEFs do not run.

Emulation: the SoC thermal model of the Pi 5 with the Active Cooler (an ASSUMPTION: the HAT's own
few watts are not modelled, since emulated telemetry follows the agent's CPU use).

Sources: hailo.ai/products/ai-accelerators/hailo-10h-ai-accelerator/ (40 TOPS INT4, on-module
DRAM); raspberrypi.com/products/ai-hat-plus-2/ (AI HAT+ 2: Hailo-10H, 8 GB LPDDR4X, Pi 5 only);
github.com/hailo-ai/hailort-drivers (master = 5.x ``hailo1x_pci``); home-assistant/operating-system
pull request 4690 (both driver families side by side).
"""

from .base import BoardFamily
from .pi5_hailo8l import PI5_ACTIVE_COOLER

FAMILY = BoardFamily(
    name="pi5-hailo10h",
    title="Raspberry Pi 5 + AI HAT+ 2 (Hailo-10H, 40 TOPS INT4)",
    accelerator="hailo10h",
    board_class="pi5-hailo10h",
    npu_backend="hailo",
    artifact_format="hef",
    targets=("hailo10h",),
    toolchain="hailo-dfc",
    toolchain_hint=("the Hailo Dataflow Compiler 5.x with Hailo-10H support (Python package hailo_sdk_client), "
                    "which is not on PyPI: download it from the Hailo Developer Zone (developer.hailo.ai)"),
    runtime="HailoRT 5.x",
    runtime_major=(5,),
    driver_module="hailo1x_pci",
    sensors=("linux", "pi5", "hailo"),
    thermal=PI5_ACTIVE_COOLER,
    sim_host="pi5h10",
    doctor_checks=("hailo", "hailo.pcie"),
    sources=("https://hailo.ai/products/ai-accelerators/hailo-10h-ai-accelerator/",
             "https://www.raspberrypi.com/products/ai-hat-plus-2/",
             "https://github.com/hailo-ai/hailort-drivers",
             "https://github.com/home-assistant/operating-system/pull/4690"),
)
