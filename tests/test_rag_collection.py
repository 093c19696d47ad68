"""device_agent.rag.collection: the real collections load with the counts their READMEs give, and
bad input (empty or missing documents, non-UTF-8 text, qrels naming unknown ids, malformed lines)
gets a clear BadInput naming file and line, or is kept and counted — never dropped silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device_agent.protocol import BadInput
from device_agent.rag.collection import doc_text, load_collection
from fleet.datasets.local import require

REPO = Path(__file__).resolve().parents[1]
CRANFIELD, CISI = require("cranfield"), require("cisi")  # in the data root ($FLEET_DATA)


def test_cranfield_counts():
    c = load_collection(CRANFIELD)
    assert (len(c.doc_ids), len(c.queries)) == (1400, 225)
    assert sum(len(v) for v in c.qrels.values()) == 1612
    assert c.empty_docs == ["471", "995"]          # README quirk 5: kept, listed
    assert len(c.judged_queries()) == 225
    assert c.qrels["1"]["184"] == 3                   # graded, higher = more relevant
    assert c.unknown_qrels == [] and len(c.corpus_sha256) == 64
    # Cranfield's text repeats the title: it is not indexed twice
    assert c.doc_texts[0].startswith("experimental investigation of the aerodynamics of a wing in a slipstream .")
    assert c.doc_texts[0].count("experimental investigation of the aerodynamics") == 1


def test_cisi_counts():
    c = load_collection(CISI)
    assert (len(c.doc_ids), len(c.queries), sum(len(v) for v in c.qrels.values())) == (1460, 112, 3114)
    assert len(c.judged_queries()) == 76 and c.empty_docs == []


def test_doc_text():
    assert doc_text("A title", "body") == "A title body"
    assert doc_text("A title", "a title. body") == "a title. body"
    assert doc_text("", "") == ""


def write_col(root: Path, docs, queries, qrels: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels.tsv").write_text(qrels)
    return root


DOCS = [{"id": "1", "title": "wing flutter", "text": "flutter of wings at high speed"},
        {"id": "2", "title": "", "text": ""},
        {"id": "3", "title": "heat transfer", "text": "heat transfer in slabs"}]
QUERIES = [{"id": "q1", "text": "wing flutter"}, {"id": "q2", "text": "heat"}]


def test_empty_document_kept_and_listed(tmp_path):
    c = load_collection(write_col(tmp_path / "c", DOCS, QUERIES, "q1\t1\t2\nq2\t3\t1\nq2\t2\t1\n"))
    assert c.empty_docs == ["2"] and c.doc_ids == ["1", "2", "3"]
    assert c.qrels["q2"] == {"3": 1, "2": 1}  # a judgement of an empty doc stays (it counts as missed)


def test_document_without_text_fields(tmp_path):
    d = write_col(tmp_path / "c", [*DOCS, {"id": "4"}], QUERIES, "q1\t1\t1\n")
    with pytest.raises(BadInput, match=r"corpus.jsonl:4: document '4' has neither \"title\" nor \"text\""):
        load_collection(d)


def test_missing_files(tmp_path):
    d = write_col(tmp_path / "c", DOCS, QUERIES, "q1\t1\t1\n")
    (d / "qrels.tsv").unlink()
    with pytest.raises(BadInput, match="qrels.tsv is missing"):
        load_collection(d)
    with pytest.raises(BadInput, match="is not a folder"):
        load_collection(tmp_path / "nowhere")
    e = write_col(tmp_path / "e", [], QUERIES, "")
    with pytest.raises(BadInput, match="has no documents"):
        load_collection(e)


def test_non_utf8_text(tmp_path):
    d = write_col(tmp_path / "c", DOCS, QUERIES, "q1\t1\t1\n")
    raw = (d / "corpus.jsonl").read_bytes().replace(b"high speed", b"high sp\xe9ed")  # latin-1 é
    (d / "corpus.jsonl").write_bytes(raw)
    with pytest.raises(BadInput, match=r"corpus.jsonl:1: not UTF-8 \(byte 0xe9 at offset \d+") as e:
        load_collection(d)
    assert "iconv" in e.value.fix


def test_qrels_unknown_ids_error_then_skip(tmp_path):
    d = write_col(tmp_path / "c", DOCS, QUERIES, "q1\t1\t1\nq1\t99\t1\nq7\t1\t1\n")
    with pytest.raises(BadInput, match=r"2 judgement\(s\) name ids not in the collection: "
                                       r"qrels.tsv:2: unknown doc id \(q1, 99\); qrels.tsv:3: unknown query id"):
        load_collection(d)
    c = load_collection(d, unknown_qrels="skip")
    assert c.qrels == {"q1": {"1": 1}}
    assert [(q, doc) for q, doc, _, _ in c.unknown_qrels] == [("q1", "99"), ("q7", "1")]


@pytest.mark.parametrize("qrels, match", [
    ("q1\t1\n", r"qrels.tsv:1: expected query_id<TAB>doc_id<TAB>relevance"),
    ("q1\t1\thigh\n", r"qrels.tsv:1: relevance 'high' is not an integer"),
    ("q1\t1\t1\nq1\t1\t2\n", r"qrels.tsv:2: \(q1, 1\) is judged twice"),
])
def test_malformed_qrels(tmp_path, qrels, match):
    with pytest.raises(BadInput, match=match):
        load_collection(write_col(tmp_path / "c", DOCS, QUERIES, qrels))


@pytest.mark.parametrize("queries, match", [
    ([{"id": "q1", "text": "  "}], r"queries.jsonl:1: query 'q1' has an empty text"),
    ([{"id": "q1", "text": "a"}, {"id": "q1", "text": "b"}], r"queries.jsonl:2: id 'q1' repeats"),
    ([{"text": "a"}], r"queries.jsonl:1: missing or invalid \"id\""),
])
def test_bad_queries(tmp_path, queries, match):
    with pytest.raises(BadInput, match=match):
        load_collection(write_col(tmp_path / "c", DOCS, queries, ""))


def test_not_json_line_and_blank_lines_counted(tmp_path):
    d = write_col(tmp_path / "c", DOCS, QUERIES, "q1\t1\t1\n\n")
    c = load_collection(d)
    assert c.blank_lines["qrels.tsv"] == 1
    (d / "corpus.jsonl").write_text((d / "corpus.jsonl").read_text() + "{not json\n")
    with pytest.raises(BadInput, match=r"corpus.jsonl:4: not JSON"):
        load_collection(d)


def test_real_collection_copy_with_a_broken_byte(tmp_path):
    """A real collection with one corrupted byte fails with the line of that document."""
    d = tmp_path / "cran"
    shutil.copytree(CRANFIELD, d)
    (d / "corpus.jsonl").chmod(0o644)
    raw = bytearray((d / "corpus.jsonl").read_bytes())
    line_starts = [0] + [i + 1 for i, b in enumerate(raw) if b == 0x0A]
    raw[line_starts[99] + 30] = 0xFF  # inside document line 100
    (d / "corpus.jsonl").write_bytes(bytes(raw))
    with pytest.raises(BadInput, match=r"corpus.jsonl:100: not UTF-8"):
        load_collection(d)
