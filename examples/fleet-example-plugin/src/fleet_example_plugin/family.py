"""A board family a lab adds in its own package: Rockchip RK3576 boards (e.g. Radxa Rock 4D).

This one file is all a family takes: fleet finds it through the entry point
``[project.entry-points."fleet.board_families"] lab-rk3576 = "fleet_example_plugin.family:FAMILY"``
and then accepts ``board: rk3576`` / ``accelerator: rk3576`` in inventories,
``fleet sim up --mix lab-rk3576:1``, ``fleet models build/import --target rk3576`` (rknn-toolkit2
builds .rknn for target_platform rk3576), deploy selection, suite.yml thresholds under
``rk3576``, and its emulated telemetry. A board needs no copy of this package: ``fleet deploy``
writes the family's definition into the board's agent.yml.

Sources: github.com/airockchip/rknn-toolkit2 (RK3576 among the supported target platforms; its
NPU has 2 cores, 6 TOPS per Rockchip's RK3576 brief). The thermal constants are ASSUMPTIONS
(heatsink, no fan). Limitation: the agent's rknn backend checks the device tree for ``rk3588``
(device_agent/backends/rknn.py), so a real RK3576 board needs that check widened; emulated boards
run the onnx backend and are not affected.
"""

from device_agent.families import BoardFamily, ThermalConstants

FAMILY = BoardFamily(
    name="lab-rk3576",
    title="Rockchip RK3576 (RKNPU, 2 cores), a lab's own family",
    accelerator="rk3576",
    board_class="rk3576",
    npu_backend="rknn",
    artifact_format="rknn",
    targets=("rk3576",),
    toolchain="rknn-toolkit2",
    toolchain_hint="rknn-toolkit2 (PyPI) with target_platform rk3576, installed in its own venv",
    runtime="librknnrt 2.x + rknn-toolkit-lite2",
    driver_module="rknpu",
    sensors=("linux",),
    thermal=ThermalConstants(25.0, 1.5, 6.0, 7.0, 50.0, 85.0, "assumed (heatsink, no fan)"),
    sim_host="rk3576",
    doctor_checks=("rknn",),
    sources=("https://github.com/airockchip/rknn-toolkit2",),
)
