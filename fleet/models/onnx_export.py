"""ONNX export (torch dynamo exporter), graph I/O description and dynamic INT8 quantization.

torch, onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from fleet.errors import FleetError

OPSET = 20  # what torch 2.13's dynamo exporter emits by default (docs/reference/models.md §5); pinned here

# onnx TensorProto element type -> dtype name used in manifest.json
_ELEM = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
         11: "float64"}


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and torch.onnx logging (kept on error)."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "onnxscript", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(module, args: tuple, path: Path, input_names: list[str],
                output_names: list[str], dynamic: dict[str, dict[int, tuple[str, int, int]]]
                | None = None, rename_dims: dict[str, str] | None = None) -> None:
    """Export ``module(*args)`` with ``torch.onnx.export(dynamo=True)`` to one self-contained file.

    Args:
        module: a torch module in eval mode.
        args: example inputs (use sizes >= 2 on dynamic axes: torch.export specializes 0 and 1).
        path: output .onnx; weights stay inside (external_data=False).
        input_names, output_names: graph I/O names, in forward() order.
        dynamic: input name -> {axis: (dim name, min, max)}; dims shared by name.
        rename_dims: symbolic dim names to rewrite in the saved graph's inputs/outputs
            (e.g. the exporter's "T + P" -> "P+T").

    Raises:
        FleetError: the exporter failed (its message and captured output are included).
    """
    import onnx
    import torch
    from torch.export import Dim

    dims: dict[str, object] = {}
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = {}
        for name in input_names:
            axes = {}
            for axis, (dname, lo, hi) in dynamic.get(name, {}).items():
                if dname not in dims:
                    dims[dname] = Dim(dname, min=lo, max=hi)
                axes[axis] = dims[dname]
            dynamic_shapes[name] = axes or None
    with _quiet() as out:
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, str(path), dynamo=True, external_data=False,
                                  opset_version=OPSET, input_names=input_names,
                                  output_names=output_names, dynamic_shapes=dynamic_shapes,
                                  verbose=False)
        except Exception as e:  # the exporter raises many types; report them all the same way
            raise FleetError(f"ONNX export of {type(module).__name__} to {path} failed: "
                             f"{type(e).__name__}: {e}\n{out.getvalue()[-2000:]}",
                             "check the torch/onnxscript versions against docs/reference/models.md §1",
                             exit_code=3) from e
    model = onnx.load(str(path))
    if rename_dims:
        for v in [*model.graph.input, *model.graph.output]:
            for d in v.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in rename_dims:
                    d.dim_param = rename_dims[d.dim_param]
        onnx.save(model, str(path))


def graph_io(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of an ONNX file as manifest dicts.

    Returns:
        (inputs, outputs), each a list of ``{"name", "shape", "dtype"}``; static dims are ints,
        symbolic dims their name (str).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def desc(v) -> dict:
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": _ELEM.get(tt.elem_type, str(tt.elem_type))}

    return [desc(v) for v in model.graph.input], [desc(v) for v in model.graph.output]


def opset_of(path: Path) -> int:
    """The default-domain opset version of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def quantize_int8(src: Path, dst: Path, strip_value_info: bool = False) -> None:
    """Dynamic INT8 quantization (weights QInt8 per tensor, activations quantized at run time).

    Args:
        src: fp32 ONNX file.
        dst: output file.
        strip_value_info: clear ``graph.value_info`` first. Needed for the dynamo decoder,
            together with an untied output projection (docs/reference/models.md §5: otherwise
            "ShapeInferenceError ... (384) vs (51864)").

    Raises:
        FleetError: the quantizer failed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_input: object = str(src)
    if strip_value_info:
        model = onnx.load(str(src))
        del model.graph.value_info[:]
        model_input = model
    with _quiet() as out:
        try:
            quantize_dynamic(model_input=model_input, model_output=str(dst),
                             weight_type=QuantType.QInt8)
        except Exception as e:  # onnxruntime raises plain Exception subclasses of many kinds
            raise FleetError(f"INT8 quantization of {src.name} failed: {type(e).__name__}: {e}"
                             f"\n{out.getvalue()[-2000:]}",
                             "see docs/reference/models.md §5 for the decoder recipe", exit_code=3) from e
