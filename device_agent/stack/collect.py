"""Collectors of the stack fingerprint: what software and firmware a board runs.

Each collector reads through :class:`StackRoots` (the telemetry ``Roots`` pattern: configurable
``/sys``, ``/proc``, ``/etc``, library folders and a command runner that tests replace with
recorded outputs), never raises, and records what it could not read under ``errors`` with the
reason. The *decisions* (which versions must match) are the controller's (``fleet.doctor``);
the board only reports facts.

On an emulated board the NPU collectors do not run: ``hailo``/``rknn`` are
``{"applicable": false, "reason": "emulated ..."}``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..families import registry
from ..manifest import read_manifest_listed
from ..protocol import ModelError
from ..telemetry.base import (
    CommandRunner,
    RecordedCommands,
    Roots,
    SensorUnavailable,
    read_text,
)
from .parse import (
    first_version,
    parse_identify,
    parse_librknnrt_version,
    parse_link_speed,
    parse_os_release,
    parse_rknpu_driver_version,
)

SCHEMA = 1
#: PCI vendor id of Hailo Technologies (lspci ``1e60:2864`` for Hailo-8/8L).
HAILO_PCI_VENDOR = "0x1e60"
LIBRKNNRT = "librknnrt.so"
LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class StackRoots(Roots):
    """Telemetry ``Roots`` plus what the fingerprint also reads.

    Attributes:
        etc: the /etc root (os-release).
        lib_dirs: folders searched for librknnrt.so.
        dist_version: installed Python distribution → version or None (importlib.metadata;
            tests pass a dict's ``get``).
        python_version, agent_version: overrides for tests (default: this interpreter / package).
    """

    commands: CommandRunner = field(default_factory=lambda: CommandRunner(timeout_s=10.0))
    etc: Path = Path("/etc")
    lib_dirs: tuple = LIB_DIRS
    dist_version: Callable[[str], str | None] = _dist_version
    python_version: str | None = None
    machine: str | None = None

    @classmethod
    def fixture(cls, root: str | os.PathLike, **kw) -> "StackRoots":
        """Roots for a recorded board tree: ``root/{sys,proc,etc,usr/lib}`` and recorded command
        outputs in ``root/commands/<command>.txt`` (RecordedCommands.from_dir)."""
        root = Path(root)
        cmds = root / "commands"
        return cls(sys=root / "sys", proc=root / "proc", etc=root / "etc",
                   lib_dirs=(str(root / "usr" / "lib"),),
                   commands=RecordedCommands.from_dir(cmds) if cmds.is_dir() else RecordedCommands({}),
                   **kw)


def _try(errors: dict, key: str, fn, *args):
    try:
        return fn(*args)
    except (SensorUnavailable, ValueError, OSError) as e:
        errors[key] = str(e)
        return None


# -- generic ------------------------------------------------------------------------------------
def collect_os(roots: StackRoots, errors: dict) -> dict:
    """OS from ``/etc/os-release`` (falls back to ``/usr/lib/os-release``)."""
    for p in (roots.etc / "os-release", roots.etc.parent / "usr" / "lib" / "os-release"):
        try:
            return parse_os_release(read_text(p))
        except SensorUnavailable:
            continue
    errors["os"] = f"{roots.etc / 'os-release'} unreadable"
    return {"name": None}


def collect_kernel(roots: StackRoots, errors: dict) -> dict:
    """Kernel release from ``/proc/sys/kernel/osrelease`` and ``/proc/version``, machine."""
    rel = _try(errors, "kernel", read_text, roots.proc / "sys" / "kernel" / "osrelease")
    try:
        ver = read_text(roots.proc / "version")
    except SensorUnavailable:
        ver = None
    return {"release": rel, "version": ver, "machine": roots.machine or platform.machine()}


def board_model(roots: StackRoots) -> str | None:
    """``/proc/device-tree/model`` (e.g. ``Raspberry Pi 5 Model B Rev 1.0``), None elsewhere."""
    try:
        return read_text(roots.proc / "device-tree" / "model").rstrip("\x00").strip() or None
    except SensorUnavailable:
        return None


# -- Hailo --------------------------------------------------------------------------------------
def hailo_pci_devices(roots: StackRoots) -> list[Path]:
    """sysfs folders of PCI functions with Hailo's vendor id (0x1e60)."""
    base = roots.sys / "bus" / "pci" / "devices"
    out = []
    if base.is_dir():
        for d in sorted(base.iterdir()):
            try:
                if read_text(d / "vendor").lower() == HAILO_PCI_VENDOR:
                    out.append(d)
            except SensorUnavailable:
                continue
    return out


def collect_pcie(roots: StackRoots, errors: dict) -> dict | None:
    """The Hailo device's PCIe link: address, current/max speed and generation, width
    (``current_link_speed``, ``max_link_speed``, ``current_link_width`` in sysfs)."""
    devs = hailo_pci_devices(roots)
    if not devs:
        errors["hailo.pcie"] = f"no PCI device with vendor {HAILO_PCI_VENDOR} under {roots.sys / 'bus/pci/devices'}"
        return None
    d = devs[0]
    out = {"address": d.name}
    for key in ("current_link_speed", "max_link_speed"):
        try:
            raw = read_text(d / key)
            sp = parse_link_speed(raw)
            pref = "current" if key.startswith("current") else "max"
            out[f"{pref}_speed"] = raw
            out[f"{pref}_gen"] = sp["gen"]
        except SensorUnavailable as e:
            errors[f"hailo.pcie.{key}"] = str(e)
    try:
        out["width"] = int(read_text(d / "current_link_width"))
    except (SensorUnavailable, ValueError):
        pass
    return out


def collect_hailo(roots: StackRoots, errors: dict, identify_text: str | None = None,
                  driver_module: str = "hailo_pci") -> dict:
    """HailoRT library (``hailortcli --version``), Python binding (dist ``hailort``), the family's
    driver (``/sys/module/<driver_module>/version``: hailo_pci for Hailo-8/8L, hailo1x_pci for the
    Hailo-10H), firmware and device (``hailortcli fw-control
    identify``), PCIe link. ``identify_text`` lets the agent pass output it already has."""
    out: dict = {"applicable": True}
    lib = _try(errors, "hailo.library", roots.commands.run, "hailortcli --version")
    out["library"] = {"version": first_version(lib), "source": "hailortcli --version"} if lib else None
    py = roots.dist_version("hailort")
    out["python_binding"] = {"version": py, "source": "python dist hailort"} if py else None
    drv = _try(errors, "hailo.driver", read_text, roots.sys / "module" / driver_module / "version")
    out["driver"] = {"version": first_version(drv), "source": f"/sys/module/{driver_module}/version"} if drv else None
    if identify_text is None:
        identify_text = _try(errors, "hailo.identify", roots.commands.run, "hailortcli fw-control identify")
    ident = _try(errors, "hailo.identify", parse_identify, identify_text) if identify_text else None
    out["firmware"] = ({"version": ident["firmware_version"], "raw": ident["firmware_raw"]}
                       if ident else None)
    out["device"] = ({k: ident[k] for k in ("architecture", "architecture_raw", "board_name",
                                            "product_name", "serial_number", "part_number")}
                     if ident else None)
    out["pcie"] = collect_pcie(roots, errors)
    return out


# -- RKNN ---------------------------------------------------------------------------------------
def find_librknnrt(roots: StackRoots) -> Path | None:
    """The first ``librknnrt.so`` in ``roots.lib_dirs``."""
    for d in roots.lib_dirs:
        p = Path(d) / LIBRKNNRT
        if p.is_file():
            return p
    return None


def librknnrt_version(path: Path, chunk: int = 1 << 20) -> str | None:
    """The version string embedded in librknnrt.so (what `strings librknnrt.so | grep
    "librknnrt version"` shows), read in chunks with overlap; None if absent."""
    pat = re.compile(rb"librknnrt version:\s*v?\d+(?:\.\d+)+")
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            buf = tail + block
            m = pat.search(buf)
            if m:
                return parse_librknnrt_version(m.group(0).decode(errors="replace"))
            tail = buf[-128:]
    return None


def collect_rknn(roots: StackRoots, errors: dict) -> dict:
    """librknnrt (embedded version string), rknpu driver (debugfs ``rknpu/version``, else
    ``/sys/module/rknpu/version``, else ``dmesg``'s ``Initialized rknpu X``), and the
    rknn-toolkit-lite2 Python package."""
    out: dict = {"applicable": True}
    lib = find_librknnrt(roots)
    if lib is None:
        errors["rknn.runtime"] = f"{LIBRKNNRT} not found in {', '.join(map(str, roots.lib_dirs))}"
        out["runtime"] = None
    else:
        ver = _try(errors, "rknn.runtime", librknnrt_version, lib)
        if ver is None and "rknn.runtime" not in errors:
            errors["rknn.runtime"] = f"{lib}: no 'librknnrt version:' string found"
        out["runtime"] = {"version": ver, "path": str(lib)}
    drv, src, why = None, None, []
    for p in (roots.sys / "kernel" / "debug" / "rknpu" / "version", roots.sys / "module" / "rknpu" / "version"):
        try:
            drv = parse_rknpu_driver_version(read_text(p)) or first_version(read_text(p))
            src = str(p)
            break
        except SensorUnavailable as e:
            why.append(str(e))
    if drv is None:
        try:
            drv = parse_rknpu_driver_version(roots.commands.run("dmesg"))
            src = "dmesg" if drv else None
            if drv is None:
                why.append("dmesg: no 'Initialized rknpu' line")
        except SensorUnavailable as e:
            why.append(str(e))
    if drv is None:
        errors["rknn.driver"] = "; ".join(why)
    out["driver"] = {"version": drv, "source": src} if drv else None
    lite = roots.dist_version("rknn-toolkit-lite2")
    out["toolkit_lite2"] = {"version": lite} if lite else None
    return out


# -- models -------------------------------------------------------------------------------------
def rknn_toolkit_version(entry: dict) -> str | None:
    """The rknn-toolkit2 version that built a .rknn entry: ``exporter["rknn-toolkit2"]`` (or
    ``rknn_toolkit2``), else ``toolkit_version``."""
    exp = entry.get("exporter") or {}
    v = exp.get("rknn-toolkit2") or exp.get("rknn_toolkit2") or entry.get("toolkit_version")
    return str(v) if v else None


def hef_arch(entry: dict) -> str | None:
    """The architecture a HEF entry was compiled for: ``hw_arch`` (or ``exporter.hw_arch``), else
    its ``target`` (hailo8 / hailo8l)."""
    exp = entry.get("exporter") or {}
    v = entry.get("hw_arch") or exp.get("hw_arch") or entry.get("target")
    return str(v).lower() if v else None


def collect_models(models_root: Path, errors: dict) -> dict:
    """Per deployed model, per file: sha256 (manifest), target, format, present, and for NPU
    files the HEF arch / rknn toolkit version (manifest; files are not hashed here, the agent
    verifies each one before loading)."""
    out: dict = {}
    if not models_root.is_dir():
        return out
    for d in sorted(p for p in models_root.iterdir() if p.is_dir()):
        try:
            arts = read_manifest_listed(d)
        except ModelError as e:
            errors[f"models.{d.name}"] = e.message
            out[d.name] = {"error": e.message, "files": {}}
            continue
        files = {}
        for a in arts:
            f = {"sha256": a.sha256, "target": a.get("target"), "format": a.get("format"),
                 "present": a.path.is_file()}
            if a.get("format") == "hef":
                f["hef_arch"] = hef_arch(a.entry)
            if a.get("format") == "rknn":
                f["toolkit"] = rknn_toolkit_version(a.entry)
            files[a.file] = f
        out[d.name] = {"files": files}
    return out


# -- all ----------------------------------------------------------------------------------------
def collect_stack(config, roots: StackRoots | None = None, agent_version: str | None = None,
                  identify_text: str | None = None) -> dict:
    """The stack fingerprint of this board (``device_agent.protocol`` documents the layout).

    Args:
        config: the BoardConfig (accelerator, emulated, root).
        roots: where to read (default: the live system).
        agent_version: default ``device_agent.__version__``.
        identify_text: ``hailortcli fw-control identify`` output already at hand.

    Never raises: unreadable facts are None with the reason under ``errors``.
    """
    from .. import __version__

    roots = roots or StackRoots()
    errors: dict = {}
    acc = getattr(config, "accelerator", "cpu")
    emulated = bool(getattr(config, "emulated", False))
    stack = {
        "schema": SCHEMA,
        "accelerator": acc, "emulated": emulated,
        "os": collect_os(roots, errors),
        "kernel": collect_kernel(roots, errors),
        "python": {"version": roots.python_version or platform.python_version(),
                   "implementation": platform.python_implementation(), "executable": sys.executable},
        "agent": {"version": agent_version or __version__},
        "board_model": board_model(roots),
    }
    na = {"applicable": False, "reason": f"{acc} stages run on the onnx backend"}
    fam = registry().find(acc)
    backend = fam.npu_backend if fam is not None else None
    if backend == "hailo":  # the section is named after the family's NPU backend
        stack["hailo"] = na if emulated else collect_hailo(roots, errors, identify_text,
                                                           fam.driver_module or "hailo_pci")
    elif backend == "rknn":
        stack["rknn"] = na if emulated else collect_rknn(roots, errors)
    stack["models"] = collect_models(Path(config.root) / "models", errors)
    stack["errors"] = errors
    return stack


__all__ = ["StackRoots", "collect_stack", "collect_hailo", "collect_rknn", "collect_models",
           "collect_pcie", "librknnrt_version", "CommandRunner"]
