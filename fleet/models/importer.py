"""``fleet models import FILE --name NAME --target TARGET [--reference REF.onnx] [--inputs SPEC]``.

A lab's own compiled model (.hef from the Hailo DFC, .rknn from rknn-toolkit2, or an .onnx) becomes
a manifest entry like the ones ``fleet models build`` writes (docs/contracts.md §3, "Imported
models"), so ``fleet deploy`` ships it to the boards that can run it and the ``model.bench``
pipeline benchmarks it.

What is read from the file, and by what:

- ``.onnx`` (target ``cpu``, or any NPU target: the model an emulated board of that target runs):
  the ``onnx`` package gives input/output names, shapes (a dynamic axis is its name, a string),
  dtypes; the quantization comes from the operators (QuantizeLinear/DequantizeLinear pairs:
  ``int8-static-qdq``; DynamicQuantizeLinear, MatMulInteger, ConvInteger: ``int8-dynamic``;
  QLinear*: ``int8-qoperator``; else ``none``).
- ``.hef`` (hailo8l / hailo8 / hailo10h): when ``hailo_platform`` imports, ``HEF(path)``
  ``.get_input_vstream_infos()`` / ``.get_output_vstream_infos()`` (each info: ``name``, ``shape``,
  ``format.type``, ``quant_info.qp_scale/qp_zp``; HailoRT Python API,
  https://hailo.ai/developer-zone/documentation/hailort-v4-23-0/ and
  ``hailo-ai/hailort:hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py``).
  The architecture the HEF was compiled for comes from the binding's ``get_hef_device_arch`` when
  it has one (the C++ ``Hef::get_hef_device_arch``, HailoRT User Guide), else from
  ``hailortcli parse-hef FILE`` ("Architecture HEF was compiled for: HAILO8L"), both part of
  HailoRT. Without HailoRT the architecture is not checked: the HEF container format is not
  publicly documented (only HailoRT's own source parses it), so fleet does not parse it and the
  entry says ``arch_verified: false`` with the reason; I/O then come from ``--inputs``/``--outputs``.
- ``.rknn`` (rk3588): rknn-toolkit-lite2's Python API (``rknnlite.api.RKNNLite``: load_rknn,
  init_runtime, inference, release; https://github.com/airockchip/rknn-toolkit2/tree/master/rknn-toolkit-lite2)
  documents no tensor query (the C API's ``rknn_query(RKNN_QUERY_INPUT_ATTR)`` is not exposed), so
  when rknnlite imports, ``load_rknn(path) == 0`` checks the file and I/O come from ``--inputs``;
  without it the file is not checked and the entry says so.

The architecture rule is ``fleet doctor``'s (fleet/doctor/checks.py, HailoRT
``DeviceBase::is_hef_compatible``): a HEF compiled for hailo8l may be imported for target hailo8
(HailoRT runs it there, at lower performance, with a warning); any other difference is refused.

``--inputs`` / ``--outputs`` SPEC: tensors separated by ``;``, each ``NAME:DTYPE[D0,D1,...]`` with an
optional value range ``=LO..HI`` (inputs only; what ``model.bench`` draws random inputs from), e.g.
``input_ids:int64[1,256]=0..30521;attention_mask:int64[1,256]=1..1``. DTYPE is a numpy dtype name
(float32, float16, uint8, int8, int32, int64, bool). With an ONNX the names must be the file's; the
spec then fixes dynamic axes and sets ranges.

Guarantees: the source file is only read (copied to ``OUT/<target>/<name>/``, never changed);
bad input is a FleetError naming the file and the fix (exit 2) and leaves ``OUT`` untouched; files
go to a temp folder inside ``OUT`` and are swapped in, then manifest.json is rewritten atomically.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fleet.errors import FleetError
from fleet.families import registry
from fleet.models import manifest as mf

FORMATS = {".onnx": "onnx", ".hef": "hef", ".rknn": "rknn"}


def targets(fmt: str | None = None) -> tuple[str, ...]:
    """Import targets, from the board families (fleet.families): ``cpu`` and every NPU build
    target; with ``fmt`` (``hef``, ``rknn``) the targets taking that compiled format (ONNX goes to
    any target: cpu, or an NPU's emulation)."""
    reg = registry()
    return reg.targets_of_format(fmt) if fmt else ("cpu", *reg.npu_targets())


def __getattr__(name: str):
    # HEF_TARGETS / RKNN_TARGETS / TARGETS / COMPATIBLE, read from the board families when asked
    if name in ("HEF_TARGETS", "RKNN_TARGETS", "TARGETS"):
        return targets({"HEF_TARGETS": "hef", "RKNN_TARGETS": "rknn"}.get(name))
    if name == "COMPATIBLE":  # (HEF arch, target) pairs that run although they differ
        return registry().compatible()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DTYPES = ("float32", "float16", "float64", "uint8", "int8", "uint16", "int16", "int32", "int64", "bool")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SPEC_HELP = ("NAME:DTYPE[D0,D1,...][=LO..HI] separated by ';', e.g. "
             "'input_ids:int64[1,256]=0..30521;attention_mask:int64[1,256]=1..1'")
MODEL_ROLE, REFERENCE_ROLE, DATA_ROLE = "model", "reference", "inputs"
TOOLCHAIN = {"hef": "hailo_dfc", "rknn": "rknn-toolkit2", "onnx": "onnx"}


@dataclass
class FileInfo:
    """What a reader learned about one file.

    Attributes:
        inputs, outputs: ``[{name, shape, dtype}]`` (shape: ints, or a str for a dynamic axis);
            inputs may carry ``range`` [lo, hi] and HEF streams ``quant`` {scale, zero_point}.
        quantization: e.g. ``none``, ``int8-static-qdq``, ``uint8-hailo`` or ``unknown``.
        reader: {name, available, reason}: the library that read the file, or why none could.
        arch: the architecture the file was compiled for, when read (hef), else None.
        notes: what the user should know (printed by the CLI, kept in the entry).
    """

    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    quantization: str = "unknown"
    reader: dict = field(default_factory=dict)
    arch: str | None = None
    arch_source: str | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- --inputs
def parse_spec(spec: str, what: str = "--inputs", ranges: bool = True) -> list[dict]:
    """Parse a tensor SPEC (module docstring) into ``[{name, shape, dtype[, range]}]``.

    Raises:
        FleetError: an item that does not match the format, an unknown dtype, a repeated name,
            or a range with LO > HI (the message quotes the item).
    """
    out: list[dict] = []
    item_re = re.compile(r"^\s*([^:\[\]=;\s]+)\s*:\s*([a-z0-9]+)\s*\[([^\]]*)\]\s*(?:=\s*(\S+?)\s*\.\.\s*(\S+))?\s*$")
    for raw in [s for s in str(spec).split(";") if s.strip()]:
        m = item_re.match(raw)
        if not m:
            raise FleetError(f"{what} item {raw.strip()!r} is not NAME:DTYPE[D0,D1,...][=LO..HI]",
                             f"write {what} as {SPEC_HELP}")
        name, dtype, dims, lo, hi = m.groups()
        if dtype not in DTYPES:
            raise FleetError(f"{what} item {raw.strip()!r}: unknown dtype {dtype!r}",
                             f"use one of: {', '.join(DTYPES)}")
        shape: list = []
        for d in [d.strip() for d in dims.split(",") if d.strip()]:
            shape.append(int(d) if d.isdigit() else d)
        t: dict = {"name": name, "shape": shape, "dtype": dtype}
        if lo is not None:
            if not ranges:
                raise FleetError(f"{what} item {raw.strip()!r}: a range only applies to inputs",
                                 f"drop '={lo}..{hi}'")
            try:
                lo_v, hi_v = float(lo), float(hi)
            except ValueError:
                raise FleetError(f"{what} item {raw.strip()!r}: range {lo}..{hi} is not two numbers",
                                 "write the range as =LO..HI, e.g. =0..255") from None
            if lo_v > hi_v:
                raise FleetError(f"{what} item {raw.strip()!r}: range {lo}..{hi} has LO > HI",
                                 "write the smaller bound first")
            t["range"] = [int(lo_v) if lo_v.is_integer() else lo_v, int(hi_v) if hi_v.is_integer() else hi_v]
        if any(x["name"] == name for x in out):
            raise FleetError(f"{what} names {name!r} twice", "give each tensor once")
        out.append(t)
    if not out:
        raise FleetError(f"{what} is empty", f"write {what} as {SPEC_HELP}")
    return out


# ------------------------------------------------------------------------------------ readers
def _onnx_tensors(values) -> list[dict]:
    from onnx import helper

    out = []
    for v in values:
        tt = v.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            shape.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
        try:
            dtype = str(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:
            dtype = "unknown"
        out.append({"name": v.name, "shape": shape, "dtype": dtype})
    return out


def onnx_quantization(ops: set[str]) -> str:
    """The quantization an ONNX graph's operator types show (module docstring)."""
    if {"QuantizeLinear", "DequantizeLinear"} <= ops:
        return "int8-static-qdq"
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
        return "int8-dynamic"
    if any(o.startswith("QLinear") for o in ops):
        return "int8-qoperator"
    return "none"


def read_onnx(path: Path) -> FileInfo:
    """I/O and quantization of an ONNX file (the ``onnx`` package, no weights loaded into a session).

    Raises:
        FleetError: not an ONNX model (the protobuf does not parse, or no graph inputs).
    """
    try:
        import onnx
    except ImportError as e:
        raise FleetError(f"cannot read {path}: the onnx package is not importable ({e})",
                         "pip install onnx==1.23.2 (in fleet's controller extras: pip install -e '.[controller]')") from None
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise FleetError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})",
                         "pass the .onnx file exported by torch.onnx / your toolchain") from None
    from onnx.external_data_helper import uses_external_data

    external = sorted({e.value for t in m.graph.initializer if uses_external_data(t)
                       for e in t.external_data if e.key == "location"})
    if external:
        raise FleetError(f"{path} keeps its weights in external data files ({', '.join(external)}), which an "
                         "import would not copy",
                         "save it as one file first: onnx.save(onnx.load(PATH), OUT, save_as_external_data=False) "
                         "(ONNX files up to 2 GB)")
    inits = {i.name for i in m.graph.initializer}
    inputs = _onnx_tensors([v for v in m.graph.input if v.name not in inits])
    if not inputs or not m.graph.output:
        raise FleetError(f"{path} has no graph inputs or outputs", "export the model with its inputs and outputs")
    ops = {n.op_type for n in m.graph.node}
    for f in m.functions:
        ops |= {n.op_type for n in f.node}
    return FileInfo(inputs=inputs, outputs=_onnx_tensors(m.graph.output), quantization=onnx_quantization(ops),
                    reader={"name": "onnx", "available": True, "version": getattr(onnx, "__version__", "?")})


def _hailo():
    return importlib.import_module("hailo_platform")


def _hef_dtype(fmt) -> str:
    t = str(getattr(fmt, "type", fmt)).rsplit(".", 1)[-1].lower()
    return {"uint8": "uint8", "uint16": "uint16", "float32": "float32", "auto": "uint8"}.get(t, t)


def _arch_name(v) -> str | None:
    s = str(v).rsplit(".", 1)[-1].strip().lower().replace("_", "").replace("-", "")
    for arch in ("hailo8l", "hailo8", "hailo10h", "hailo15h", "hailo15l"):
        if s == arch or s == arch.replace("hailo", "hailo_"):
            return arch
    return s or None


def parse_hef_cli(path: Path, timeout_s: float = 30.0) -> str | None:
    """``hailortcli parse-hef PATH`` (HailoRT's CLI): the arch of its line "Architecture HEF was
    compiled for: HAILO8L", or None when the CLI is missing or prints no such line."""
    exe = shutil.which("hailortcli")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "parse-hef", str(path)], capture_output=True, text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Architecture HEF was compiled for:\s*(\S+)", out)
    return _arch_name(m.group(1)) if m else None


def read_hef(path: Path, parse_hef=parse_hef_cli) -> FileInfo | None:
    """I/O, quantization and architecture of a HEF through HailoRT; None when ``hailo_platform``
    cannot be imported (the caller then needs --inputs).

    Args:
        parse_hef: ``(path) -> arch | None``, used when the binding has no arch query
            (default ``hailortcli parse-hef``; injectable for tests).

    Raises:
        FleetError: HailoRT refuses the file (not a HEF, or from a newer DFC).
    """
    try:
        hp = _hailo()
    except Exception as e:  # ImportError, or a binding/library mismatch
        return FileInfo(reader={"name": "hailo_platform", "available": False,
                                "reason": f"hailo_platform not importable ({type(e).__name__}: {e})"})
    try:
        hef = hp.HEF(str(path))
        ins, outs = hef.get_input_vstream_infos(), hef.get_output_vstream_infos()
    except Exception as e:
        raise FleetError(f"{path}: HailoRT cannot read this HEF ({type(e).__name__}: {e})",
                         "pass a .hef compiled by the Hailo Dataflow Compiler for this HailoRT version "
                         "(hailortcli parse-hef FILE shows what HailoRT sees)") from None

    def tensors(infos) -> list[dict]:
        out = []
        for i in infos:
            t = {"name": str(i.name), "shape": [int(d) for d in i.shape], "dtype": _hef_dtype(i.format)}
            q = getattr(i, "quant_info", None)
            if q is not None and hasattr(q, "qp_scale"):
                t["quant"] = {"scale": float(q.qp_scale), "zero_point": float(q.qp_zp)}
            out.append(t)
        return out

    info = FileInfo(inputs=tensors(ins), outputs=tensors(outs),
                    reader={"name": "hailo_platform", "available": True})
    dtypes = {t["dtype"] for t in info.inputs + info.outputs}
    info.quantization = "hailo-" + "/".join(sorted(dtypes)) if dtypes else "unknown"
    fn = getattr(hef, "get_hef_device_arch", None)
    if callable(fn):
        try:
            info.arch, info.arch_source = _arch_name(fn()), "HEF.get_hef_device_arch()"
        except Exception:
            info.arch = None
    if info.arch is None:
        info.arch = parse_hef(path)
        info.arch_source = "hailortcli parse-hef" if info.arch else None
    if info.arch is None:
        info.notes.append("HailoRT read the HEF's I/O but not its architecture (no get_hef_device_arch in this "
                          "binding, no hailortcli): the target is taken as given")
    return info


def _rknnlite():
    return importlib.import_module("rknnlite.api")


def read_rknn(path: Path) -> FileInfo:
    """Check a .rknn with rknn-toolkit-lite2 when it imports (``RKNNLite().load_rknn(path) == 0``).
    Its Python API documents no tensor query, so I/O always come from --inputs.

    Raises:
        FleetError: rknnlite imports and refuses the file.
    """
    try:
        cls = _rknnlite().RKNNLite
    except Exception as e:
        return FileInfo(reader={"name": "rknnlite", "available": False,
                                "reason": f"rknnlite not importable ({type(e).__name__}: {e})"})
    r = cls(verbose=False)
    try:
        ret = r.load_rknn(str(path))
    finally:
        try:
            r.release()
        except Exception:
            pass
    if ret != 0:
        raise FleetError(f"{path}: RKNNLite.load_rknn returned {ret} (not a valid .rknn model)",
                         "pass the .rknn exported by rknn-toolkit2 export_rknn() for target_platform rk3588")
    return FileInfo(reader={"name": "rknnlite", "available": True,
                            "reason": "rknn-toolkit-lite2's Python API exposes no tensor query: I/O from --inputs"})


# ------------------------------------------------------------------------------------- import
def _merge_spec(path: Path, read: list[dict], spec: list[dict] | None, what: str) -> list[dict]:
    """The file's tensors with the spec's shapes (for dynamic axes) and ranges; the spec alone when
    the file could not be read.

    Raises:
        FleetError: the spec names tensors the file does not have, or contradicts a dtype or a
            fixed axis.
    """
    if not read:
        return [dict(t) for t in (spec or [])]
    if not spec:
        return [dict(t) for t in read]
    by = {t["name"]: t for t in read}
    unknown = [s["name"] for s in spec if s["name"] not in by]
    if unknown:
        raise FleetError(f"{what} names {unknown} but {path.name} has {list(by)}",
                         f"use the file's tensor names in {what}")
    out = []
    for t in read:
        s = next((s for s in spec if s["name"] == t["name"]), None)
        t = dict(t)
        if s is not None:
            if s["dtype"] != t["dtype"]:
                raise FleetError(f"{what}: {t['name']} is {t['dtype']} in {path.name}, not {s['dtype']}",
                                 f"write {t['name']}:{t['dtype']}[...] in {what}")
            if len(s["shape"]) != len(t["shape"]) or any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(t["shape"], s["shape"])):
                raise FleetError(f"{what}: {t['name']} has shape {t['shape']} in {path.name}, not {s['shape']}",
                                 "give the file's shape (a number may replace a dynamic axis only)")
            t["shape"] = [b if isinstance(b, int) else a for a, b in zip(t["shape"], s["shape"])]
            if "range" in s:
                t["range"] = s["range"]
        out.append(t)
    return out


def _check_file(path: Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FleetError(f"{what} {p} does not exist or is not a file", f"pass the path of the {what}")
    if p.stat().st_size == 0:
        raise FleetError(f"{what} {p} is empty (0 bytes)", "pass the model file itself, not a placeholder")
    return p.resolve()


def check_request(path: Path, name: str, target: str) -> str:
    """The file's format, after checking name, target and that the format goes to that target.

    Raises:
        FleetError: unknown suffix, bad name, unknown target, or a format the target cannot run.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FleetError(f"{path}: unknown model format {path.suffix or '(no suffix)'!r}",
                         "import a .onnx, .hef (Hailo) or .rknn (RK3588) file")
    if not NAME_RE.match(name or ""):
        raise FleetError(f"--name {name!r} is not a model name",
                         "use 1-64 characters: lower-case letters, digits, '.', '_' or '-', e.g. my-yolo")
    from fleet.models.build import KNOWN_MODELS

    if name in KNOWN_MODELS:
        raise FleetError(f"--name {name!r} is a model fleet builds itself (fleet models build {name})",
                         f"import it under another name, e.g. {name}-lab")
    if target not in targets():
        raise FleetError(f"unknown target {target!r}", f"use one of: {', '.join(targets())}")
    if fmt == "hef" and target not in targets("hef"):
        raise FleetError(f"{path} is a HEF, which only a Hailo NPU runs, but --target is {target}",
                         f"use --target {' | '.join(targets('hef'))}, or import the ONNX it was compiled from")
    if fmt == "rknn" and target not in targets("rknn"):
        raise FleetError(f"{path} is an .rknn, which only the RK3588 NPU runs, but --target is {target}",
                         f"use --target {' | '.join(targets('rknn'))}, or import the ONNX it was converted from")
    return fmt


def _check_arch(path: Path, info: FileInfo, target: str) -> None:
    arch = info.arch
    if arch is None or arch == target:
        return
    if (arch, target) in registry().compatible():
        info.notes.append(f"{path.name} is compiled for {arch}; HailoRT runs it on a {target} at lower "
                          "performance (it warns)")
        return
    raise FleetError(f"{path} is a HEF compiled for {arch} ({info.arch_source}), but --target is {target}: "
                     f"HailoRT refuses it on a {target} (\"HEF format is not compatible with device\", "
                     "HAILO_INVALID_HEF)",
                     f"import it with --target {arch}, or recompile it for {target} "
                     f"(Hailo DFC ClientRunner(hw_arch=\"{target}\"))")


def describe_file(path: Path, fmt: str, inputs: list[dict] | None, outputs: list[dict] | None,
                  parse_hef=parse_hef_cli) -> FileInfo:
    """Read ``path`` with its format's reader and merge ``--inputs``/``--outputs``.

    Raises:
        FleetError: the reader refuses the file, the spec contradicts it, or no I/O is known
            (reader absent and no --inputs).
    """
    if fmt == "onnx":
        info = read_onnx(path)
    elif fmt == "hef":
        info = read_hef(path, parse_hef)
    else:
        info = read_rknn(path)
    if not info.reader.get("available"):
        info.notes.append(f"{info.reader['reason']}: I/O from --inputs/--outputs")
        if fmt == "hef":
            info.notes.append("architecture not verified: the HEF format is not publicly documented (only "
                              "HailoRT parses it), so without HailoRT the target is taken as given")
    info.inputs = _merge_spec(path, info.inputs, inputs, "--inputs")
    info.outputs = _merge_spec(path, info.outputs, outputs, "--outputs")
    if not info.inputs:
        why = info.reader.get("reason") or "the file's reader gives no tensor names"
        raise FleetError(f"{path}: input names, shapes and dtypes are unknown ({why})",
                         f"pass --inputs {SPEC_HELP!s}")
    return info


def check_data(path: Path, inputs: list[dict]) -> int:
    """The number of samples in an input set for a model with ``inputs``: a .npz holding one array
    per input name, each [*shape] (one sample) or [N, *shape], all with the same N; a .npy (one
    input only). Fixed axes must match; a dynamic axis (a name) takes any size.

    Raises:
        FleetError: another suffix, unreadable file, missing input names, wrong rank or axis, or
            differing sample counts (the message names the file and the input).
    """
    import numpy as np

    names = [t["name"] for t in inputs]
    fix = "save it with numpy.savez(FILE, **{input_name: array}) (arrays [*shape] or [N, *shape])"
    if path.suffix.lower() not in (".npz", ".npy"):
        raise FleetError(f"--data {path} is not a .npz or .npy file", fix)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k].shape for k in z.files}
        else:
            if len(names) != 1:
                raise FleetError(f"--data {path} is one array but the model has inputs {names}", fix)
            arrays = {names[0]: np.load(path, allow_pickle=False, mmap_mode="r").shape}
    except FleetError:
        raise
    except Exception as e:
        raise FleetError(f"--data {path} is not readable by numpy ({type(e).__name__}: {e})", fix) from None
    missing = [n for n in names if n not in arrays]
    if missing:
        raise FleetError(f"--data {path} lacks input(s) {missing} (it has {sorted(arrays)})", fix)
    counts = set()
    for t in inputs:
        got, want = list(arrays[t["name"]]), list(t["shape"])
        if len(got) == len(want) + 1:
            counts.add(got[0])
            got = got[1:]
        elif len(got) == len(want):
            counts.add(1)
        else:
            raise FleetError(f"--data {path}: {t['name']} has shape {got}, the input is {want}", fix)
        if any(isinstance(w, int) and g != w for g, w in zip(got, want)):
            raise FleetError(f"--data {path}: {t['name']} has shape {got}, the input is {want}", fix)
    if len(counts) != 1 or 0 in counts:
        raise FleetError(f"--data {path}: the inputs hold different or zero sample counts {sorted(counts)}",
                         "save the same number N >= 1 of samples for every input")
    return counts.pop()


def _variant(fmt: str, quantization: str) -> str:
    if fmt in ("hef", "rknn"):
        return "npu"
    return "int8" if quantization.startswith("int8") else "fp32"


def import_model(file: Path, name: str, target: str, out: Path, *, reference: Path | None = None,
                 inputs: str | None = None, outputs: str | None = None, data: Path | None = None,
                 force: bool = False, parse_hef=parse_hef_cli) -> dict:
    """Import one model file (module docstring) into the artifacts root ``out``.

    Args:
        file: the .onnx / .hef / .rknn to import (read only).
        name: the model name (folder under ``OUT/<target>/`` and ``models/`` on a board).
        target: cpu, hailo8l, hailo8, hailo10h or rk3588.
        out: the artifacts root holding manifest.json.
        reference: an ONNX (usually the float model the file was compiled from) for parity; it
            must have as many inputs and outputs as the model.
        inputs, outputs: tensor SPECs (module docstring).
        data: an input set shipped with the model (role ``inputs``; model.bench's input
            ``deployed``): a .npz with one array per input name, each [*shape] or [N, *shape], or a
            .npy for a single-input model (``check_data``).
        force: replace an earlier import of (name, target) made from another file.
        parse_hef: the HEF arch reader used when the binding has none (tests inject one).

    Returns:
        {"entries": the (name, target) manifest entries, "notes": [...], "cached": bool}.

    Raises:
        FleetError (exit 2): missing/empty/unknown file, bad name/target/spec, a HEF for another
            architecture, a reference that does not fit, the name taken by a built model or by
            another import without --force. Nothing under ``out`` changes then.
    """
    src = _check_file(file, "model file")
    fmt = check_request(src, name, target)
    in_spec = parse_spec(inputs, "--inputs") if inputs else None
    out_spec = parse_spec(outputs, "--outputs", ranges=False) if outputs else None
    out = Path(out).resolve()
    existing = mf.read_manifest(out)  # fail early on a broken manifest
    built = [e for e in existing if e["model"] == name and not e.get("imported")]
    if built:
        raise FleetError(f"{out / mf.MANIFEST} already has built (not imported) entries for {name!r}",
                         "import under another --name")
    info = describe_file(src, fmt, in_spec, out_spec, parse_hef)
    _check_arch(src, info, target)
    ref_info = None
    if reference is not None:
        ref = _check_file(reference, "reference model")
        if ref.suffix.lower() != ".onnx":
            raise FleetError(f"--reference {ref} is not an .onnx file",
                             "pass the float ONNX the model was compiled from")
        ref_info = read_onnx(ref)
        for kind in ("inputs", "outputs"):
            a, b = getattr(info, kind), getattr(ref_info, kind)
            if b and a and len(a) != len(b):
                raise FleetError(f"--reference {ref} has {len(b)} {kind} ({[t['name'] for t in b]}), "
                                 f"{src.name} has {len(a)} ({[t['name'] for t in a]})",
                                 "pass the ONNX this model was compiled from (same inputs and outputs)")
    src_sha = mf.sha256_file(src)
    group = [e for e in existing if (e["model"], e["target"]) == (name, target)]
    mine = next((e for e in group if e["role"] == MODEL_ROLE), None)
    ref_sha = mf.sha256_file(reference) if reference is not None else None
    old_ref = next((e for e in group if e["role"] == REFERENCE_ROLE), None)
    data_path, n_samples = None, 0
    if data is not None:
        data_path = _check_file(data, "input data")
        n_samples = check_data(data_path, info.inputs)
    data_sha = mf.sha256_file(data_path) if data_path is not None else None
    old_data = next((e for e in group if e["role"] == DATA_ROLE), None)
    if mine is not None and mine["source"].get("sha256") == src_sha \
            and (old_ref or {}).get("source", {}).get("sha256") == ref_sha \
            and (old_data or {}).get("source", {}).get("sha256") == data_sha \
            and mine.get("inputs") == info.inputs and mine.get("outputs") == info.outputs:
        try:
            for e in group:
                mf.verify_artifact(e, out)
            return {"entries": group, "notes": ["already imported from the same file(s): nothing to do"],
                    "cached": True}
        except FleetError:
            pass  # a copy went missing or changed: import again
    if mine is not None and mine["source"].get("sha256") != src_sha and not force:
        raise FleetError(f"{name!r} ({target}) is already imported from {mine['source'].get('path')} "
                         f"(sha256 {mine['source'].get('sha256', '')[:12]}), a different file",
                         "pass --force to replace it, or import under another --name")

    rel = f"{target}/{name}"
    model_file = f"{MODEL_ROLE}-{target}{src.suffix.lower()}"
    common = {"model": name, "target": target, "imported": True}
    if target != "cpu":
        common["toolchain"] = {"name": TOOLCHAIN[fmt], "version": "unknown (imported)"}
    entry = {**common, "role": MODEL_ROLE, "variant": _variant(fmt, info.quantization), "format": fmt,
             "path": f"{rel}/{model_file}", "sha256": src_sha, "bytes": src.stat().st_size,
             "inputs": info.inputs, "outputs": info.outputs, "quantization": info.quantization,
             "source": {"path": str(src), "sha256": src_sha, "bytes": src.stat().st_size},
             "reader": info.reader, "io_from": "file" if info.reader.get("available") and fmt != "rknn" else "--inputs"}
    if in_spec and entry["io_from"] == "file":
        entry["io_from"] = "file + --inputs"
    if target != "cpu":
        entry["compiled"] = fmt in ("hef", "rknn")
        if not entry["compiled"]:
            entry["compile_reason"] = (f"imported ONNX: an emulated {target} board runs it on onnxruntime; a real "
                                       f"{target} board needs the compiled .{registry().by_accelerator(target).artifact_format}")
    if fmt == "hef":
        entry["hw_arch"] = info.arch or target
        entry["arch_verified"] = info.arch is not None
        if info.arch is None:
            entry["arch_note"] = next((n for n in info.notes if n.startswith("architecture not verified")
                                       or n.startswith("HailoRT read")), "")
    if fmt == "rknn":
        entry["target_platform"] = target
    if info.notes:
        entry["notes"] = list(info.notes)
    entries = [entry]
    if ref_info is not None:
        ref_path = Path(reference).expanduser().resolve()
        ref_file = f"{REFERENCE_ROLE}-{target}.onnx"
        ref_entry = {**common, "role": REFERENCE_ROLE, "variant": "fp32", "format": "onnx",
                     "path": f"{rel}/{ref_file}", "sha256": ref_sha, "bytes": ref_path.stat().st_size,
                     "inputs": ref_info.inputs, "outputs": ref_info.outputs, "quantization": ref_info.quantization,
                     "source": {"path": str(ref_path), "sha256": ref_sha, "bytes": ref_path.stat().st_size},
                     "reader": ref_info.reader, "io_from": "file"}
        if target != "cpu":
            ref_entry["toolchain"] = {"name": "onnx", "version": "unknown (imported)"}
            ref_entry["compiled"] = False
            ref_entry["compile_reason"] = "the float reference of an imported model (parity), not compiled"
        entry["reference"] = {"path": ref_entry["path"], "sha256": ref_sha}
        entries.append(ref_entry)
    if data_path is not None:
        data_file = f"{DATA_ROLE}-{target}{data_path.suffix.lower()}"
        d = {**common, "role": DATA_ROLE, "variant": "data", "format": data_path.suffix.lower().lstrip("."),
             "path": f"{rel}/{data_file}", "sha256": data_sha, "bytes": data_path.stat().st_size,
             "inputs": info.inputs, "outputs": [], "quantization": "none", "samples": n_samples,
             "source": {"path": str(data_path), "sha256": data_sha, "bytes": data_path.stat().st_size}}
        if target != "cpu":
            d["toolchain"] = {"name": "numpy", "version": "unknown (imported)"}
            d["compiled"] = False
            d["compile_reason"] = "input data for model.bench, not a model"
        entry["data"] = {"path": d["path"], "sha256": data_sha, "samples": n_samples}
        entries.append(d)

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".import-{name}-{target}-", dir=out))
    try:
        shutil.copyfile(src, work / model_file)
        if ref_info is not None:
            shutil.copyfile(ref_path, work / ref_file)
        if data_path is not None:
            shutil.copyfile(data_path, work / data_file)
        for e in entries:  # the copies are what the manifest promises (the source may change meanwhile)
            got = mf.sha256_file(work / Path(e["path"]).name)
            if got != e["sha256"]:
                raise FleetError(f"{e['source']['path']} changed while it was imported (sha256 {got[:12]}, "
                                 f"read {e['sha256'][:12]})", "import it again once it is no longer being written")
        from fleet.models.build import swap_in

        for f in work.iterdir():
            os.chmod(f, 0o644 & ~_umask())
        entries = swap_in(work, out, name, target, entries, existing)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    notes = list(info.notes)
    return {"entries": entries, "notes": notes, "cached": False}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
