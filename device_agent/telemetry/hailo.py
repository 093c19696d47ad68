"""Hailo-8/8L chip telemetry through HailoRT's device control (docs/reference/device_apis.md §1.5, §4.3).

- ``control.get_chip_temperature()`` → ``ts0_temperature``, ``ts1_temperature`` (°C, two on-die
  sensors) — available on every Hailo device.
- ``control.power_measurement(DvmTypes.AUTO, PowerMeasurementTypes.POWER)`` → W (single shot),
  only where ``get_extended_device_information().supported_features.current_monitoring`` is set
  (HailoRT's own test, ``Device::has_INA231``). Nothing confirms that flag on the Pi AI Kit/HAT+,
  so power is optional and probed.

One process owns the device (pitfall §5.2): during a measurement the sensor reads through the
pipeline's VDevice (``VDevice.get_physical_devices()``, the documented in-process route) and never
opens a second handle. Before a Hailo model is loaded there is no VDevice, and the readings are
``None`` with that reason.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..families import registry
from .base import Roots, Sensor

POWER_NOTE = "Hailo module (DvmTypes.AUTO: whole module where current monitoring exists)"


def _backend_control(backends) -> Callable[[], object | None]:
    """A provider of the control object of the hailo backend's open VDevice (None if not open)."""

    def provider():
        be = (backends or {}).get("hailo")
        vd = getattr(be, "_vdevice", None)
        if vd is None:
            return None
        return vd.get_physical_devices()[0].control

    return provider


class HailoSensor(Sensor):
    """Hailo chip temperature (ts0, ts1) and, where supported, module power.

    Args:
        control: a callable returning the device's ``control`` object, or None when the device is
            not open in this process.
        power: whether the device reports current monitoring.
        hp: the ``hailo_platform`` module (for the power enums); tests pass a stand-in.
    """

    source = "hailo"

    def __init__(self, control: Callable[[], object | None], power: bool, hp=None):
        super().__init__()
        self.control = control
        self.power = power
        self.hp = hp
        self.channel("temp.ts0", "°C", "temperature", "Hailo on-die sensor ts0")
        self.channel("temp.ts1", "°C", "temperature", "Hailo on-die sensor ts1")
        if power:
            self.channel("power", "W", "power", POWER_NOTE)

    @classmethod
    def probe(cls, config, roots: Roots, backends=None, **_) -> "HailoSensor | None":
        """Present on a real (not emulated) Hailo board whose ``hailo_platform`` finds a device.
        Power support is read once from the extended device information."""
        fam = registry().find(config.accelerator)
        if fam is None or "hailo" not in fam.sensors or config.emulated:
            return None
        try:
            hp = importlib.import_module("hailo_platform")
            ids = hp.Device.scan()
        except Exception:
            return None
        if not ids:
            return None
        power = False
        try:
            dev = hp.Device(ids[0])
            try:
                power = bool(dev.control.get_extended_device_information().supported_features.current_monitoring)
            finally:
                dev.release()
        except Exception:
            power = False
        return cls(_backend_control(backends), power, hp)

    def read(self):
        names = [c.name for c in self.channels]
        try:
            ctl = self.control()
        except Exception as e:
            ctl, err = None, f"Hailo device: {type(e).__name__}: {e}"
        else:
            err = "Hailo device not open in this process yet (read through the pipeline's VDevice)"
        if ctl is None:
            return {n: None for n in names}, {"hailo": err}
        vals: dict = {}
        errs: dict = {}
        try:
            t = ctl.get_chip_temperature()
            vals["hailo.temp.ts0"] = float(t.ts0_temperature)
            vals["hailo.temp.ts1"] = float(t.ts1_temperature)
        except Exception as e:
            vals["hailo.temp.ts0"] = vals["hailo.temp.ts1"] = None
            errs["hailo.temp"] = f"get_chip_temperature: {type(e).__name__}: {e}"
        if self.power:
            try:
                vals["hailo.power"] = float(ctl.power_measurement(self.hp.DvmTypes.AUTO,
                                                                  self.hp.PowerMeasurementTypes.POWER))
            except Exception as e:
                vals["hailo.power"], errs["hailo.power"] = None, f"power_measurement: {type(e).__name__}: {e}"
        return vals, errs
