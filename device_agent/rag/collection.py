"""An IR test collection in the fleet format (docs/contracts.md §5, data sets):

    corpus.jsonl   {"id": str, "title": str, "text": str}   one object a line
    queries.jsonl  {"id": str, "text": str}
    qrels.tsv      query_id <TAB> doc_id <TAB> relevance     no header; int, higher = more relevant

Checks, each a BadInput naming file and line: files missing; bytes that are not UTF-8; a line
that is not a JSON object; an id missing, not a string/int, or repeated; a document with neither
``title`` nor ``text`` key; a query with no text; a qrels line without three tab/space separated
fields or with a non-integer relevance; qrels naming unknown query or doc ids (unless
``unknown_qrels="skip"``, which drops and lists them).

Nothing is dropped silently: documents whose title and text are both empty stay in the
collection (qrels may name them, e.g. Cranfield 995) but cannot be indexed; they are listed in
``empty_docs``. A corpus with no document or only empty ones is a BadInput. Blank lines are counted in ``blank_lines``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..protocol import BadInput

FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv")
_FIX_FORMAT = "see the collection format in docs/contracts.md §5 (data sets)"


@dataclass
class Collection:
    """A checked collection.

    Attributes:
        path: the folder.
        doc_ids: every document id, file order.
        doc_texts: the text indexed per document: ``title`` then ``text`` (the title is not
            repeated when ``text`` already starts with it, as in Cranfield).
        empty_docs: ids whose title and text are both empty (kept, never retrievable).
        queries: [(query id, text)], file order.
        qrels: query id -> {doc id: relevance (int)}.
        corpus_sha256: sha256 of corpus.jsonl's bytes (the embedding cache key).
        unknown_qrels: [(query id, doc id, relevance, why)] dropped under ``unknown_qrels="skip"``.
        blank_lines: blank lines seen per file.
    """

    path: Path
    doc_ids: list[str]
    doc_texts: list[str]
    empty_docs: list[str]
    queries: list[tuple[str, str]]
    qrels: dict[str, dict[str, int]]
    corpus_sha256: str
    unknown_qrels: list[tuple[str, str, int, str]] = field(default_factory=list)
    blank_lines: dict[str, int] = field(default_factory=dict)

    def judged_queries(self) -> list[tuple[str, str]]:
        """Queries with at least one relevant (relevance > 0) document, file order."""
        return [(q, t) for q, t in self.queries if any(r > 0 for r in self.qrels.get(q, {}).values())]


def sub_collection(col: Collection, max_queries: int, other_docs: int) -> Collection:
    """A small retrieval collection cut from ``col`` (a smoke run on a slow board): its first
    ``max_queries`` judged queries (0 = all), every document they judge (so each query keeps its
    relevant set and recall stays defined), plus the first ``other_docs`` other documents in file
    order as distractors. Metrics on it are not comparable with the full collection's (fewer
    distractors); ``corpus_sha256`` is keyed by the kept ids, so its embedding cache is its own.

    Args:
        col: the full collection.
        max_queries: judged queries kept (>= 0; 0 = all).
        other_docs: documents kept besides the judged ones (>= 0).
    """
    judged = col.judged_queries()
    chosen = judged[:max_queries] if max_queries else judged
    keep_q = {q for q, _ in chosen}
    wanted = {d for q in keep_q for d in col.qrels.get(q, {})}
    extra = [d for d in col.doc_ids if d not in wanted][:other_docs]
    keep = wanted | set(extra)
    idx = [i for i, d in enumerate(col.doc_ids) if d in keep]
    ids = [col.doc_ids[i] for i in idx]
    key = hashlib.sha256((col.corpus_sha256 + "\n" + "\n".join(ids)).encode()).hexdigest()
    return replace(col, doc_ids=ids, doc_texts=[col.doc_texts[i] for i in idx],
                   empty_docs=[d for d in col.empty_docs if d in keep],
                   queries=[(q, t) for q, t in col.queries if q in keep_q],
                   qrels={q: {d: r for d, r in col.qrels[q].items() if d in keep} for q in keep_q if q in col.qrels},
                   corpus_sha256=key)


def _lines(path: Path) -> tuple[list[tuple[int, str]], int, bytes]:
    """(line number, text) of the non-blank lines, the blank count and the raw bytes.

    Raises:
        BadInput: missing file, or bytes that are not UTF-8 (line and byte offset named).
    """
    if not path.is_file():
        raise BadInput(f"collection file {path} is missing",
                       f"a collection folder holds {', '.join(FILES)}; {_FIX_FORMAT}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise BadInput(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}: {e.reason})",
                       "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    out, blank = [], 0
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append((i, line))
        else:
            blank += 1
    return out, blank, raw


def _json_rows(path: Path) -> tuple[list[tuple[int, dict]], int, bytes]:
    lines, blank, raw = _lines(path)
    rows = []
    for i, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{i}: not JSON ({e.msg} at column {e.colno})", _FIX_FORMAT) from None
        if not isinstance(obj, dict):
            raise BadInput(f"{path}:{i}: a JSON {type(obj).__name__}, not an object", _FIX_FORMAT)
        rows.append((i, obj))
    return rows, blank, raw


def _id(path: Path, i: int, obj: dict, seen: set) -> str:
    v = obj.get("id")
    if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v).strip() == "":
        raise BadInput(f"{path}:{i}: missing or invalid \"id\" ({v!r})", "give every line a string id")
    v = str(v)
    if v in seen:
        raise BadInput(f"{path}:{i}: id {v!r} repeats an earlier line", "ids must be unique in a file")
    seen.add(v)
    return v


def _str_field(path: Path, i: int, obj: dict, key: str) -> str:
    v = obj.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadInput(f"{path}:{i}: \"{key}\" is a {type(v).__name__}, not a string", _FIX_FORMAT)
    return v


def doc_text(title: str, text: str) -> str:
    """What is indexed for a document: title and text joined by a space, without repeating a
    title that ``text`` already begins with. Whitespace-stripped."""
    title, text = title.strip(), text.strip()
    if title and text.lower().startswith(title.lower()):
        return text
    return f"{title} {text}".strip()


def load_collection(path: str | Path, unknown_qrels: str = "error") -> Collection:
    """Read and check a collection folder.

    Args:
        path: folder with corpus.jsonl, queries.jsonl, qrels.tsv.
        unknown_qrels: "error" (default: BadInput listing the unknown ids) or "skip" (drop those
            rows and list them in ``Collection.unknown_qrels``).

    Raises:
        BadInput: see the module docstring; every message names the file and line.
    """
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"collection {p} is not a folder",
                       f"pass a folder holding {', '.join(FILES)} (e.g. data/cranfield)")
    cfile, qfile, rfile = (p / f for f in FILES)
    docs, blank_c, raw = _json_rows(cfile)
    if not docs:
        raise BadInput(f"{cfile} has no documents" + (f" (only {blank_c} blank lines)" if blank_c else " (empty file)"),
                       'write one document a line: {"id": "1", "title": "…", "text": "…"}; ' + _FIX_FORMAT)
    seen: set = set()
    doc_ids, texts, empty = [], [], []
    for i, obj in docs:
        did = _id(cfile, i, obj, seen)
        if "title" not in obj and "text" not in obj:
            raise BadInput(f"{cfile}:{i}: document {did!r} has neither \"title\" nor \"text\"",
                           "give it a text (an empty string marks a known-empty document)")
        t = doc_text(_str_field(cfile, i, obj, "title"), _str_field(cfile, i, obj, "text"))
        doc_ids.append(did)
        texts.append(t)
        if not t:
            empty.append(did)
    if len(empty) == len(doc_ids):
        # nothing to index: the vector and BM25 indexes would be empty (bm25s raises on that)
        raise BadInput(f"{cfile}: all {len(doc_ids)} documents are empty (no title or text)",
                       'fill in "title"/"text"; an empty document is only allowed beside indexable ones')
    qrows, blank_q, _ = _json_rows(qfile)
    if not qrows:
        raise BadInput(f"{qfile} has no queries", _FIX_FORMAT)
    qseen: set = set()
    queries = []
    for i, obj in qrows:
        qid = _id(qfile, i, obj, qseen)
        if "text" not in obj:
            raise BadInput(f"{qfile}:{i}: query {qid!r} has no \"text\"", _FIX_FORMAT)
        qt = _str_field(qfile, i, obj, "text").strip()
        if not qt:
            raise BadInput(f"{qfile}:{i}: query {qid!r} has an empty text",
                           "remove the query or give it a text")
        queries.append((qid, qt))
    rlines, blank_r, _ = _lines(rfile)
    qrels: dict[str, dict[str, int]] = {}
    unknown: list[tuple[str, str, int, str]] = []
    dset = set(doc_ids)
    for i, line in rlines:
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 3:
            raise BadInput(f"{rfile}:{i}: expected query_id<TAB>doc_id<TAB>relevance, got {line!r}",
                           _FIX_FORMAT)
        qid, did, rel_s = (x.strip() for x in parts)
        try:
            rel = int(rel_s)
        except ValueError:
            raise BadInput(f"{rfile}:{i}: relevance {rel_s!r} is not an integer", _FIX_FORMAT) from None
        why = " and ".join(w for w, bad in (("query id", qid not in qseen), ("doc id", did not in dset)) if bad)
        if why:
            unknown.append((qid, did, rel, f"{rfile.name}:{i}: unknown {why}"))
            continue
        if did in qrels.get(qid, {}):
            raise BadInput(f"{rfile}:{i}: ({qid}, {did}) is judged twice", "keep one judgement per pair")
        qrels.setdefault(qid, {})[did] = rel
    if unknown and unknown_qrels != "skip":
        shown = "; ".join(f"{w} ({q}, {d})" for q, d, _, w in unknown[:5])
        raise BadInput(f"{rfile}: {len(unknown)} judgement(s) name ids not in the collection: {shown}"
                       + (" …" if len(unknown) > 5 else ""),
                       "fix the ids, or pass option unknown_qrels=skip to drop and list them")
    return Collection(path=p, doc_ids=doc_ids, doc_texts=texts, empty_docs=empty, queries=queries,
                      qrels=qrels, corpus_sha256=hashlib.sha256(raw).hexdigest(), unknown_qrels=unknown,
                      blank_lines={"corpus.jsonl": blank_c, "queries.jsonl": blank_q, "qrels.tsv": blank_r})
