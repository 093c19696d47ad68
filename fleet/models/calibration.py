"""Calibration sets for static INT8 quantization, drawn from the suites' real data.

A calibration set is one ``.npz`` with one array per input of the graph being quantized (names,
shapes and dtypes read from the ONNX graph), leading axis N (one sample per row, each row shaped
like the graph's input). It is written next to the artifact with a ``.json`` sidecar naming the
items it came from, and its bytes are deterministic (fixed zip timestamps, fixed item order), so
the same data gives the same sha256 on every build.

Sources (data sets of the data root, ``$FLEET_DATA``; docs/contracts.md §5):

- Whisper encoder (``encoder`` [1,80,1000] NCHW-style, or ``encoder_npu`` NHWC [1,1,1000,80]):
  log-mel windows (``device_agent.mel``, the boards' own code) of real speech clips
  (``speech/``), laid out as the graph's input declares. Clips shorter than 10 s give several
  windows by starting at offsets of 0, 0.5, 1.0 ... s (the mel's ``max - 8`` floor and the
  zero padding then differ per window, like at run time).
- Whisper full-NPU decoder (an input of dtype int [1,T] plus ``encoder_out`` [1,500,384]): the
  fp32 cpu encoder's output on those windows, with teacher-forced token prefixes of the clip's
  reference transcript (prompt ``[sot, no_timestamps]`` + the first k text tokens, padded with
  eot to T).
- MiniLM (``input_ids``/``attention_mask`` [1,256]): Cranfield and CISI documents (title +
  abstract) and queries, tokenized like the board (truncation at 256, right-padded with 0).
- CREPE (``frames`` [64,1024]): loud frames of the calibration speech clips, framed and
  normalised by the board's own ``device_agent.vc.crepe.frame_audio`` (``crepe_arrays``).

Split (calibration and evaluation disjoint): an item is *calibration* when the first 8 hex
digits of sha256("<dataset>:<kind>:<id>") taken mod ``SPLIT_MOD`` are 0 (about 1 in 4),
``evaluation`` otherwise. ``fleet models parity`` and the suites' parity tests measure on
evaluation items only (``in_calibration_split``). The suites' own WER / nDCG tests use every
item; the quantizer saw the calibration items' activations only (no labels, no scores).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.errors import FleetError

SPLIT_MOD = 4           # ~1 in 4 items calibrates (speech: 9 of 20 clips by chance; texts 818 of 3195)
WINDOW_OFFSETS_S = tuple(0.5 * k for k in range(16))  # start offsets (s) of extra windows per clip
SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362   # Whisper tiny.en tokenizer.json (docs/reference/models.md §4)
MINILM_SEQ = 256        # all-MiniLM-L6-v2 max_seq_length (sentence_bert_config.json)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: fixed, so the bytes are stable


@dataclass(frozen=True)
class CalibrationSet:
    """A calibration set on disk.

    Attributes:
        path: the .npz (one array per graph input, leading axis N).
        sha256: hex sha256 of the .npz bytes.
        n: number of samples (rows).
        source: where the samples came from (dataset, items, split rule), for the manifest.
    """

    path: Path
    sha256: str
    n: int
    source: str


def split_key(dataset: str, kind: str, item_id: str) -> str:
    """The key an item is split by, e.g. ``speech:clip:jfk`` or ``cranfield:doc:12``."""
    return f"{dataset}:{kind}:{item_id}"


def in_calibration_split(key: str) -> bool:
    """True when the item with this ``split_key`` belongs to the calibration side."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % SPLIT_MOD == 0


def dataset_folder(name: str, root: Path | None = None) -> Path:
    """Data set ``name`` in the data root ``root`` (default ``$FLEET_DATA`` …, ``fleet.paths.data_root``).

    Raises:
        FleetError: missing or incomplete there (the fix names ``fleet datasets fetch``).
    """
    from fleet.datasets.local import require

    return require(name, root)


def data_provenance(names: tuple[str, ...]) -> str:
    """``speech@<digest>`` per data set: the catalog's digest of its files' sha256s, so a
    calibration set's manifest record says which version of the data it was drawn from."""
    from fleet.datasets.catalog import get_dataset

    return ", ".join(f"{n}@{get_dataset(n).digest()}" for n in names)


def graph_inputs(graph: Path) -> list[dict]:
    """[{name, shape, dtype}] of an ONNX graph's inputs (initializers excluded); symbolic dims
    are strings, unknown dims None.

    Raises:
        FleetError: the file is missing or not an ONNX model.
    """
    import onnx
    from onnx import helper

    if not Path(graph).is_file():
        raise FleetError(f"{graph}: graph not found", "build it first (fleet models build)")
    try:
        m = onnx.load(str(graph), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others
        raise FleetError(f"{graph} is not an ONNX model: {e}", "rebuild it (fleet models build --force)") from None
    inits = {i.name for i in m.graph.initializer}
    out = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        out.append({"name": i.name, "shape": shape,
                    "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type))})
    return out


def speech_items(root: Path | None = None, split: str = "calibration") -> list[dict]:
    """Clips of ``speech/manifest.jsonl`` on one side of the split (manifest order).

    Args:
        root: data root (default ``fleet.paths.data_root()``).
        split: ``calibration`` or ``evaluation``.

    Returns:
        manifest rows with ``path`` added (absolute audio path).

    Raises:
        FleetError: the speech data set is missing from the data root.
    """
    d = dataset_folder("speech", root)
    mf = d / "manifest.jsonl"
    rows = [json.loads(line) for line in mf.read_text().splitlines() if line.strip()]
    want = split == "calibration"
    return [{**r, "path": d / r["audio"]} for r in rows
            if in_calibration_split(split_key("speech", "clip", r["id"])) == want]


def rag_texts(root: Path | None = None, split: str = "calibration",
              collections: tuple[str, ...] = ("cranfield", "cisi")) -> list[dict]:
    """Documents (title + text) and queries of the collections on one side of the split.

    Args:
        root: data root (default ``fleet.paths.data_root()``).

    Returns:
        [{key, text}] in collection, documents-then-queries, file order; empty texts skipped.

    Raises:
        FleetError: a collection is missing from the data root.
    """
    want = split == "calibration"
    out = []
    for c in collections:
        d = dataset_folder(c, root)
        for kind, fname in (("doc", "corpus.jsonl"), ("query", "queries.jsonl")):
            p = d / fname
            for line in p.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                r = json.loads(line)
                text = f"{r.get('title', '')} {r.get('text', '')}".strip() if kind == "doc" else r["text"].strip()
                key = split_key(c, kind, str(r["id"]))
                if text and in_calibration_split(key) == want:
                    out.append({"key": key, "text": text})
    return out


def evaluation_texts(n: int = 64) -> list[str]:
    """``n`` evaluation-side texts of cranfield/cisi: half documents, half queries, spread by hash
    (the parity comparison's inputs; never calibrated on)."""
    rows = rag_texts(split="evaluation")
    order = sorted(rows, key=lambda r: hashlib.sha256(r["key"].encode()).hexdigest())
    docs = [r["text"] for r in order if ":doc:" in r["key"]][: n - n // 2]
    queries = [r["text"] for r in order if ":query:" in r["key"]][: n // 2]
    return docs + queries


def evaluation_clips(limit: int | None = None) -> list[dict]:
    """Evaluation-side speech clips (manifest rows), in manifest order, at most ``limit``."""
    clips = speech_items(split="evaluation")
    return clips[:limit] if limit else clips


def _interleave(items: list[dict], n: int) -> list[dict]:
    """The first n items in sha256(key) order: a deterministic pick spread over the files."""
    order = sorted(items, key=lambda r: hashlib.sha256(r["key"].encode()).hexdigest())
    return order[:n]


def _mel_filters(root: Path | None = None) -> np.ndarray:
    """The boards' filterbank (the built ``mel_filters.npy``), else the build's own source."""
    from fleet.paths import artifacts_dir

    p = artifacts_dir() / "cpu" / "whisper-tiny.en" / "mel_filters.npy"
    if p.is_file():
        return np.load(p).astype(np.float32)
    from fleet.models.whisper import mel_filters

    return mel_filters().astype(np.float32)


def whisper_windows(n: int, root: Path | None = None, filters: np.ndarray | None = None
                    ) -> tuple[np.ndarray, list[dict]]:
    """Up to ``n`` log-mel windows f32 [n, 80, 1000] of the calibration clips.

    Windows go round-robin over clips and start offsets (``WINDOW_OFFSETS_S``; an offset is used
    only while at least 1 s of speech remains), so every clip contributes before any repeats.

    Returns:
        (mels, items): items [{clip, offset_s, text}] per window.
    """
    from fleet.models.mel import SAMPLE_RATE, load_audio, log_mel

    filters = _mel_filters(root) if filters is None else filters
    clips = speech_items(root, "calibration")
    if not clips:
        raise FleetError("no speech clip falls on the calibration side of the split",
                         "add clips to the speech data set (fleet/datasets/catalog/speech.yml)")
    audio = {c["id"]: load_audio(c["path"]) for c in clips}
    slots = []
    for off in WINDOW_OFFSETS_S:
        for c in clips:
            a = audio[c["id"]]
            if off == 0 or len(a) - int(off * SAMPLE_RATE) >= SAMPLE_RATE:
                slots.append((c, off))
    slots = slots[:n]
    mels = np.stack([log_mel(audio[c["id"]][int(off * SAMPLE_RATE):], filters) for c, off in slots])
    items = [{"clip": c["id"], "offset_s": off, "text": c["text"]} for c, off in slots]
    return mels.astype(np.float32), items


def _layout_mel(mels: np.ndarray, shape: list) -> np.ndarray:
    """[N, 80, 1000] mels into the graph's per-sample layout: [1,80,1000] (channels first) or
    [1,1,1000,80] (NHWC, channels last: Hailo's encoder_npu)."""
    if len(shape) == 4 and shape[-1] == 80:
        return np.ascontiguousarray(mels.transpose(0, 2, 1))[:, None, None]   # [N,1,1,1000,80]
    if len(shape) == 4 and shape[1] == 80:
        return mels[:, None, :, None, :]   # [N,1,80,1,1000] (NCHW with H=1)
    if len(shape) == 3 and shape[1] == 80:
        return mels[:, None]               # [N,1,80,1000]
    if len(shape) == 3 and shape[-1] == 80:
        return np.ascontiguousarray(mels.transpose(0, 2, 1))[:, None]
    raise FleetError(f"mel input shape {shape} is neither [1,80,T], [1,T,80], [1,80,1,T] nor [1,1,T,80]",
                     "export the encoder with one of those layouts")


def _cpu_encoder(graph: Path, model: str) -> Path:
    """The fp32 cpu encoder next to ``graph`` in the artifacts tree (artifacts/<target>/<model>/)."""
    cands = [Path(graph).resolve().parent.parent.parent / "cpu" / model / "encoder.onnx"]
    from fleet.paths import artifacts_dir

    cands.append(artifacts_dir() / "cpu" / model / "encoder.onnx")
    for c in cands:
        if c.is_file():
            return c
    raise FleetError(f"no fp32 cpu encoder for {model} (looked at {', '.join(map(str, cands))})",
                     f"build it first: fleet models build {model}")


def _whisper_tokenizer():
    from tokenizers import Tokenizer

    from fleet.paths import artifacts_dir

    p = artifacts_dir() / "cpu" / "whisper-tiny.en" / "tokenizer.json"
    if not p.is_file():
        raise FleetError(f"{p} not found", "build it first: fleet models build whisper-tiny.en")
    return Tokenizer.from_file(str(p))


def whisper_arrays(model: str, graph: Path, inputs: list[dict], n: int, root: Path | None = None
                   ) -> tuple[dict[str, np.ndarray], list[dict], str]:
    """Calibration arrays for a Whisper encoder or full-NPU decoder graph (module docstring)."""
    floats = [i for i in inputs if i["dtype"].startswith("float")]
    ints = [i for i in inputs if i["dtype"].startswith("int")]
    if len(inputs) == 1 and floats and 80 in floats[0]["shape"]:
        mels, items = whisper_windows(n, root)
        name = floats[0]["name"]
        return ({name: _layout_mel(mels, floats[0]["shape"]).astype(np.float32)}, items,
                f"log-mel windows of {len({i['clip'] for i in items})} speech clips")
    if len(ints) == 1 and len(floats) == 1 and floats[0]["shape"][-1] == 384:
        ids_in, enc_in = ints[0], floats[0]
        t = ids_in["shape"][-1] if isinstance(ids_in["shape"][-1], int) else 32
        import onnxruntime as ort

        enc_path = _cpu_encoder(graph, model)
        sess = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
        mels, witems = whisper_windows(max(1, n // 4), root)
        tok = _whisper_tokenizer()
        enc_outs, ids, items = [], [], []
        # each window's encoder output is paired with 4 prefix lengths of its transcript
        for mel, it in zip(mels, witems):
            e = sess.run(None, {sess.get_inputs()[0].name: mel[None]})[0].astype(np.float32)
            text_ids = tok.encode(" " + it["text"].strip(), add_special_tokens=False).ids
            full = [SOT, NO_TIMESTAMPS] + text_ids
            for frac in (0.25, 0.5, 0.75, 1.0):
                k = max(3, int(round(frac * min(len(full), t))))
                row = (full[:k] + [EOT] * t)[:t]
                ids.append(row)
                enc_outs.append(e)
                items.append({**it, "prefix_tokens": k})
        ids_arr = np.asarray(ids, dtype=np.dtype(ids_in["dtype"]))[:n].reshape(-1, *[
            d if isinstance(d, int) else t for d in ids_in["shape"]])
        enc_arr = np.stack(enc_outs[:n]).reshape(-1, *[d if isinstance(d, int) else 500 for d in enc_in["shape"]])
        return ({ids_in["name"]: ids_arr, enc_in["name"]: enc_arr.astype(np.float32)}, items[:n],
                f"fp32 cpu encoder outputs ({enc_path.name}) of speech clips + teacher-forced "
                "reference-transcript token prefixes")
    raise FleetError(f"{graph}: inputs {[(i['name'], i['shape'], i['dtype']) for i in inputs]} are neither a "
                     "Whisper encoder (mel) nor a decoder (token ids + encoder_out [.., 384])",
                     "pass the encoder or decoder graph")


def minilm_arrays(graph: Path, inputs: list[dict], n: int, root: Path | None = None
                  ) -> tuple[dict[str, np.ndarray], list[dict], str]:
    """Calibration arrays for a MiniLM encoder graph: input_ids / attention_mask (and zeros for a
    token_type_ids input), right-padded to the graph's static length (256 if dynamic)."""
    from device_agent.rag.embedder import load_tokenizer
    from fleet.paths import artifacts_dir

    tok_path = artifacts_dir() / "cpu" / "minilm-l6-v2" / "tokenizer.json"
    if not tok_path.is_file():
        raise FleetError(f"{tok_path} not found", "build it first: fleet models build minilm-l6-v2")
    tok = load_tokenizer(tok_path, MINILM_SEQ)
    texts = rag_texts(root, "calibration")
    # half documents, half queries: documents are long (truncated at 256), queries short
    docs = _interleave([r for r in texts if ":doc:" in r["key"]], n - n // 2)
    queries = _interleave([r for r in texts if ":query:" in r["key"]], n // 2)
    chosen = docs + queries
    names = {i["name"]: i for i in inputs}
    if "input_ids" not in names:
        raise FleetError(f"{graph}: no input_ids input (inputs {sorted(names)})", "pass a MiniLM encoder graph")
    seq = names["input_ids"]["shape"][-1]
    seq = seq if isinstance(seq, int) and seq > 0 else MINILM_SEQ
    ids = np.zeros((len(chosen), 1, seq), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(chosen):
        e = tok.encode(r["text"])
        k = min(len(e.ids), seq)
        ids[i, 0, :k] = e.ids[:k]
        mask[i, 0, :k] = e.attention_mask[:k]
    arrays = {}
    for name, spec in names.items():
        src = ids if name == "input_ids" else mask if name == "attention_mask" else np.zeros_like(ids)
        arrays[name] = src.astype(np.dtype(spec["dtype"]))
    return arrays, [{"key": r["key"]} for r in chosen], (
        f"{len(docs)} documents + {len(queries)} queries of cranfield/cisi")


def crepe_arrays(graph: Path, inputs: list[dict], n: int, root: Path | None = None
                 ) -> tuple[dict[str, np.ndarray], list[dict], str]:
    """Calibration arrays for a CREPE graph (``frames`` f32 [B, 1024]): up to ``n`` samples of
    [B, 1024] frames (N x B x 1024), framed and normalised as the board does
    (``device_agent.vc.crepe.frame_audio``, 10 ms hop: the VC pipeline's default crepe_hop_ms)
    and keeping only the frames the board infers (RMS >= ``DEFAULT_SILENCE_DB``, -60 dBFS; the
    rest never reach the NPU). Frames of all calibration-side clips are pooled in manifest order
    and N*B of them taken evenly spaced, so every clip contributes; fewer samples when the
    calibration side has fewer than N*B loud frames.

    Raises:
        FleetError: the graph has not exactly one float input [B, 1024] with a static B, or no
            speech clip is on the calibration side.
    """
    from device_agent.audio import load_audio
    from device_agent.vc import crepe

    shape = inputs[0]["shape"] if len(inputs) == 1 else None
    if not (shape and len(shape) == 2 and isinstance(shape[0], int) and shape[0] > 0
            and shape[1] == crepe.WINDOW and inputs[0]["dtype"].startswith("float")):
        raise FleetError(f"{graph}: inputs {[(i['name'], i['shape'], i['dtype']) for i in inputs]} are not "
                         f"one static CREPE frame batch [B, {crepe.WINDOW}] float32",
                         "export the CREPE graph with a static frame batch (fleet models build crepe-tiny)")
    batch = shape[0]
    clips = speech_items(root, "calibration")
    if not clips:
        raise FleetError("no speech clip falls on the calibration side of the split",
                         "add clips to the speech data set (fleet/datasets/catalog/speech.yml)")
    pooled, items = [], []
    for c in clips:
        frames, rms_db = crepe.frame_audio(load_audio(c["path"]), crepe.SAMPLE_RATE // 100)
        loud = frames[rms_db >= crepe.DEFAULT_SILENCE_DB]
        pooled.append(loud)
        items.append({"clip": c["id"], "loud_frames": int(len(loud))})
    allf = np.concatenate(pooled).astype(np.float32)
    k = min(n, len(allf) // batch)
    if k < 1:
        raise FleetError(f"only {len(allf)} loud frames on the calibration side, fewer than one batch of {batch}",
                         "add clips to the speech data set (fleet/datasets/catalog/speech.yml)")
    idx = np.linspace(0, len(allf) - 1, k * batch).round().astype(np.int64)
    arr = allf[idx].reshape(k, batch, crepe.WINDOW)
    return ({inputs[0]["name"]: arr}, items,
            f"{k * batch} loud CREPE frames (10 ms hop, evenly spaced) of {len(clips)} speech clips")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz whose bytes depend only on the arrays (names sorted, fixed
    zip timestamps, no compression), atomically (temp file + rename)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            z.writestr(info, arr.getvalue())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def build_calibration_set(model: str, graph: Path, out_dir: Path, n: int = 64) -> CalibrationSet:
    """Draw a calibration set for ``graph`` from the suite data and save it in ``out_dir``.

    The samples come from the model's recipe (fleet.models.recipes: ``calibration_arrays``,
    drawn from its ``calibration_data`` sets); layout, determinism, sidecar and split are this
    module's, the same for every model.

    Args:
        model: a recipe with calibration data (``whisper-tiny.en``, ``minilm-l6-v2``,
            ``crepe-tiny``).
        graph: the fp32 ONNX graph to be quantized; its inputs decide the arrays' names, shapes,
            dtypes and layout (NCHW [1,80,1000] vs NHWC [1,1,1000,80] mels).
        out_dir: where ``calib_<graph stem>.npz`` and its ``.json`` sidecar are written.
        n: samples wanted (fewer when the calibration side has fewer windows: 9 clips x up to
            16 start offsets).

    Returns:
        CalibrationSet(path, sha256, n, source).

    Raises:
        FleetError: unknown model, graph unreadable or of unexpected inputs, data missing.
    """
    if n < 1:
        raise FleetError(f"calibration size n={n} must be >= 1", "use e.g. n=64")
    from fleet.models import recipes

    inputs = graph_inputs(Path(graph))
    recipe = recipes.find(model)
    if recipe is None or not recipe.calibration_data:
        have = [r.name for r in recipes.all_recipes() if r.calibration_data]
        raise FleetError(f"no calibration data recipe for model {model!r}",
                         f"use {', '.join(have[:-1])} or {have[-1]}" if len(have) > 1 else
                         f"use {''.join(have) or 'a model whose recipe has calibration_data'}")
    draw = recipe.calibration_arrays(Path(graph), inputs, n)
    arrays, items, what = draw.arrays, draw.items, draw.what
    rule, data = recipe.calibration_rule, recipe.calibration_data
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"calib_{Path(graph).stem}.npz"
    write_npz(path, arrays)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    count = int(next(iter(arrays.values())).shape[0])
    source = (f"data sets {data_provenance(data)}: {what}; {count} samples; split: {rule} with "
              f"int(sha256('<dataset>:<kind>:<id>')[:8], 16) % {SPLIT_MOD} == 0 calibrate, the rest "
              "evaluate (fleet.models.calibration)")
    side = {"model": model, "graph": Path(graph).name, "n": count, "sha256": sha, "source": source,
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "items": items}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(side, indent=1) + "\n")
    tmp.replace(path.with_suffix(".json"))
    return CalibrationSet(path=path, sha256=sha, n=count, source=source)


def load_calibration(calib: CalibrationSet) -> dict[str, np.ndarray]:
    """The arrays of a calibration set, checked against its sha256.

    Raises:
        FleetError: file missing or its sha256 differs (stale or corrupt).
    """
    p = Path(calib.path)
    if not p.is_file():
        raise FleetError(f"calibration set {p} not found", "rebuild it (build_calibration_set)")
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    if sha != calib.sha256:
        raise FleetError(f"calibration set {p}: sha256 {sha} != expected {calib.sha256}",
                         "rebuild it (build_calibration_set)")
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
