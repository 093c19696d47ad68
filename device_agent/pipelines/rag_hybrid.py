"""``rag.hybrid``: MiniLM embedder (the board's NPU form or the CPU form) + BM25, fused.

The seed system: a voice assistant's memory on an RK3588, MiniLM with fixed shape [1, 256] on the
NPU, hybrid vector + BM25 retrieval, reranker off (it added 1.2 s).

Input: a collection folder (corpus.jsonl, queries.jsonl, qrels.tsv; ``device_agent.rag.collection``).
The index is built on the board: corpus embeddings (cached under ``fleet_root/cache/rag/`` keyed by
encoder, tokenizer and corpus sha256) and a bm25s index. Tasks (option ``task``):

- ``evaluate`` (default): every judged query (or the first ``max_queries``) is run once through
  the hybrid path; the vector-only and BM25-only rankings are the same run's intermediate lists.
  Returns nDCG@10, recall@5/10, MRR@10 per mode, per-stage latency p50/p90 and per-query rankings.
- ``search``: one ``query`` against the collection -> top_k hits per mode with stage timings.
- ``embed``: the first ``limit`` judged queries and ``limit`` documents -> their texts and
  embeddings (for parity checks against sentence-transformers on the controller).

Encoder (``encoder=auto``): the static [1, 256] graph on boards with an NPU, the dynamic [B, T] one
on CPU boards. Where the static encoder runs (``encoder_backend``) follows the rule every pipeline's
NPU stage follows (``device_agent.pipelines.npu_stage``): the board's NPU with the .hef/.rknn
``encoder_npu`` (``hailo``/``rknn`` ask for it; ``auto`` uses it when deployed, and fails when the
runtime is not importable), on an emulated board at int8 its target's static QDQ INT8 model on
onnxruntime (labelled ``emulation``), else the cpu ONNX model with the reason. Stages per query:
tokenize (tokenizers), inference (encoder backend; pooling is fused into the graph and timed
there), normalize (numpy), vector_search (numpy, exact cosine), bm25 (bm25s), merge (fusion),
rerank (only with a reranker artifact), total.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import manifest as mf
from ..backends import npu_backend
from ..backends.base import Backend
from ..protocol import BadInput, ModelError
from ..rag import fusion, ir_metrics
from ..rag.collection import Collection, load_collection, sub_collection
from ..rag.embedder import MAX_TOKENS, Embedder, load_tokenizer
from ..rag.index import (
    BM25_B,
    BM25_K1,
    BM25Index,
    VectorIndex,
    cache_key,
    cached_embeddings,
)
from . import npu_stage
from .base import Option, Pipeline

# Roles of the NPU encoder, in order of preference: the NPU build's ``encoder_npu`` (fleet models
# build --target: static [1,256]), or the cpu build's ``encoder_static``.
ENCODER_NPU_ROLES = ("encoder_npu", "encoder_static")
STAGES = ("tokenize", "inference", "pooling", "normalize", "vector_search", "bm25", "merge", "rerank", "total")
MODES = ("vector", "bm25", "hybrid")


#: Percentiles of the stage breakdown, as MLPerf LoadGen reports them (the controller's
#: fleet.measure.protocol does the same for the SingleStream measurement; the agent does not import
#: the controller): the sample at index floor(n * p) of the ascending latencies, and none from fewer
#: than floor(1 / (1 - p)) + 1 samples, below which it would only be the maximum
#: (https://github.com/mlcommons/inference/blob/master/loadgen/results.cc).
STAGE_PERCENTILES = {"p50_ms": (0.5, 3), "p90_ms": (0.9, 11)}


def _pct(values: list[float]) -> dict:
    """{"n", "p50_ms", "p90_ms", "mean_ms"} of per-query stage times (ms), a percentile None (with
    its reason in "unreported") when n is below what it needs; n = 0 gives every figure None."""
    n = len(values)
    out: dict = {"n": n, "p50_ms": None, "p90_ms": None, "mean_ms": None}
    if not n:
        return out
    a = np.sort(np.asarray(values, dtype=np.float64))
    out["mean_ms"] = round(float(a.mean()), 3)
    unreported = {}
    for key, (p, need) in STAGE_PERCENTILES.items():
        if n >= need:
            out[key] = round(float(a[int(np.floor(n * p))]), 3)
        else:
            unreported[key] = f"{n} samples; the {key[:3]} needs at least {need}"
    if unreported:
        out["unreported"] = unreported
    return out


class RagHybrid(Pipeline):
    """Hybrid retrieval over an IR collection (see module docstring)."""

    name = "rag.hybrid"
    default_model = "minilm-l6-v2"
    NPU_ROLES = ENCODER_NPU_ROLES
    NPU_STAGE = "encoder"  # the info key of the NPU stage parity compares
    PARITY_REFERENCE_ROLE = "encoder_static"  # its cpu fp32 reference in the manifest
    OPTIONS = (
        Option("precision", str, None, "encoder variant: fp32 or int8; default int8 on NPU boards "
               "(what the NPU runs), fp32 on cpu boards", choices=("fp32", "int8"), load=True),
        Option("encoder", str, "auto", "auto (static [1,256] on NPU boards, dynamic on cpu), static or dynamic",
               choices=("auto", "static", "dynamic"), load=True),
        Option("encoder_backend", str, "auto", "auto (NPU if deployed, its emulation on emulated boards, "
               "else onnx), onnx, hailo or rknn; the NPU runs the static encoder",
               choices=("auto", "onnx", "hailo", "rknn"), load=True),
        Option("threads", int, 0, "onnxruntime intra-op threads (0 = one per physical core)", load=True),
        Option("task", str, "evaluate", "evaluate the collection, search one query, or embed texts",
               choices=("evaluate", "search", "embed")),
        Option("query", str, "", "the query text for task=search"),
        Option("fusion", str, "rrf", "hybrid fusion: rrf (reciprocal rank) or weighted (min-max scores)",
               choices=("rrf", "weighted")),
        Option("rrf_k", int, fusion.RRF_K, "RRF constant k (60: Cormack et al. 2009)"),
        Option("alpha", float, 0.5, "weighted fusion: weight of the vector score (BM25 gets 1 - alpha)"),
        Option("candidates", int, 100, "depth of the vector and BM25 lists fused into the hybrid list"),
        Option("top_k", int, 10, "results per query and mode (metrics need >= 10)"),
        Option("bm25_k1", float, BM25_K1, "BM25 k1 (1.2: Lucene default)"),
        Option("bm25_b", float, BM25_B, "BM25 b (0.75: Lucene default)"),
        Option("max_queries", int, 0, "evaluate only the first N judged queries (0 = all)"),
        Option("subset_docs", int, 0, "N > 0: a small collection (smoke runs on slow boards): the documents the "
               "evaluated queries judge plus the first N others; 0 = the whole corpus"),
        Option("unknown_qrels", str, "error", "qrels naming unknown ids: error, or skip (dropped and listed)",
               choices=("error", "skip")),
        Option("cache", bool, True, "cache corpus embeddings under fleet_root/cache/rag"),
        Option("per_query", bool, True, "include per-query rankings and timings in the result"),
        Option("limit", int, 16, "task=embed: how many queries and how many documents"),
        Option("rerank", bool, False, "rerank the hybrid list with the reranker artifact (ModelError if absent)"),
        Option("rerank_depth", int, 20, "how many hybrid results the reranker rescores"),
    )

    def __init__(self, config):
        super().__init__(config)
        self.embedder: Embedder | None = None
        self.reranker = None
        self._index: dict = {}

    def default_options(self) -> dict:
        opts = super().default_options()
        opts["precision"] = "fp32" if self.config.npu is None else "int8"
        return opts

    # -- load --------------------------------------------------------------------------------
    def _choose_encoder(self, arts: list[mf.Artifact], options: dict, backends: dict[str, Backend],
                        model_dir: Path) -> tuple[str, npu_stage.StageChoice]:
        """(shape, the encoder stage's choice) by ``npu_stage``'s rule, as for every pipeline's
        NPU stage. The NPU stage is the static [1, MAX_TOKENS] graph: ``encoder=dynamic`` keeps
        the encoder on the cpu, and cannot go with ``encoder_backend=hailo|rknn``.

        Raises:
            BadInput: ``encoder=dynamic`` with ``encoder_backend=hailo|rknn``.
            ModelError: what ``choose_npu_stage`` raises (NPU artifact asked for and absent, the
                board's NPU runtime not importable), or no cpu ONNX encoder of that shape/precision.
        """
        cfg = self.config
        precision, want = options["precision"], options["encoder_backend"]
        npu = npu_backend(cfg.accelerator)
        shape = options["encoder"]
        if shape == "auto":
            shape = "static" if npu or want in npu_stage.NPU_FORMAT else "dynamic"
        if shape == "dynamic" and want in npu_stage.NPU_FORMAT:
            raise BadInput(f"encoder=dynamic with encoder_backend={want}: the NPU runs the static "
                           f"[1,{MAX_TOKENS}] encoder only", "use encoder=auto or static, or encoder_backend=auto/onnx")
        if shape == "static":
            choice = npu_stage.choose_npu_stage(arts, cfg, backends, want=want, precision=precision,
                                                roles=ENCODER_NPU_ROLES, stage="encoder", option="encoder_backend")
            if choice is not None:
                return shape, choice
        art = mf.find(arts, role=f"encoder_{shape}", format="onnx", variant=precision)
        if art is None:
            have = sorted({f"{a.get('role')}/{a.get('variant')}" for a in arts if str(a.get("role", "")).startswith("encoder")})
            raise ModelError(f"{model_dir}: no {precision} ONNX encoder_{shape} (have: {have or 'none'})",
                             f"deploy the {self.default_model} artifacts (fleet models build {self.default_model}; "
                             "fleet deploy), or pick another precision/encoder option")
        choice = npu_stage.cpu_fallback(art, cfg, want=want, precision=precision, stage="encoder",
                                        option="encoder_backend", model=self.default_model)
        if shape == "dynamic" and npu and want != "onnx":
            choice = replace(choice, reason=f"encoder=dynamic requested: the {cfg.accelerator} NPU runs "
                                            f"the static [1,{MAX_TOKENS}] encoder only")
        return shape, choice

    def load(self, model_dir: Path, backends: dict[str, Backend], options: dict) -> dict:
        self.unload()
        cfg = self.config
        arts = mf.read_manifest(model_dir)
        precision = options["precision"]
        shape, choice = self._choose_encoder(arts, options, backends, model_dir)
        backend, art, reason, emu = choice.backend, choice.artifact, choice.reason, choice.emulation
        tok_art = mf.find(arts, role="tokenizer")
        if tok_art is None:
            raise ModelError(f"{model_dir}: manifest has no tokenizer", "deploy the minilm-l6-v2 artifacts")
        models = {a.file: mf.verify(a) for a in (art, tok_art)}
        tokenizer = load_tokenizer(tok_art.path)
        load_opts = ({"intra_op_threads": options["threads"]} if backend == "onnx"
                     else {"inputs": art.get("inputs"), "outputs": art.get("outputs")})
        model = backends[backend].load(art.path, **load_opts)
        try:
            self.embedder = Embedder(model, tokenizer)
        except BaseException:
            model.close()
            raise
        rer = mf.find(arts, role="reranker", format="onnx")
        rer_tok = mf.find(arts, role="reranker_tokenizer")
        rer_info = {"present": False, "reason": f"no reranker artifact (role reranker) in {model_dir}"}
        if rer is not None and rer_tok is not None:
            from ..rag.rerank import CrossEncoder

            models.update({a.file: mf.verify(a) for a in (rer, rer_tok)})
            self.reranker = CrossEncoder(backends["onnx"].load(rer.path, intra_op_threads=options["threads"]),
                                         rer_tok.path)
            rer_info = {"present": True, "artifact": rer.file, "backend": "onnx"}
        self.info = {
            "pipeline": self.name, "model_dir": str(model_dir), "precision": precision,
            "encoder": {"backend": backend, "artifact": art.file, "shape": shape,
                        "static_len": self.embedder.static_len, "reason": reason,
                        "emulated": bool(cfg.emulated and cfg.npu and backend == "onnx"), "emulation": emu,
                        "quantization": art.get("quantization"),
                        "sha256": models[art.file]},
            "tokenizer": {"artifact": tok_art.file, "sha256": models[tok_art.file], "max_tokens": MAX_TOKENS},
            "reranker": rer_info, "models": models,
        }
        return self.info

    def parity(self, config, backends: dict, inputs: list, options: dict) -> dict:
        """NPU-stage parity: each text's raw sentence embedding from the cpu fp32 ``encoder_static``
        and from this board's embedder (cosine, max abs error).

        Returns the parity op's stage part (device_agent.parity): output, reference, per_input,
        summary. Raises BadInput (a bad input), ModelError (the fp32 reference is missing)."""
        from .. import parity as par

        ref_model, ref_art, ref_sha = par.reference_model(self, self.PARITY_REFERENCE_ROLE, backends)
        ref = Embedder(ref_model, self.embedder.tok)
        rows = []
        for i, text in enumerate(inputs):
            if not isinstance(text, str) or not text.strip():
                raise BadInput(f"parity input {i} is not a non-empty text", "pass texts (queries or documents)")
            # raw graph outputs (before the pipeline's re-normalisation): what the NPU stage returns
            enc = self.embedder.tok.encode(text)
            a = ref._arrays([enc], ref.static_len or len(enc.ids))
            b = self.embedder._arrays([enc], self.embedder.static_len or len(enc.ids))
            r = ref._run(*a)
            c = self.embedder._run(*b)
            rows.append({"input": i, "tokens": len(enc.ids), "truncated": bool(enc.overflowing), **par.compare(r, c)})
        return {"output": "sentence_embedding",
                "reference": {"backend": "onnx", "artifact": ref_art.file, "precision": "fp32", "sha256": ref_sha},
                "per_input": rows, "summary": par.summarize(rows)}

    def unload(self) -> None:
        for m in (self.embedder.model if self.embedder else None, self.reranker.model if self.reranker else None):
            if m is not None:
                m.close()
        self.embedder = self.reranker = None
        self._index = {}

    # -- index -------------------------------------------------------------------------------
    def _build_index(self, col: Collection, options: dict) -> dict:
        """Vector and BM25 indexes over the non-empty documents (kept in memory per corpus)."""
        key = (str(col.path), col.corpus_sha256, options["bm25_k1"], options["bm25_b"], options["cache"])
        if key in self._index:
            return {**self._index[key], "reused": True}
        keep = [i for i, t in enumerate(col.doc_texts) if t]
        ids = [col.doc_ids[i] for i in keep]
        texts = [col.doc_texts[i] for i in keep]

        def embed():
            vecs, trunc = self.embedder.embed_many(texts)
            return vecs, [ids[i] for i in trunc]

        enc, tok = self.info["encoder"], self.info["tokenizer"]
        cache_dir = self.config.root / "cache" / "rag" if options["cache"] else None
        vecs, cinfo = cached_embeddings(cache_dir, cache_key(enc["sha256"], tok["sha256"], col.corpus_sha256),
                                        ids, embed)
        bm25 = BM25Index(ids, texts, k1=options["bm25_k1"], b=options["bm25_b"])
        truncated = cinfo.get("truncated") or []
        entry = {"vector": VectorIndex(ids, vecs), "bm25": bm25,
                 "info": {"docs": len(col.doc_ids), "indexed": len(ids), "empty_docs": list(col.empty_docs),
                          "truncated_docs": len(truncated), "truncated_doc_ids": truncated[:50],
                          "embed_ms": round(cinfo["embed_ms"], 1), "embed_cache": cinfo["cache"],
                          "cache_file": cinfo.get("file"), "bm25_build_ms": round(bm25.build_ms, 1),
                          "dim": int(vecs.shape[1]) if vecs.ndim == 2 else 0,
                          "search": "exact cosine (numpy)"}}
        self._index = {key: entry}  # keep one corpus in memory
        return {**entry, "reused": False}

    # -- one query ---------------------------------------------------------------------------
    def _query(self, idx: dict, text: str, options: dict, doc_text: dict | None) -> tuple[dict, dict, bool]:
        """(rankings per mode [(doc id, score)], stage ms, truncated) for one query."""
        t0 = time.perf_counter()
        qvec, ms, truncated = self.embedder.embed_query(text)
        depth, top = max(options["candidates"], options["top_k"]), options["top_k"]
        t = time.perf_counter()
        v_ids, v_s = idx["vector"].search(qvec, depth)
        ms["vector_search"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        b_ids, b_s = idx["bm25"].search(text, depth)
        ms["bm25"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        if options["fusion"] == "rrf":
            hybrid = fusion.rrf([v_ids, b_ids], k=options["rrf_k"], top=max(top, options["rerank_depth"]))
        else:
            a = options["alpha"]
            hybrid = fusion.weighted([(v_ids, v_s), (b_ids, b_s)], [a, 1.0 - a], top=max(top, options["rerank_depth"]))
        ms["merge"] = (time.perf_counter() - t) * 1e3
        if self.reranker is not None and options["rerank"]:
            t = time.perf_counter()
            head = hybrid[: options["rerank_depth"]]
            s = self.reranker.scores(text, [doc_text[d] for d, _ in head])
            order = np.argsort(-s, kind="stable")
            hybrid = [(head[i][0], float(s[i])) for i in order] + hybrid[len(head):]
            ms["rerank"] = (time.perf_counter() - t) * 1e3
        ms["total"] = (time.perf_counter() - t0) * 1e3
        ranks = {"vector": list(zip(v_ids[:top], map(float, v_s[:top]))),
                 "bm25": list(zip(b_ids[:top], map(float, b_s[:top]))), "hybrid": hybrid[:top]}
        return ranks, ms, truncated

    # -- run ---------------------------------------------------------------------------------
    def _check(self, options: dict) -> None:
        if self.embedder is None:
            raise ModelError(f"{self.name} is not loaded", "load it first")
        for k, lo in (("top_k", 1), ("candidates", 1), ("rrf_k", 1), ("limit", 1), ("rerank_depth", 1)):
            if options[k] < lo:
                raise BadInput(f"option {k}={options[k]} must be >= {lo}", f"{k}: see fleet-agent info")
        if options["max_queries"] < 0:
            raise BadInput(f"max_queries={options['max_queries']} must be >= 0", "0 means all judged queries")
        if options["subset_docs"] < 0:
            raise BadInput(f"subset_docs={options['subset_docs']} must be >= 0", "0 means the whole corpus")
        if not 0.0 <= options["alpha"] <= 1.0:
            raise BadInput(f"alpha={options['alpha']} must be in [0, 1]", "e.g. alpha=0.5")
        if options["bm25_k1"] < 0 or not 0.0 <= options["bm25_b"] <= 1.0:
            raise BadInput("bm25_k1 must be >= 0 and bm25_b in [0, 1]", "defaults: k1=1.2, b=0.75")
        if options["rerank"] and self.reranker is None:
            raise ModelError("rerank=true but no reranker artifact is deployed: "
                             + self.info["reranker"]["reason"], "run without rerank, or deploy a cross-encoder "
                             "ONNX as role reranker (+ reranker_tokenizer)")

    def run(self, input_path: Path, options: dict) -> dict:
        self._check(options)
        t0 = time.perf_counter()
        col = load_collection(input_path, options["unknown_qrels"])
        if options["subset_docs"] and options["task"] != "embed":
            col = sub_collection(col, options["max_queries"], options["subset_docs"])
        base = {"pipeline": self.name, "task": options["task"], "collection": str(input_path),
                "encoder": dict(self.info["encoder"]), "reranker": dict(self.info["reranker"]),
                "emulated": self.info["encoder"]["emulated"], "models": dict(self.info["models"])}
        if options["subset_docs"] and options["task"] != "embed":
            base["subset"] = {"docs": len(col.doc_ids), "queries": len(col.queries),
                              "other_docs": options["subset_docs"], "corpus_sha256": col.corpus_sha256}
        if options["task"] == "embed":
            return {**base, **self._embed(col, options), "total_ms": round((time.perf_counter() - t0) * 1e3, 2)}
        idx = self._build_index(col, options)
        doc_text = dict(zip(col.doc_ids, col.doc_texts)) if options["rerank"] else None
        base["index"] = {**idx["info"], "reused": idx["reused"]}
        base["bm25"] = {"k1": options["bm25_k1"], "b": options["bm25_b"], "library": "bm25s"}
        base["fusion"] = {"method": options["fusion"], "candidates": options["candidates"], "top_k": options["top_k"],
                          **({"rrf_k": options["rrf_k"]} if options["fusion"] == "rrf" else {"alpha": options["alpha"]})}
        if options["task"] == "search":
            if not options["query"].strip():
                raise BadInput("task=search needs a non-empty query option", 'pass e.g. --option "query=heat transfer"')
            ranks, ms, trunc = self._query(idx, options["query"], options, doc_text)
            return {**base, "query": options["query"], "truncated": trunc,
                    "results": {m: [{"id": d, "score": round(s, 6)} for d, s in r] for m, r in ranks.items()},
                    "stages": self._stages({k: [v] for k, v in ms.items()}),
                    "total_ms": round((time.perf_counter() - t0) * 1e3, 2)}
        return {**base, **self._evaluate(col, idx, options, doc_text),
                "total_ms": round((time.perf_counter() - t0) * 1e3, 2)}

    def _stages(self, ms: dict[str, list[float]]) -> dict:
        enc = self.info["encoder"]
        backends = {"tokenize": "tokenizers", "inference": enc["backend"], "normalize": "numpy",
                    "vector_search": "numpy", "bm25": "bm25s", "merge": "python", "rerank": "onnx", "total": "-"}
        out = {}
        for s in STAGES:
            if s == "pooling":
                out[s] = {"backend": enc["backend"], "fused_into": "inference", "p50_ms": None, "p90_ms": None,
                          "mean_ms": None}
            elif s == "rerank" and not ms.get("rerank"):
                out[s] = {"backend": None, "absent": True, "reason": self.info["reranker"].get("reason", "rerank=false"),
                          "p50_ms": None, "p90_ms": None, "mean_ms": None}
            else:
                out[s] = {"backend": backends[s], **_pct(ms.get(s, []))}
        out["inference"].update(artifact=enc["artifact"], emulated=enc["emulated"], emulation=enc.get("emulation"))
        return out

    def _evaluate(self, col: Collection, idx: dict, options: dict, doc_text) -> dict:
        judged = col.judged_queries()
        cap = options["max_queries"]
        chosen = judged[:cap] if cap else judged
        runs = {m: {} for m in MODES}
        ms_all: dict[str, list[float]] = {}
        truncated, per = [], []
        for qid, text in chosen:
            ranks, ms, trunc = self._query(idx, text, options, doc_text)
            if trunc:
                truncated.append(qid)
            for m in MODES:
                runs[m][qid] = [d for d, _ in ranks[m]]
            for k, v in ms.items():
                ms_all.setdefault(k, []).append(v)
            if options["per_query"]:
                per.append({"id": qid, "ms": {k: round(v, 3) for k, v in ms.items()},
                            **({"truncated": True} if trunc else {}),
                            "top": {m: runs[m][qid] for m in MODES}})
        metrics = {}
        for m in MODES:
            ev = ir_metrics.evaluate(runs[m], col.qrels)
            metrics[m] = {**{k: round(v, 6) for k, v in ev["means"].items()}, "queries": ev["queries"]}
        total = _pct(ms_all.get("total", []))
        out = {
            "queries": {"total": len(col.queries), "judged": len(judged), "evaluated": len(chosen),
                        "capped": len(judged) - len(chosen),
                        "unjudged": [q for q, _ in col.queries if q not in {j for j, _ in judged}],
                        "truncated": truncated, "truncated_count": len(truncated), "max_tokens": MAX_TOKENS},
            "qrels": {"pairs": sum(len(v) for v in col.qrels.values()),
                      "unknown": [{"query": q, "doc": d, "relevance": r, "why": w} for q, d, r, w in col.unknown_qrels]},
            "blank_lines": col.blank_lines,
            "metrics": metrics,
            "stages": self._stages(ms_all),
            "latency": {"n": total["n"], "p50_ms": total["p50_ms"], "p90_ms": total["p90_ms"],
                        "max_ms": round(max(ms_all.get("total", [0.0])), 3),
                        **({"unreported": total["unreported"]} if "unreported" in total else {})},
        }
        if options["per_query"]:
            out["per_query"] = per
        return out

    def _embed(self, col: Collection, options: dict) -> dict:
        n = options["limit"]
        items = [("query", q, t) for q, t in col.judged_queries()[:n]]
        items += [("doc", d, t) for d, t in zip(col.doc_ids, col.doc_texts) if t][:n]
        vecs, trunc = [], []
        for _kind, i, text in items:
            v, _, tr = self.embedder.embed_query(text)
            vecs.append([round(float(x), 7) for x in v])
            if tr:
                trunc.append(i)
        return {"items": [{"kind": k, "id": i, "text": t} for k, i, t in items], "embeddings": vecs,
                "truncated": trunc, "dim": len(vecs[0]) if vecs else 0}
