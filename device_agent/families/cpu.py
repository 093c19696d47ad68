"""A generic CPU host (x86 or Arm) without NPU: every stage on the onnx backend.

Also what a board without agent.yml runs as. Thermal model: ASSUMPTIONS for a desktop x86 host
(see device_agent.telemetry.emulated).
"""

from .base import BoardFamily, ThermalConstants

FAMILY = BoardFamily(
    name="cpu",
    title="Generic CPU host (no NPU)",
    accelerator="cpu",
    board_class="cpu",
    runtime="onnxruntime (CPU)",
    sensors=("linux",),
    thermal=ThermalConstants(25.0, 10.0, 65.0, 0.6, 30.0, 95.0, "assumed (desktop x86 host)"),
    sim_host="cpu",
)
