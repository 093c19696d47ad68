"""JUnit XML derived from the results store (never computed separately).

Infrastructure problems are ``<error>``, test failures ``<failure>``, as JUnit consumers (GitHub,
GitLab, Jenkins) expect. Metrics go into each test case's ``<properties>``.

A test case is named by its key in the store (``test_retrieval_quality[cisi]``: name and
parameters, see :class:`fleet.results.store.Result`) and its classname is
``<suite>.<board>.<module>`` (``rag_embedder.pi5-a.test_rag_embedder``), so a viewer that groups by
class shows each board's tests per test file, and no two cases of a run share classname and name.
Rows stored before node ids were kept have no module: ``<suite>.<board>``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from fleet.results.store import Store


def classname(suite: str, r) -> str:
    """``<suite>.<board>.<module without .py, "/" as ".">``, or ``<suite>.<board>`` when the result
    has no node id (``r``: a :class:`fleet.results.store.Result`)."""
    module = r.module.removesuffix(".py").replace("/", ".")
    return f"{suite}.{r.board}" + (f".{module}" if module else "")


def write_junit(store: Store, run_id: str, path: str | Path) -> Path:
    """Write the run's results as JUnit XML (one testsuite per board) to ``path`` atomically.

    Returns:
        the path written.
    """
    run = store.run(run_id) or {}
    root = ET.Element("testsuites", name=f"fleet {run.get('suite', '')}", run=run_id)
    by_board: dict[str, list] = {}
    for r in store.results(run_id):
        by_board.setdefault(r.board, []).append(r)
    boards = {b["name"]: b for b in store.boards(run_id)}
    for board, results in sorted(by_board.items()):
        ts = ET.SubElement(
            root, "testsuite", name=f"{run.get('suite', '')}[{board}]", tests=str(len(results)),
            failures=str(sum(r.outcome == "failed" for r in results)),
            errors=str(sum(r.outcome == "error" for r in results)),
            skipped=str(sum(r.outcome in ("skipped", "not-run") for r in results)),
            time=f"{sum(r.duration_s for r in results):.3f}",
        )
        props = ET.SubElement(ts, "properties")
        b = boards.get(board, {})
        for k in ("board", "accelerator", "emulated"):
            ET.SubElement(props, "property", name=k, value=str(b.get(k, "")))
        ET.SubElement(props, "property", name="run_id", value=run_id)
        for r in results:
            tc = ET.SubElement(ts, "testcase", classname=classname(run.get("suite", ""), r), name=r.test,
                               time=f"{r.duration_s:.3f}")
            if r.metrics or r.backends:
                tp = ET.SubElement(tc, "properties")
                for m in r.metrics:
                    ET.SubElement(tp, "property", name=f"{m.name}[{m.unit}]", value=f"{m.value:.6g}")
                for stage, be in r.backends.items():
                    ET.SubElement(tp, "property", name=f"backend.{stage}", value=str(be))
            if r.outcome == "failed":
                ET.SubElement(tc, "failure", message=r.message[:500]).text = r.message
            elif r.outcome == "error":
                ET.SubElement(tc, "error", message=r.message[:500], type="infrastructure").text = r.message
            elif r.outcome == "skipped":
                ET.SubElement(tc, "skipped", message=r.message[:500])
            elif r.outcome == "not-run":  # e.g. the board was leased by another run
                ET.SubElement(tc, "skipped", message=f"not-run: {r.message}"[:500], type="not-run")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
    return path
