"""Converters from public SMART-format IR collections to the fleet collection format.

The fleet format (docs/contracts.md §5, read by ``device_agent.rag.collection``): ``corpus.jsonl``
``{"id", "title", "text"}`` a line, ``queries.jsonl`` ``{"id", "text"}``, ``qrels.tsv``
``query_id<TAB>doc_id<TAB>gain`` (no header, every row relevant, higher = more relevant).

SMART files (Salton's SMART system; the Glasgow IR group's test collections) are records opened
by ``.I <id>`` and split into fields by marker lines ``.T`` (title), ``.A`` (authors), ``.B``
(bibliographic note), ``.W`` (text), ``.X`` (citations) and others. Every converter writes the
same bytes the catalog records (``fleet datasets fetch`` checks each sha256): whitespace
collapsed to single spaces, case and punctuation kept, ``json.dumps`` with its default
separators, one record a line in file order.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from fleet.errors import FleetError

_MARKER = re.compile(r"^\.([A-Z])(?:\s+(\S+))?\s*$")


def smart_records(text: str, sticky_text: bool = False) -> list[tuple[str, dict[str, list[str]]]]:
    """Split a SMART file into records: [(id, {field letter: lines})], in file order.

    Args:
        sticky_text: once a record's ``.W`` starts, later marker lines are dropped and their text
            stays in ``.W``. Cranfield needs it: docs 240, 576 and 578 carry stray ``.A``/``.B``/
            ``.W`` lines inside their abstracts (README of the cranfield data set).

    Raises:
        FleetError: text before the first ``.I`` line.
    """
    records: list[tuple[str, dict[str, list[str]]]] = []
    fields: dict[str, list[str]] | None = None
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line)
        if m and m.group(1) == "I":
            fields, current = {}, None
            records.append((m.group(2) or "", fields))
            continue
        if fields is None:
            if line.strip():
                raise FleetError(f"SMART file: line {n} comes before the first .I record", "check the archive")
            continue
        if m and not (sticky_text and current == "W"):
            current = m.group(1)
            fields.setdefault(current, [])
        elif not m and current is not None:
            fields[current].append(line)
    return records


def _field(fields: dict[str, list[str]], key: str) -> str:
    return " ".join(" ".join(fields.get(key, [])).split())


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _member(archive: Path, name: str) -> str:
    """The text of one member of a .tar.gz (UTF-8; these collections are ASCII)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            f = tar.extractfile(name)
            if f is None:
                raise KeyError(name)
            return f.read().decode("utf-8")
    except (KeyError, tarfile.TarError, UnicodeDecodeError) as e:
        raise FleetError(f"{archive.name}: cannot read member {name}: {e}",
                         "the archive is not the one the catalog records; delete it and fetch again") from None


def _qrel_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def cranfield(sources: dict[str, Path], out: Path) -> None:
    """cran.tar.gz (``cran.all.1400``, ``cran.qry``, ``cranqrel``) into corpus.jsonl, queries.jsonl,
    qrels.tsv and qrels_original.tsv in ``out``.

    Query ids are the 1-based position in ``cran.qry``, as ``cranqrel`` numbers them (the ``.I``
    labels are gappy: 001, 002, 004 …). ``cranqrel``'s codes follow ``cranqrel.readme`` (1 =
    complete answer … 4 = minimum interest); qrels.tsv turns them into a gain ``5 - code`` and
    drops code -1 (each query's source paper, undefined in the readme); qrels_original.tsv keeps
    every raw row.
    """
    arc = sources["cran.tar.gz"]
    docs = smart_records(_member(arc, "cran.all.1400"), sticky_text=True)
    queries = smart_records(_member(arc, "cran.qry"), sticky_text=True)
    rel = _qrel_rows(_member(arc, "cranqrel"))
    (out / "corpus.jsonl").write_bytes(_jsonl({"id": i, "title": _field(f, "T"), "text": _field(f, "W")}
                                              for i, f in docs))
    (out / "queries.jsonl").write_bytes(_jsonl({"id": str(n), "text": _field(f, "W")}
                                               for n, (_, f) in enumerate(queries, 1)))
    (out / "qrels.tsv").write_bytes("".join(f"{q}\t{d}\t{5 - int(c)}\n" for q, d, c, *_ in rel
                                            if 1 <= int(c) <= 4).encode())
    (out / "qrels_original.tsv").write_bytes("".join(f"{q}\t{d}\t{c}\n" for q, d, c, *_ in rel).encode())


def cisi(sources: dict[str, Path], out: Path) -> None:
    """cisi.tar.gz (``CISI.ALL``, ``CISI.QRY``, ``CISI.REL``) into corpus.jsonl, queries.jsonl and
    qrels.tsv in ``out``. Ids as in the source; ``.A``, ``.B``, ``.X`` and the other fields are
    dropped; every ``CISI.REL`` pair is relevant (gain 1; its last two columns are constant)."""
    arc = sources["cisi.tar.gz"]
    docs = smart_records(_member(arc, "CISI.ALL"))
    queries = smart_records(_member(arc, "CISI.QRY"))
    rel = _qrel_rows(_member(arc, "CISI.REL"))
    (out / "corpus.jsonl").write_bytes(_jsonl({"id": i, "title": _field(f, "T"), "text": _field(f, "W")}
                                              for i, f in docs))
    (out / "queries.jsonl").write_bytes(_jsonl({"id": i, "text": _field(f, "W")} for i, f in queries))
    (out / "qrels.tsv").write_bytes("".join(f"{q}\t{d}\t1\n" for q, d, *_ in rel).encode())


#: converter name (a catalog entry's ``convert``) -> function(sources by path, output folder)
CONVERTERS: dict[str, Callable[[dict[str, Path], Path], None]] = {"cranfield": cranfield, "cisi": cisi}
