import re
from html.parser import HTMLParser

from fleet.cli import main
from fleet.report.html import render_report, word_diff
from fleet.report.sample import build_sample_store


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.external, self.scripts = {}, [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-outcome" in a:
            self.cells[(a["data-board"], a["data-test"])] = a["data-outcome"]
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not v.startswith(("#", "data:")):
                self.external.append(v)
        if tag == "script":
            self.scripts += 1


def test_word_diff_marks_errors_and_escapes():
    h = word_diff("one two three four five", "one three for five six <x>")
    assert "<del class=err title=deleted>two</del>" in h
    assert "<span class=sub title=substituted><del class=err>four</del> <ins class=err>for</ins></span>" in h
    assert "<ins class=err title=inserted>six &lt;x&gt;</ins>" in h


def test_report_is_self_contained_and_right(tmp_path):
    store, ids = build_sample_store(tmp_path / "r.db", runs=6)
    html = render_report(store, ids[-1])
    p = _Collect()
    p.feed(html)
    assert p.external == [] and p.scripts == 0  # opens offline: no external asset, no script
    assert p.cells[("sim-pi5-1", "test_wer")] == "passed"
    assert p.cells[("sim-pi5-2", "test_latency")] == "failed"
    assert p.cells[("sim-rk3588-1", "test_wer")] == "error"
    # plots: one run-level latency histogram, per test_wer a histogram, per test_latency a telemetry plot
    assert html.count("<svg") == 1 + 3 + 3
    assert html.count('class="plot telemetry"') == 3
    # the store's strings are escaped (sample clip 3 has <b>"quoted"</b> & in its text)
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert "regression" in html and "latency_p50_ms" in html
    assert "emulated" in html and "infrastructure: board lost" in html


def test_report_cli(tmp_path):
    store, ids = build_sample_store(tmp_path / "r.db", runs=2)
    out = tmp_path / "ci" / "report.html"
    assert main(["report", "--db", str(store.path), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and ids[-1] in text
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", text)


def test_report_out_folder_and_failed_write_leave_nothing(tmp_path, monkeypatch, capsys):
    """`--out EXISTING_DIR` is refused before anything is read or written; a write that fails
    (here the final rename) is exit 3 with the path, and no temp file is left beside it."""
    import os

    store, ids = build_sample_store(tmp_path / "r.db", runs=1)
    store.close()
    out = tmp_path / "out"
    out.mkdir()
    assert main(["report", "--db", str(tmp_path / "r.db"), "--out", str(out)]) == 2
    assert f"--out {out} is a folder, not an HTML file" in capsys.readouterr().err
    assert list(out.iterdir()) == []

    def no_rename(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)
    assert main(["report", "--db", str(tmp_path / "r.db"), "--out", str(out / "r.html")]) == 3
    err = capsys.readouterr().err
    assert f"cannot write the report {out / 'r.html'}: Permission denied" in err and "fix: " in err
    assert list(out.iterdir()) == []
