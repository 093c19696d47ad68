"""Parsers for the outputs the stack fingerprint reads. Pure functions over text, so tests drive
them with recorded outputs in the documented formats (tests/fixtures/stack/).

Sources of the formats (docs/reference/device_apis.md):

- ``hailortcli fw-control identify``: ``Key: value`` lines — ``Control Protocol Version``,
  ``Firmware Version``, ``Logger Version``, ``Board Name``, ``Device Architecture``,
  ``Serial Number``, ``Part Number``, ``Product Name`` (§1.6, ``fw_control_command.cpp@hailo8``).
  Key on ``Device Architecture``, never ``Board Name`` (Hailo-8L boards print
  ``Board Name: Hailo-8``, frigate#22202).
- ``hailortcli --version``: ``HailoRT-CLI version 4.23.0``.
- ``/sys/module/hailo_pci/version``: the driver version, ``4.23.0``.
- ``/sys/bus/pci/devices/*/current_link_speed``: ``8.0 GT/s PCIe`` (2.5/5/8/16 GT/s = Gen 1/2/3/4).
- librknnrt: the runtime log line / embedded string ``RKNN Runtime Information, librknnrt version:
  1.5.2 (c6b7b351a@2023-08-23T15:28:22)`` (§5.5, airockchip/rknn-toolkit2#448).
- rknpu driver: ``/sys/kernel/debug/rknpu/version`` (``RKNPU driver: v0.9.8``), or the kernel log
  ``Initialized rknpu 0.9.5 20231018 for fdab0000.npu`` (§4.2, Pelochus/ezrknn-toolkit2#1).
- ``/etc/os-release``: ``KEY="value"`` lines (os-release(5)).
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"(\d+(?:\.\d+)+)")

#: PCIe link speed (GT/s) → generation (PCI-SIG: 2.5/5/8/16/32 GT/s = Gen 1-5).
GT_S_TO_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5}


def parse_key_values(text: str) -> dict[str, str]:
    """``Key: value`` lines → {key: value} (first colon splits; lines without one are skipped)."""
    out = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if sep and key.strip() and val.strip():
            out.setdefault(key.strip(), val.strip())
    return out


def first_version(text: str | None) -> str | None:
    """The first dotted version number in ``text`` (``v0.9.8`` → ``0.9.8``), or None."""
    if not text:
        return None
    m = _VERSION.search(text)
    return m.group(1) if m else None


def parse_identify(text: str) -> dict:
    """``hailortcli fw-control identify`` → {firmware_version, firmware_raw, architecture,
    board_name, product_name, serial_number, part_number, protocol_version}.

    ``architecture`` is normalised to lower case without dashes (``HAILO8L`` → ``hailo8l``), the
    spelling of the inventory's ``accelerator``. A ``<N/A>`` product name (AI HAT+) becomes None.

    Raises:
        ValueError: no ``Firmware Version`` or ``Device Architecture`` line (not identify output).
    """
    kv = parse_key_values(text)
    fw, arch = kv.get("Firmware Version"), kv.get("Device Architecture")
    if not fw or not arch:
        raise ValueError("not `hailortcli fw-control identify` output: no Firmware Version / "
                         f"Device Architecture line in {text[:200]!r}")

    def na(v):
        return None if v is None or v.strip() in ("<N/A>", "N/A", "") else v.strip()

    return {"firmware_version": first_version(fw), "firmware_raw": fw,
            "architecture": normalise_arch(arch), "architecture_raw": arch,
            "board_name": na(kv.get("Board Name")), "product_name": na(kv.get("Product Name")),
            "serial_number": na(kv.get("Serial Number")), "part_number": na(kv.get("Part Number")),
            "protocol_version": na(kv.get("Control Protocol Version"))}


def normalise_arch(arch: str | None) -> str | None:
    """``HAILO8L`` / ``Hailo-8L`` / ``hailo8l`` → ``hailo8l`` (None stays None)."""
    if not arch:
        return None
    return re.sub(r"[^a-z0-9]", "", arch.lower())


def parse_link_speed(text: str) -> dict:
    """``8.0 GT/s PCIe`` (sysfs current_link_speed/max_link_speed) → {gt_s: 8.0, gen: 3}.
    ``Unknown`` or garbage → {gt_s: None, gen: None}."""
    m = re.search(r"([\d.]+)\s*GT/s", text or "")
    if not m:
        return {"gt_s": None, "gen": None}
    gt = float(m.group(1))
    return {"gt_s": gt, "gen": GT_S_TO_GEN.get(gt)}


def parse_librknnrt_version(text: str) -> str | None:
    """The librknnrt version from the runtime log line or the string embedded in the library
    (``librknnrt version: 2.3.2 (429f97ae6b@2025-04-09T09:09:27)``), else None."""
    m = re.search(r"librknnrt version:\s*v?(\d+(?:\.\d+)+)", text or "")
    return m.group(1) if m else None


def parse_rknpu_driver_version(text: str) -> str | None:
    """The rknpu driver version from ``/sys/kernel/debug/rknpu/version`` (``RKNPU driver:
    v0.9.8``), the runtime's ``RKNN Driver Information, version: 0.9.8`` or the kernel log
    ``Initialized rknpu 0.9.5 20231018 for fdab0000.npu``; None when none is present."""
    for pat in (r"RKNPU driver:\s*v?(\d+(?:\.\d+)+)",
                r"RKNN Driver Information,?\s*version:\s*v?(\d+(?:\.\d+)+)",
                r"Initialized rknpu\s+v?(\d+(?:\.\d+)+)"):
        m = re.search(pat, text or "")
        if m:
            return m.group(1)
    return None


def parse_os_release(text: str) -> dict:
    """``/etc/os-release`` → {name (PRETTY_NAME, else NAME), id, version_id, version_codename}."""
    kv = {}
    for line in text.splitlines():
        key, sep, val = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            kv[key.strip()] = val.strip().strip('"').strip("'")
    return {"name": kv.get("PRETTY_NAME") or kv.get("NAME"), "id": kv.get("ID"),
            "version_id": kv.get("VERSION_ID"), "version_codename": kv.get("VERSION_CODENAME")}


def version_tuple(v: str | None) -> tuple[int, ...] | None:
    """``4.23.0`` → (4, 23, 0); ``v0.9.8`` → (0, 9, 8); None or no number → None."""
    s = first_version(v) if v else None
    return tuple(int(x) for x in s.split(".")) if s else None
