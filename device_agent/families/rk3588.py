"""Rockchip RK3588 boards (Rock 5B, Orange Pi 5, ...): the 3-core RKNPU through RKNNLite, .rknn files.

Sources: github.com/airockchip/rknn-toolkit2 (rknn-toolkit2 builds .rknn for target_platform
rk3588; rknn-toolkit-lite2 + librknnrt run them on the board); rknpu driver ``/sys/module/rknpu``.
Thermal model: ASSUMPTIONS (heatsink + fan), throttle 85 °C = the mainline device tree's passive
trip (rk3588-base.dtsi); see device_agent.telemetry.emulated.
"""

from .base import BoardFamily, ThermalConstants

FAMILY = BoardFamily(
    name="rk3588",
    title="Rockchip RK3588 (RKNPU, 3 cores)",
    accelerator="rk3588",
    board_class="rk3588",
    npu_backend="rknn",
    artifact_format="rknn",
    targets=("rk3588",),
    toolchain="rknn-toolkit2",
    toolchain_hint="rknn-toolkit2 (PyPI), installed in its own venv (it pins its own torch/onnx)",
    runtime="librknnrt 2.x + rknn-toolkit-lite2",
    driver_module="rknpu",
    sensors=("linux", "rk3588"),
    thermal=ThermalConstants(25.0, 2.0, 8.0, 5.0, 60.0, 85.0,
                             "assumed (heatsink + fan); throttle 85 °C = mainline passive trip"),
    sim_host="rk3588",
    doctor_checks=("rknn",),
    sources=("https://github.com/airockchip/rknn-toolkit2",),
)
