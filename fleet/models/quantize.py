"""Static QDQ INT8 quantization with onnxruntime.quantization: the emulation of an NPU's numerics.

Hailo's DFC and rknn-toolkit2 both quantize a model *statically*: activation ranges are fixed
from a calibration set at build time, weights are INT8 per output channel, activations 8-bit per
tensor (Hailo Dataflow Compiler user guide, "Model Optimization"; rknn-toolkit2
``config(quantized_dtype='asymmetric_quantized-8', quantized_method='channel')``, its default).
Running such a model in onnxruntime on the CPU gives the numbers the NPU would give, up to the
rounding of each runtime's kernels; this is what emulated hailo8l/hailo8/rk3588 boards run.

Scheme (``quantize_static``, ``QuantFormat.QDQ``): weights 8-bit symmetric, per output channel
(``per_channel=True``) or per tensor; activations QUInt8 asymmetric per tensor (the same 256
levels as an asymmetric int8 NPU activation); calibration method MinMax.

The weights are *stored* as QUInt8 with zero point 128 (``WeightSymmetric``), not QInt8: with
QInt8 weights onnxruntime runs the U8S8 kernels, which on x86 CPUs without AVX-VNNI (AVX2 and
AVX-512F without VNNI: e.g. AMD EPYC Zen 2/3) multiply with VPMADDUBSW, whose 16-bit
intermediate sums saturate (onnxruntime docs, "Quantize ONNX models", *When and why do I need to
try U8U8?*). The emulation then depended on the controller's CPU: the Whisper encoder_npu's
cosine to fp32 was min 0.975 / mean 0.985 on an AVX2-only AMD EPYC against 0.995 / 0.996 on a
VNNI machine, and the emulated boards' WER moved from 4.1 % to 5.7 %. The U8U8 kernels widen to
16 bit before multiplying and are exact on every x86 ISA (and on ARM), so every controller gets
the same numbers: 0.9952 / 0.9962 on the AVX2 machine (``benchmarks/emulation_fidelity.py
--targets hailo8l``, evaluation side). The price there is speed: INT8/fp32 time 1.03 where U8S8
gave 0.79, which an emulation, there for numerics, can pay. An NPU's symmetric int8 weights and
uint8-with-zero-point-128 weights are the same 8-bit grid up to one level. Measured (fp32 vs emulated, evaluation side of the calibration split):

- per-channel vs per-tensor weights (benchmarks/emulation_fidelity.py --scheme-sweep, 64
  calibration samples): Whisper encoder WER over 11 clips 3.76 % -> 3.76 % (0 transcripts
  changed) vs 3.76 % -> 5.38 % (2 changed), encoder_out cosine mean 0.9963 vs 0.9950; MiniLM 64
  texts cosine min/mean 0.9914/0.9952 vs 0.9873/0.9938. Per channel is the default.
- calibration method (MiniLM, 16 samples, 48 texts): MinMax 0.9920/0.9953 (15 s), Percentile
  (99.999) 0.9924/0.9955 (28 s), Entropy fails in onnxruntime 1.31 on this graph ("Too many bins
  for data range"). MinMax: same fidelity in half the build time.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models.calibration import CalibrationSet, load_calibration

CALIBRATION_METHOD = "MinMax"
#: the QDQ storage scheme; part of the exporter info, so artifacts of an older scheme are rebuilt
QDQ_SCHEME = "w8-sym-as-u8-zp128/a8-asym-u8 (U8U8 kernels)"


def qdq_types() -> dict:
    """``quantize_static`` keyword arguments of the scheme (see the module docstring): activation
    and weight types and the symmetric-weight options. Shared by every static QDQ build."""
    from onnxruntime.quantization import QuantType

    return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QUInt8,
            "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False}}
# Which nodes are quantized (``select_nodes``): the layers with weights (MatMul/Gemm/Conv with a
# constant operand), i.e. the matrix engines' work, minus the layers fed by a GELU (the FFN
# down-projection). Measured on MiniLM (cosine vs fp32, 60 held-out texts, MinMax, per-channel;
# README "Emulated NPU numerics"): every op quantized 0.097 min / 0.306 mean (the attention mask's
# large negative additive values and LayerNorm/Softmax share one 8-bit range); MatMul/Gemm/Conv
# incl. activation x activation 0.873 / 0.943; weight layers only 0.895 / 0.942; weight layers
# without the GELU-fed ones 0.987 / 0.994. The GELU output of BERT-style FFNs has outliers an
# 8-bit per-tensor range cannot hold (Bondarenko et al. 2021, "Understanding and Overcoming the
# Challenges of Efficient Transformer Quantization"); the NPU builds keep those layers at 16 bit
# (Hailo DFC ``precision_mode=a16_w8``; rknn-toolkit2 hybrid quantization), and so does this.
OP_TYPES = ("MatMul", "Gemm", "Conv")
OUTLIER_PRODUCERS = ("Gelu", "Erf")  # a node fed (within 5 elementwise hops) by these keeps float activations


def select_nodes(graph: Path, op_types: tuple[str, ...] = OP_TYPES) -> tuple[list[str], list[str]]:
    """(nodes to quantize, weight layers left in float) of an ONNX graph (see OP_TYPES)."""
    import onnx

    m = onnx.load(str(graph), load_external_data=False)
    consts = {i.name for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    consts |= {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}

    def outlier_fed(name: str, hops: int = 5) -> bool:
        n = prod.get(name)
        if n is None or hops == 0:
            return False
        if n.op_type in OUTLIER_PRODUCERS:
            return True
        return n.op_type in ("Mul", "Add", "Div", "Reshape", "Transpose") and any(
            outlier_fed(i, hops - 1) for i in n.input if i not in consts)

    quant, kept = [], []
    for n in m.graph.node:
        if n.op_type not in op_types or not any(i in consts for i in n.input):
            continue
        acts = [i for i in n.input if i and i not in consts]
        (kept if any(outlier_fed(i) for i in acts) else quant).append(n.name)
    return quant, kept


class NpzReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a calibration .npz: one dict
    {input name: array [1, ...]} per sample (row of the leading axis)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
        self.i = 0

    def get_next(self) -> dict | None:
        if self.i >= self.n:
            return None
        row = {k: np.ascontiguousarray(v[self.i]) for k, v in self.arrays.items()}
        self.i += 1
        return row

    def rewind(self) -> None:
        self.i = 0


def scheme_name(per_channel: bool) -> str:
    """The manifest ``quantization`` value for a scheme."""
    return "int8-static-qdq-per-channel" if per_channel else "int8-static-qdq-per-tensor"


@contextlib.contextmanager
def _quiet():
    """Silence the quantizer's prints (it writes progress to stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        yield out


def quantize_static_qdq(fp32_graph: Path, calib: CalibrationSet, out_path: Path, per_channel: bool = True,
                        method: str = CALIBRATION_METHOD, preprocess: bool = True,
                        op_types: tuple[str, ...] = OP_TYPES, keep_outlier_layers: bool = True) -> dict:
    """Quantize ``fp32_graph`` to a static QDQ INT8 ONNX model at ``out_path``.

    Args:
        fp32_graph: the fp32 ONNX graph (static shapes as the NPU runs them).
        calib: its calibration set (``fleet.models.calibration.build_calibration_set``).
        out_path: the QDQ model to write (written to a temp file first, then renamed).
        per_channel: weights per output channel (True) or per tensor.
        method: calibration method, ``MinMax`` (default, chosen by measurement), ``Percentile``
            or ``Entropy``.
        preprocess: run ``quant_pre_process`` (shape inference + ORT graph optimization) first.
        op_types: op types of the weight layers quantized.
        keep_outlier_layers: leave GELU-fed weight layers in float (``select_nodes``).

    Returns:
        manifest fields: {"quantization", "quantization_detail": {weights, activations, format,
        calibration_method, calibration: {sha256, n, source, file}}, "toolchain": {"name":
        "onnxruntime.quantization", "version"}}.

    Raises:
        FleetError: graph missing, calibration set stale, or the quantizer failed.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(fp32_graph)
    if not src.is_file():
        raise FleetError(f"{src}: fp32 graph not found", "build it first (fleet models build)")
    methods = {"MinMax": CalibrationMethod.MinMax, "Percentile": CalibrationMethod.Percentile,
               "Entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise FleetError(f"unknown calibration method {method!r}", f"use one of {sorted(methods)}")
    arrays = load_calibration(calib)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qdq-", dir=out_path.parent) as tmp:
        model_in = src
        with _quiet() as log:
            try:
                if preprocess:
                    model_in = Path(tmp) / "pre.onnx"
                    quant_pre_process(str(src), str(model_in), skip_symbolic_shape=True)
                tmp_out = Path(tmp) / "qdq.onnx"
                nodes, kept = select_nodes(model_in, op_types)
                if not keep_outlier_layers:
                    nodes, kept = nodes + kept, []
                quantize_static(str(model_in), str(tmp_out), NpzReader(arrays),
                                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                calibrate_method=methods[method], nodes_to_quantize=nodes,
                                **qdq_types())
            except Exception as e:  # onnxruntime raises many exception types
                raise FleetError(f"static INT8 quantization of {src.name} failed: {type(e).__name__}: {e}"
                                 f"\n{log.getvalue()[-2000:]}",
                                 "check the graph loads in onnxruntime and the calibration set matches "
                                 "its inputs", exit_code=3) from e
        tmp_out.replace(out_path)
    return {
        "quantization": scheme_name(per_channel),
        "quantization_detail": {
            "format": "QDQ",
            "weights": "8-bit symmetric " + ("per output channel" if per_channel else "per tensor")
                       + " (stored uint8, zero point 128)",
            "scheme": QDQ_SCHEME,
            "activations": "uint8 asymmetric per tensor (static ranges)",
            "calibration_method": method,
            "op_types": list(op_types),
            "nodes_quantized": len(nodes),
            "float_layers": kept,
            "preprocess": "quant_pre_process" if preprocess else None,
            "calibration": {"file": Path(calib.path).name, "sha256": calib.sha256, "n": calib.n,
                            "source": calib.source},
        },
        "toolchain": {"name": "onnxruntime.quantization", "version": ort.__version__},
    }
