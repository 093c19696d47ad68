"""Decisions on a board's stack fingerprint (the agent's ``info.stack``, ``device_agent.stack``).

Each check yields a :class:`Finding` ``{check, status, detail, fix}`` with status ``ok``,
``fail``, ``warn`` or ``n/a``. A board *fails* when any finding is ``fail``; ``fleet test``
refuses such a board (``fleet.runner.plugin``) unless told to run anyway.

Rules and fixes (docs/reference/device_apis.md):

- HailoRT library == hailo_pci driver == firmware, major.minor.revision (§5.1: HailoRT's
  ``validate_driver_version``: "Driver version (X) is different from library version (Y)",
  ``HAILO_INVALID_DRIVER_VERSION``). Fix: pin ``hailort``, ``hailo-dkms`` and ``python3-hailort``
  together (§0, Raspberry Pi getting-started.adoc). The Python binding must match too (§0/§5.1).
- Device architecture == the inventory's accelerator, and == every HEF's architecture (§5.3:
  "HEF format is not compatible with device. Device arch: HAILO8L, HEF arch: HAILO8",
  ``HAILO_INVALID_HEF``). Fix: compile with ``hw_arch="hailo8l"``. Key on ``Device
  Architecture``, not ``Board Name`` (§1.6).
- Pi 5 PCIe: Gen 2 by default; Gen 3 is recommended for the AI Kit (§4.1) → warn below Gen 3;
  fix ``dtparam=pciex1_gen=3`` (and know Gen 3 is "not certified", §5.4).
- librknnrt >= the rknn-toolkit2 version that built each .rknn (§5.5: "Invalid RKNN model
  version 6"). Fix: copy ``librknnrt.so`` from the same SDK version to /usr/lib. rknpu driver
  must be present (§4.2).
- Every file a model manifest lists is present (deploy copies them; fix ``fleet deploy``).
- HailoRT's major version serves the board family's chip (``BoardFamily.runtime_major``): 4.x
  for Hailo-8/8L, 5.x for the Hailo-10H (hailort-drivers: branch hailo8 = 4.x ``hailo_pci``,
  master = 5.x ``hailo1x_pci``).
- On an emulated board the NPU checks are ``n/a`` ("not applicable (emulated)"), never failures.
- CPU architecture: the kernel's machine (``uname -m``) == the inventory's ``arch`` (else fail:
  the wheelhouse would be built for the wrong platform); the CPU model the agent names (Arm cores
  from their ``CPU part``), and ``cpu_emulated`` (e.g. qemu-user) noted: such a board proves
  installs and ARM-kernel numerics, never speed (its latency is INVALID, fleet.measure.protocol).

Which NPU checks run is the board family's choice (``BoardFamily.doctor_checks``, names looked up
in :data:`FAMILY_CHECKS`: ``hailo``, ``hailo.pcie``, ``rknn``); the generic and model checks run
on every board. A lab's package adds a check through the entry-point group ``fleet.doctor_checks``
(name -> ``fn(stack, family, info) -> list[Finding]``) and names it in its family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Callable

from device_agent.stack.parse import version_tuple

from fleet.errors import FleetError
from fleet.families import BoardFamily, registry

OK, FAIL, WARN, NA = "ok", "fail", "warn", "n/a"
STATUSES = (OK, FAIL, WARN, NA)
MIN_PYTHON = (3, 10)

FIX_HAILO_PIN = ("pin HailoRT, the driver and the binding to one version: sudo apt install "
                 "hailort=<V> hailo-dkms=<V> python3-hailort=<V> (or hailo-all), then reboot "
                 "(docs/reference/device_apis.md §5.1)")
FIX_HEF_ARCH = ('recompile the HEF for this device: hailo compiler / ClientRunner(hw_arch="{arch}") '
                "then fleet models build + fleet deploy (docs/reference/device_apis.md §5.3)")
FIX_PCIE = ("set dtparam=pciex1_gen=3 in /boot/firmware/config.txt (or raspi-config → Advanced → "
            "PCIe Speed) and reboot; Gen 3 is not certified, so watch for instability (docs/reference/device_apis.md §4.1, §5.4)")
FIX_RKNNRT = ("copy rknpu2/runtime/Linux/librknn_api/aarch64/librknnrt.so from rknn-toolkit2 {want} "
              "(the SDK that built the model) to /usr/lib (docs/reference/device_apis.md §5.5)")
FIX_DEPLOY = "run `fleet deploy` for this board (it copies the agent and the models it can run)"


@dataclass
class Finding:
    """One check's verdict: ``check`` (e.g. ``hailo.versions``), ``status`` (ok|fail|warn|n/a),
    ``detail`` (what was seen) and ``fix`` (what to do; empty when ok)."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _v(d: dict | None) -> str | None:
    return (d or {}).get("version")


def _mmr(v: str | None) -> tuple | None:
    t = version_tuple(v)
    return (t + (0, 0, 0))[:3] if t else None


def check_generic(stack: dict, expected: dict, controller_agent: str | None) -> list[Finding]:
    """OS, kernel, Python (>= 3.10, contracts §1), agent version (== the controller's
    device_agent, else warn: redeploy), accelerator/emulated as the inventory says."""
    out = []
    os_name = (stack.get("os") or {}).get("name") or "unknown"
    kern = (stack.get("kernel") or {}).get("release") or "unknown"
    out.append(Finding("os", OK, f"{os_name}; kernel {kern} ({(stack.get('kernel') or {}).get('machine')})"))
    py = (stack.get("python") or {}).get("version")
    pt = version_tuple(py)
    if pt and pt[:2] >= MIN_PYTHON:
        out.append(Finding("python", OK, f"Python {py}"))
    else:
        out.append(Finding("python", FAIL, f"Python {py or 'unknown'} (fleet-agent needs >= 3.10)",
                           "install Python 3.10+ and point ansible_python_interpreter at it, then fleet deploy"))
    av = (stack.get("agent") or {}).get("version")
    if controller_agent and av != controller_agent:
        out.append(Finding("agent", WARN, f"agent {av}, controller ships {controller_agent}", FIX_DEPLOY))
    else:
        out.append(Finding("agent", OK, f"agent {av}"))
    acc = stack.get("accelerator")
    if expected.get("accelerator") and acc != expected["accelerator"]:
        out.append(Finding("accelerator", FAIL, f"agent.yml says {acc}, inventory says {expected['accelerator']}",
                           FIX_DEPLOY + " (it rewrites agent.yml from the inventory)"))
    if "emulated" in expected and bool(stack.get("emulated")) != bool(expected["emulated"]):
        out.append(Finding("emulated", FAIL, f"agent.yml emulated={stack.get('emulated')}, inventory "
                           f"emulated={expected['emulated']}", FIX_DEPLOY))
    return out


def check_cpu(info: dict, stack: dict, expected: dict) -> list[Finding]:
    """The board's CPU: architecture as the kernel reports it against the inventory's ``arch``,
    the CPU model, and whether the inventory says the CPU is emulated (``cpu_emulated``)."""
    machine = (stack.get("kernel") or {}).get("machine") or (info.get("cpu") or {}).get("machine") or "unknown"
    cpu = info.get("cpu") or {}
    model = f"{cpu.get('model') or 'unknown CPU'} x{cpu.get('count') or '?'}"
    want = expected.get("arch") or ""
    emulator = expected.get("cpu_emulated") or ""
    if want and machine != want:
        return [Finding("cpu", FAIL, f"{machine} ({model}), inventory arch {want}",
                        f"set arch: {machine} (and fleet_wheel_platform) for this host in the inventory, then fleet deploy")]
    detail = f"{machine} ({model})"
    if emulator:
        detail += (f"; CPU emulated by {emulator} (inventory cpu_emulated): installs and the numerics of "
                   f"{machine} kernels are real, speed is not (latency never VALID)")
    return [Finding("cpu", OK, detail)]


def check_hailo(stack: dict, expected_arch: str | None, is_pi5: bool,
                family: BoardFamily | None = None) -> list[Finding]:
    """HailoRT library/binding/driver/firmware equality, HailoRT major version for the family's
    chip (when ``family`` is given), device arch, HEF archs, and (``is_pi5``) the Pi 5 PCIe gen."""
    h = stack.get("hailo")
    if h is None:
        return []
    if not h.get("applicable", True):
        return [Finding("hailo", NA, f"not applicable (emulated): {h.get('reason', '')}".strip())]
    errs = stack.get("errors") or {}
    out = []
    vers = {"library": _v(h.get("library")), "driver": _v(h.get("driver")),
            "firmware": _v(h.get("firmware"))}
    missing = [k for k, v in vers.items() if not v]
    shown = ", ".join(f"{k} {v or '?'}" for k, v in vers.items())
    if missing:
        why = "; ".join(dict.fromkeys(errs[k] for k in (f"hailo.{m}" for m in missing + ["identify"]) if k in errs))
        out.append(Finding("hailo.versions", FAIL, f"cannot read HailoRT {', '.join(missing)} ({shown})"
                           + (f": {why}" if why else ""),
                           "install the Hailo stack (apt hailo-all on Raspberry Pi OS), check the module "
                           f"is loaded (lsmod | grep {(family and family.driver_module) or 'hailo_pci'}) and "
                           "`hailortcli fw-control identify` works; "
                           + FIX_HAILO_PIN))
    elif len({_mmr(v) for v in vers.values()}) != 1:
        out.append(Finding("hailo.versions", FAIL,
                           f"versions differ: {shown} (HailoRT refuses: \"Driver version ({vers['driver']}) "
                           f"is different from library version ({vers['library']})\")", FIX_HAILO_PIN))
    else:
        out.append(Finding("hailo.versions", OK, shown))
    lib_t = version_tuple(vers["library"])
    if family is not None and family.runtime_major and lib_t and lib_t[0] not in family.runtime_major:
        want = " or ".join(f"{m}.x" for m in family.runtime_major)
        out.append(Finding("hailo.runtime", FAIL,
                           f"HailoRT {vers['library']} on a {family.title}: this chip needs HailoRT {want}",
                           f"install {family.runtime} (driver module {family.driver_module}) for this board, "
                           "then fleet deploy"))
    py = _v(h.get("python_binding"))
    if py and vers["library"] and _mmr(py) != _mmr(vers["library"]):
        out.append(Finding("hailo.python", FAIL, f"python binding {py} vs library {vers['library']}",
                           FIX_HAILO_PIN))
    arch = (h.get("device") or {}).get("architecture")
    if arch is None:
        out.append(Finding("hailo.arch", FAIL, "device architecture unknown (identify failed)",
                           "check the device with `hailortcli fw-control identify` and dmesg | grep hailo"))
    elif expected_arch and arch != expected_arch:
        out.append(Finding("hailo.arch", FAIL, f"device is {arch}, inventory says {expected_arch}",
                           f"set accelerator: {arch} for this host in the inventory, then fleet deploy"))
    else:
        out.append(Finding("hailo.arch", OK, f"device {arch} ({(h.get('device') or {}).get('product_name') or 'product n/a'})"))
    if arch:
        for model, files in _npu_files(stack, "hef"):
            for name, f in files:
                ha = f.get("hef_arch")
                if (ha, arch) in registry().compatible():
                    # HailoRT runs Hailo-8L HEFs on a Hailo-8 (DeviceBase::is_hef_compatible), warning
                    # "This will result in lower performance"; the reverse is refused.
                    out.append(Finding(f"hailo.hef:{model}/{name}", WARN,
                                       f"HEF compiled for {ha} on a {arch} device: runs, at lower "
                                       "performance (HailoRT warning)", FIX_HEF_ARCH.format(arch=arch)))
                elif ha and ha != arch:
                    out.append(Finding(f"hailo.hef:{model}/{name}", FAIL,
                                       f"HEF compiled for {ha}, device is {arch} (HailoRT: \"HEF format is "
                                       f"not compatible with device\", HAILO_INVALID_HEF)",
                                       FIX_HEF_ARCH.format(arch=arch)))
                elif ha:
                    out.append(Finding(f"hailo.hef:{model}/{name}", OK, f"HEF {ha} on {arch}"))
                else:
                    out.append(Finding(f"hailo.hef:{model}/{name}", WARN, "HEF architecture not in the manifest",
                                       "rebuild with fleet models build (it records target/hw_arch)"))
    if is_pi5:
        out += check_hailo_pcie(stack)
    return out


def check_hailo_pcie(stack: dict) -> list[Finding]:
    """The Hailo device's PCIe link on a Pi 5: warn below Gen 3 (§4.1); [] without a real Hailo stack."""
    h = stack.get("hailo")
    if h is None or not h.get("applicable", True):
        return []
    errs = stack.get("errors") or {}
    out = []
    p = h.get("pcie")
    gen = (p or {}).get("current_gen")
    if not p or gen is None:
        out.append(Finding("hailo.pcie", WARN, f"PCIe link of the Hailo device unknown: "
                           f"{errs.get('hailo.pcie', 'no current_link_speed')}",
                           "check lspci -vv shows the Hailo device (1e60:...)"))
    elif gen < 3:
        out.append(Finding("hailo.pcie", WARN, f"PCIe Gen {gen} ({p.get('current_speed')}) at {p.get('address')}",
                           FIX_PCIE))
    else:
        out.append(Finding("hailo.pcie", OK, f"PCIe Gen {gen} x{p.get('width', '?')} at {p.get('address')}"))
    return out


def _npu_files(stack: dict, fmt: str):
    for model, m in sorted((stack.get("models") or {}).items()):
        files = [(n, f) for n, f in sorted((m.get("files") or {}).items()) if f.get("format") == fmt]
        if files:
            yield model, files


def check_rknn(stack: dict) -> list[Finding]:
    """librknnrt present and >= each .rknn's toolkit version; rknpu driver present."""
    r = stack.get("rknn")
    if r is None:
        return []
    if not r.get("applicable", True):
        return [Finding("rknn", NA, f"not applicable (emulated): {r.get('reason', '')}".strip())]
    errs = stack.get("errors") or {}
    out = []
    rt = _v(r.get("runtime"))
    if rt:
        out.append(Finding("rknn.runtime", OK, f"librknnrt {rt} ({(r.get('runtime') or {}).get('path')})"))
    else:
        out.append(Finding("rknn.runtime", FAIL, f"librknnrt version unknown: {errs.get('rknn.runtime', '')}",
                           FIX_RKNNRT.format(want="matching your models")))
    drv = _v(r.get("driver"))
    if drv:
        out.append(Finding("rknn.driver", OK, f"rknpu driver {drv} ({(r.get('driver') or {}).get('source')})"))
    else:
        out.append(Finding("rknn.driver", FAIL, f"rknpu driver not found: {errs.get('rknn.driver', '')}",
                           "boot a Rockchip vendor (BSP) kernel with the rknpu driver; check "
                           "dmesg | grep 'Initialized rknpu' (docs/reference/device_apis.md §4.2)"))
    lite = _v(r.get("toolkit_lite2"))
    if lite and rt and version_tuple(lite)[:2] != version_tuple(rt)[:2]:
        out.append(Finding("rknn.lite2", WARN, f"rknn-toolkit-lite2 {lite} vs librknnrt {rt}",
                           "install rknn-toolkit-lite2 from the same release as librknnrt.so"))
    for model, files in _npu_files(stack, "rknn"):
        for name, f in files:
            tk = f.get("toolkit")
            key = f"rknn.model:{model}/{name}"
            if not tk:
                out.append(Finding(key, WARN, "toolkit version that built it is not in the manifest",
                                   "rebuild with fleet models build (it records exporter.rknn-toolkit2)"))
            elif rt and version_tuple(rt) >= version_tuple(tk):
                out.append(Finding(key, OK, f"built by toolkit {tk}, librknnrt {rt}"))
            else:
                out.append(Finding(key, FAIL, f"built by rknn-toolkit2 {tk}, librknnrt is {rt or 'unknown'} "
                                   "(init_runtime fails: \"Invalid RKNN model version\")",
                                   FIX_RKNNRT.format(want=tk)))
    return out


def check_models(stack: dict) -> list[Finding]:
    """Every deployed model's manifest readable and its files present."""
    out = []
    for model, m in sorted((stack.get("models") or {}).items()):
        if m.get("error"):
            out.append(Finding(f"models:{model}", FAIL, m["error"], FIX_DEPLOY))
            continue
        files = m.get("files") or {}
        missing = [n for n, f in files.items() if not f.get("present", True)]
        if missing:
            out.append(Finding(f"models:{model}", FAIL, f"missing: {', '.join(sorted(missing))}", FIX_DEPLOY))
        else:
            out.append(Finding(f"models:{model}", OK, f"{len(files)} files, sha256 recorded"))
    return out


def check_info(info: dict, expected: dict | None = None, controller_agent: str | None = None) -> list[Finding]:
    """All checks on an agent ``info`` reply.

    Args:
        info: the agent's info (with ``stack``).
        expected: what the inventory says: ``{"accelerator", "emulated", "board", "arch",
            "cpu_emulated"}`` (arch/cpu_emulated "" = not said).
        controller_agent: the controller's device_agent version (agent drift is a warn).

    Returns:
        Findings; an agent too old to report ``stack`` gives one ``warn`` (fix: fleet deploy).
    """
    expected = expected or {}
    stack = info.get("stack")
    if not isinstance(stack, dict):
        return [Finding("stack", WARN, "the agent reports no stack fingerprint (older agent)", FIX_DEPLOY)]
    acc = expected.get("accelerator") or stack.get("accelerator")
    fam = registry().find(acc)
    out = check_generic(stack, expected, controller_agent)
    out += check_cpu(info, stack, expected)
    if fam is None:  # an accelerator no family here declares: every NPU check that finds its section
        out += check_hailo(stack, None, "Raspberry Pi 5" in (stack.get("board_model") or ""))
        out += check_rknn(stack)
    else:
        checks = family_checks()
        for name in fam.doctor_checks:
            fn = checks.get(name)
            if fn is None:
                out.append(Finding(f"doctor.{name}", WARN, f"board family {fam.name} names doctor check {name!r}, "
                                   "which no installed package defines",
                                   f"install the package that adds it (entry point group {CHECKS_GROUP}), "
                                   f"or use one of {', '.join(checks)}"))
                continue
            out += fn(stack, fam, info)
    out += check_models(stack)
    return out


CHECKS_GROUP = "fleet.doctor_checks"

#: built-in per-family checks by name (BoardFamily.doctor_checks): fn(stack, family, info) -> findings
FAMILY_CHECKS: dict[str, Callable[[dict, BoardFamily, dict], list[Finding]]] = {
    "hailo": lambda stack, fam, info: check_hailo(stack, fam.accelerator, False, fam),
    "hailo.pcie": lambda stack, fam, info: check_hailo_pcie(stack),
    "rknn": lambda stack, fam, info: check_rknn(stack),
}


def family_checks() -> dict[str, Callable]:
    """FAMILY_CHECKS plus the checks of the entry-point group ``fleet.doctor_checks``.

    Raises:
        FleetError: a plug-in check fails to load, is not callable, or reuses a built-in name.
    """
    out = dict(FAMILY_CHECKS)
    for ep in metadata.entry_points(group=CHECKS_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        if ep.name in FAMILY_CHECKS:
            raise FleetError(f"doctor-check plug-in {dist} ({ep.name} = {ep.value}) clashes with the built-in "
                             f"check {ep.name!r}", "rename the entry point in the plug-in's package")
        try:
            fn = ep.load()
        except Exception as e:  # noqa: BLE001 - a lab package's import error, reported with its fix
            raise FleetError(f"doctor-check plug-in {dist} ({ep.name} = {ep.value}) failed to load: "
                             f"{type(e).__name__}: {e}", f"fix or reinstall {dist}, or uninstall it") from None
        if not callable(fn):
            raise FleetError(f"doctor-check plug-in {dist} ({ep.name} = {ep.value}) is not callable",
                             "point the entry point at fn(stack, family, info) -> list[Finding]")
        out[ep.name] = fn
    return out


def failures(findings: list[Finding]) -> list[Finding]:
    """The ``fail`` findings."""
    return [f for f in findings if f.status == FAIL]


def expected_of(board) -> dict:
    """What the inventory says about a ``fleet.inventory.Board``, for ``check_info``."""
    return {"accelerator": board.accelerator, "emulated": board.emulated, "board": board.board,
            "arch": getattr(board, "arch", ""), "cpu_emulated": getattr(board, "cpu_emulated", "")}


def summary_line(findings: list[Finding]) -> str:
    """``hailo.versions: versions differ ...; hailo.arch: ...`` for the failing findings."""
    return "; ".join(f"{f.check}: {f.detail} (fix: {f.fix})" for f in failures(findings))
