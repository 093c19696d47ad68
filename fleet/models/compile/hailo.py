"""Hailo Dataflow Compiler adapter: fp32 ONNX + calibration set -> ``.hef`` (hailo8l / hailo8).

Call sequence (docs/reference/device_apis.md §2.1; hailocs/hailo-whisper
conversion/convert_whisper_encoder.py; Hailo-Application-Code-Examples):
``ClientRunner(hw_arch=…)`` -> ``translate_onnx_model(onnx, net_name, start_node_names,
end_node_names, net_input_shapes)`` -> ``optimize(calib_data)`` -> ``compile()`` (bytes of the
HEF). The DFC (Python package ``hailo_sdk_client``) is not on PyPI: it comes from the Hailo
Developer Zone, DFC v3.x for Hailo-8/8L (docs/reference/device_apis.md §0). It is imported lazily; without it
``available()`` says why and what to install.

Calibration layout: the DFC parses ONNX as NCHW and takes calibration data NHWC, (N, H, W, C)
for one input or ``{"<net_name>/input_layer<i>": array}`` for several (1-based, in ONNX input
order, as hailo-whisper's decoder conversion feeds ``…/input_layer1``/``…/input_layer2``). A
calibration array is [N, *input_shape] (fleet.models.calibration): the per-sample batch axis is
dropped and 4-D [C, H, W] samples are transposed to [H, W, C].

The HEF must be compiled for the board's architecture: a hailo8 HEF on a Hailo-8L fails with
``HEF format is not compatible with device`` (HAILO_INVALID_HEF, docs/reference/device_apis.md §5.3).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models.compile import CompileResult



def hw_archs() -> tuple[str, ...]:
    """The DFC ``hw_arch`` names of the board families built with the Hailo DFC (fleet.families)."""
    from fleet.families import registry

    return tuple(f.arch for f in registry().with_toolchain("hailo-dfc"))


def __getattr__(name: str):
    if name == "HW_ARCHS":  # older callers: read from the board families when asked
        return hw_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DISTRIBUTION = "hailo-dataflow-compiler"  # the wheel's name: hailo_dataflow_compiler-3.x
INSTALL_HINT = ("the Hailo Dataflow Compiler (Python package hailo_sdk_client, DFC v3.x for "
                "Hailo-8/8L): it is not on PyPI — download the wheel from the Hailo Developer "
                "Zone (hailo.ai/developer-zone, free account) and pip install it into this venv")
QUANTIZATION = "int8-hailo-dfc"  # DFC optimize(): 8-bit weights/activations, default model script


def available() -> tuple[bool, str]:
    """(True, DFC version) if ``hailo_sdk_client`` imports, else (False, why + what to install)."""
    try:
        import hailo_sdk_client  # noqa: F401
    except ImportError as e:
        return False, f"hailo_sdk_client is not importable ({e}); install {INSTALL_HINT}"
    except Exception as e:  # noqa: BLE001  (the DFC imports TensorFlow; a broken install raises anything)
        return False, f"hailo_sdk_client failed to import: {type(e).__name__}: {e}"
    return True, dfc_version()


def dfc_version() -> str:
    """The DFC's version: package metadata, else ``hailo_sdk_client.__version__``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        import hailo_sdk_client

        return str(getattr(hailo_sdk_client, "__version__", "unknown"))


def calib_for_dfc(arrays: dict[str, np.ndarray], inputs: list[dict], net_name: str):
    """Calibration data in the DFC's layout (module docstring).

    Args:
        arrays: input name -> [N, *input_shape] (the calibration .npz).
        inputs: the graph's inputs (manifest dicts, batch 1).
        net_name: the network name given to translate_onnx_model.

    Returns:
        one ndarray (single input) or {"<net_name>/input_layer<i>": ndarray}.

    Raises:
        FleetError: an input has no calibration array, or a shape does not match.
    """
    out = {}
    for i, spec in enumerate(inputs, 1):
        name, shape = spec["name"], list(spec["shape"])
        if name not in arrays:
            raise FleetError(f"calibration set has no array for input {name!r} "
                             f"(has {sorted(arrays)})", "rebuild the calibration set",
                             exit_code=3)
        a = arrays[name]
        if list(a.shape[1:]) != shape:
            raise FleetError(f"calibration array {name!r} has shape {list(a.shape)}, expected "
                             f"[N, {', '.join(map(str, shape))}]", "rebuild the calibration set",
                             exit_code=3)
        a = a[:, 0]  # drop the per-sample batch axis of 1
        if a.ndim == 4:  # [N, C, H, W] -> [N, H, W, C]
            a = a.transpose(0, 2, 3, 1)
        out[f"{net_name}/input_layer{i}"] = np.ascontiguousarray(a)
    return next(iter(out.values())) if len(out) == 1 else out


def compile_hef(graph: Path, inputs: list[dict], outputs: list[dict],
                arrays: dict[str, np.ndarray], hw_arch: str, out_path: Path,
                net_name: str | None = None, model_script: str | None = None) -> CompileResult:
    """Translate, optimize (quantize with the calibration set) and compile ``graph`` to a HEF.

    Args:
        graph: fp32 ONNX with static shapes (fleet.models.npu_graphs).
        inputs, outputs: its I/O (manifest dicts); names become start/end node names and
            ``net_input_shapes``.
        arrays: calibration arrays, input name -> [N, *input_shape].
        hw_arch: ``hailo8l`` or ``hailo8``.
        out_path: the .hef to write; written to a temp file in the same folder, then renamed,
            so a failure leaves nothing.
        net_name: network name inside the HEF (default: the graph's stem).
        model_script: optional .alls text (e.g. ``model_optimization_flavor(...)``).

    Returns:
        CompileResult(path, "hef", {"name": "hailo_dfc", "version"}, quantization, metrics with
        seconds per stage).

    Raises:
        FleetError: unknown hw_arch (exit 2); DFC missing (exit 3, with INSTALL_HINT); a DFC
            stage failed (exit 3, naming the stage and the DFC's message).
    """
    if hw_arch not in hw_archs():
        raise FleetError(f"unknown Hailo hw_arch {hw_arch!r}", f"use one of {', '.join(hw_archs())}")
    ok, why = available()
    if not ok:
        raise FleetError(f"cannot compile {Path(graph).name} for {hw_arch}: {why}",
                         f"install {INSTALL_HINT}", exit_code=3)
    from hailo_sdk_client import ClientRunner

    version = dfc_version()
    net_name = net_name or Path(graph).stem
    calib = calib_for_dfc(arrays, inputs, net_name)
    seconds: dict[str, float] = {}

    def stage(name: str, fn, *args, **kw):
        t0 = time.perf_counter()
        try:
            r = fn(*args, **kw)
        except Exception as e:  # the DFC raises its own exception classes per stage
            raise FleetError(f"Hailo DFC {version} {name} of {Path(graph).name} for {hw_arch} "
                             f"failed: {type(e).__name__}: {e}",
                             "check the graph against the DFC's supported layers (Hailo "
                             "Dataflow Compiler user guide); see docs/reference/device_apis.md §2",
                             exit_code=3) from e
        seconds[name] = round(time.perf_counter() - t0, 3)
        return r

    runner = stage("ClientRunner", ClientRunner, hw_arch=hw_arch)
    stage("translate_onnx_model", runner.translate_onnx_model, str(graph), net_name,
          start_node_names=[i["name"] for i in inputs],
          end_node_names=[o["name"] for o in outputs],
          net_input_shapes={i["name"]: list(i["shape"]) for i in inputs})
    if model_script:
        stage("load_model_script", runner.load_model_script, model_script)
    stage("optimize", runner.optimize, calib)
    hef = stage("compile", runner.compile)
    if not isinstance(hef, (bytes, bytearray)) or not hef:
        raise FleetError(f"Hailo DFC {version} compile() of {Path(graph).name} returned "
                         f"{type(hef).__name__}, not the HEF bytes", "check the DFC version "
                         "(v3.x for Hailo-8/8L)", exit_code=3)
    out_path = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(hef)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return CompileResult(path=out_path, format="hef",
                         toolchain={"name": "hailo_dfc", "version": version},
                         quantization=QUANTIZATION,
                         metrics={"seconds": seconds, "hw_arch": hw_arch, "bytes": len(hef)})
