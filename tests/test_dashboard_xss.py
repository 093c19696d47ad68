"""Hostile strings in the results store are shown as text, never run: the dashboard (every page) and
the static `fleet report` file, checked in Debian's chromium (Playwright, /usr/bin/chromium).

Test names, board names, per-item outputs (ASR hypothesis/reference), metric names and units,
failure messages, backends and the suite name carry payloads (<script>, <img onerror>, "><svg
onload>, a javascript: URL, a mathtext `$`); each page must fire no dialog, leave
``window.__pwned`` undefined, log no console error (the dashboard's CSP would log one for any
injected inline script), hold no <script>, no on* attribute and no javascript: link, and show the
payload text literally. Also: the dashboard refuses writes (405) and binds 127.0.0.1 by default.
Screenshots go to $FLEET_TEST_ARTIFACTS (default runs/test-artifacts)/dashboard-xss.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fleet.dashboard.server import make_server
from fleet.results.store import Metric, Result, Store

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

SCRIPT = "<script>window.__pwned=1;alert(1)</script>"
IMG = '<img src=x onerror="window.__pwned=1;alert(2)">'
SVG = '"><svg onload=window.__pwned=1>'
JS_URL = "javascript:window.__pwned=1"
MATH = "$\\pwned{x}$ & 100%"        # matplotlib would parse $…$ as mathtext and raise

SUITE = f"whisper{SCRIPT}"
BOARD = f"pi5{SVG}"
BOARD2 = JS_URL
TEST = f"test_wer{IMG} {MATH}"
METRIC = f"wer{SCRIPT}"
MESSAGE = f"assert {SVG} {SCRIPT} {IMG} failed"
HYP = f"the {SCRIPT} cat {IMG}"
REF = f"the cat {JS_URL}"
RUNS = ("20260101-000000-aa00", "20260101-010000-aa01")
#: payloads that must appear, literally, in each page's visible text
SHOWN = {
    "fleet": [BOARD, BOARD2, SUITE],
    "run": [BOARD, BOARD2, TEST, METRIC, SUITE],
    "test": [TEST, MESSAGE, HYP.split(" cat ")[0] + " cat", REF.split("cat ")[1], METRIC],
    "trends": [SUITE, METRIC],
    "compare": [BOARD, TEST, METRIC],
    "report": [BOARD, BOARD2, TEST, METRIC, MESSAGE, SUITE],
}


def _trace(t0: float, n: int = 6) -> dict:
    return {"t0": t0, "rate_hz": 10.0, "decimated": 1, "t": [i * 0.1 for i in range(n)], "errors": {},
            "channels": [{"name": f"temp{SCRIPT}", "unit": "°C", "kind": "temperature", "emulated": True},
                         {"name": f"power{IMG}", "unit": "W", "kind": "power", "emulated": True}],
            "values": {f"temp{SCRIPT}": [40.0 + i for i in range(n)], f"power{IMG}": [3.0] * n}}


def build_hostile_store(path: Path) -> None:
    s = Store(path)
    try:
        for k, run_id in enumerate(RUNS):
            s.start_run(run_id, SUITE, inventory=f"inv{SCRIPT}.yml")
            s.set_run_times(run_id, started=1_767_225_600.0 + 3600 * k)
            for name in (BOARD, BOARD2):
                s.add_board(run_id, name, f"pi5-hailo8l{IMG}", "hailo8l", True,
                            {"doctor": {"status": f"pass{SCRIPT}", "failures": [], "ignored": False},
                             "stack": {"os": {"name": f"Debian{SVG}"}}})
                s.add_result(Result(
                    run_id, name, TEST, "failed", message=MESSAGE, duration_s=3.0, emulated=True,
                    backends={f"encoder{SVG}": f"onnx{SCRIPT}"},
                    outputs=[{"id": f"clip{IMG}", "reference": REF, "hypothesis": HYP, "total_ms": 300.0 + k,
                              f"note{SVG}": MATH}],
                    metrics=[Metric(METRIC, 0.1 + 0.01 * k, f"ratio{IMG}", "lower"),
                             Metric(f"latency{MATH}", 500.0 + k, "ms", "lower")],
                    telemetry=[{"label": f"clip{SCRIPT}", "summary": {}, "trace": _trace(1_767_225_600.0)}],
                    telemetry_summary={"summary": {}, "measurement": {"verdict": f"INVALID{SCRIPT}",
                                                                      "valid": False,
                                                                      "reasons": [f"too hot {IMG}"]}}))
            s.finish_run(run_id, "failed")
    finally:
        s.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("xss")
    db = d / "r.db"
    build_hostile_store(db)
    srv = make_server(db, port=0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield {"base": f"http://127.0.0.1:{srv.server_port}", "db": db, "dir": d, "srv": srv}
    srv.shutdown()
    srv.server_close()


def q(v) -> str:
    return urllib.parse.quote(v, safe="")


def pages() -> dict[str, str]:
    a, b = RUNS
    return {"fleet": "/", "run": f"/run/{b}", "test": f"/run/{b}/test/{q(BOARD)}/{q(TEST)}",
            "trends": f"/trends?suite={q(SUITE)}&metric={q(METRIC)}", "compare": f"/compare?a={a}&b={b}"}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def test_pages_serve_escaped_html(hostile):
    """Every page renders (a payload must not crash it) and no payload reaches the HTML raw."""
    for name, path in pages().items():
        status, body = _get(hostile["base"] + path)
        assert status == 200, name
        for raw in ("<script", "<img src=x", "<svg onload", 'href="javascript:'):
            assert raw not in body, (name, raw)
        assert "&lt;script&gt;window.__pwned=1;alert(1)&lt;/script&gt;" in body, name


def test_dashboard_refuses_writes(hostile):
    before = hostile["db"].read_bytes()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        req = urllib.request.Request(hostile["base"] + f"/run/{RUNS[1]}", data=b"outcome=passed", method=method)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 405, method
        assert "read-only" in e.value.read().decode()
    assert hostile["db"].read_bytes() == before


def test_binds_localhost_by_default(hostile):
    from fleet.cli import build_parser

    assert build_parser().parse_args(["dashboard"]).host == "127.0.0.1"
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    assert hostile["srv"].server_address[0] == "127.0.0.1"
    # the real command, on a free port: it says where it listens, and that is loopback only
    p = subprocess.Popen([sys.executable, "-m", "fleet.cli", "dashboard", "--db", str(hostile["db"]),
                          "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert line.startswith("fleet dashboard on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        deadline = time.time() + 20
        while True:
            try:
                assert _get(f"http://127.0.0.1:{port}/")[0] == 200
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        listening = {ln.split()[1] for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if ln.split()[3] == "0A"}                     # state 0A = LISTEN
        assert f"0100007F:{port:04X}" in listening             # 127.0.0.1, little-endian hex
        assert f"00000000:{port:04X}" not in listening         # not 0.0.0.0
    finally:
        p.terminate()
        p.wait(timeout=10)


def _write_report(hostile) -> Path:
    out = hostile["dir"] / "report" / "x.html"
    p = subprocess.run([sys.executable, "-m", "fleet.cli", "report", RUNS[1], "--db", str(hostile["db"]),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return out


_PROBE = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (a.name.toLowerCase().startsWith('on')) bad.push(el.tagName + '[' + a.name + ']');
      if (['href', 'src', 'action', 'xlink:href'].includes(a.name.toLowerCase())
          && a.value.trim().toLowerCase().startsWith('javascript:')) bad.push(el.tagName + '[' + a.name + ']');
    }
  }
  return {pwned: typeof window.__pwned, scripts: document.scripts.length, bad: bad,
          text: document.body.innerText};
}"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
def test_in_chromium_nothing_runs_and_payloads_show_as_text(hostile):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = _write_report(hostile)
    html = report.read_text()
    assert "<script" not in html and "<img src=x" not in html
    shots = Path(os.environ.get("FLEET_TEST_ARTIFACTS", "runs/test-artifacts")) / "dashboard-xss"
    shots.mkdir(parents=True, exist_ok=True)
    targets = {name: hostile["base"] + path for name, path in pages().items()}
    targets["report"] = report.as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs, errors = [], []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for name, url in targets.items():
                resp = page.goto(url, wait_until="load")
                if name != "report":
                    assert resp.status == 200, name
                page.wait_for_timeout(200)  # give an injected onerror/onload the chance to fire
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                got = page.evaluate(_PROBE)
                assert got["pwned"] == "undefined", name
                assert got["scripts"] == 0 and got["bad"] == [], (name, got["bad"])
                for text in SHOWN[name]:
                    assert text in got["text"], (name, text)
                assert dialogs == [] and errors == [], (name, dialogs, errors)
        finally:
            browser.close()


def test_a_page_that_fails_says_so_escaped_and_the_server_lives_on(tmp_path):
    """A stored value the views cannot read (corrupt outputs JSON) gives a 500 page, not a dropped
    connection, and the other pages keep working."""
    import sqlite3

    db = tmp_path / "r.db"
    build_hostile_store(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE results SET outputs_json=? WHERE run_id=?", ("{<script>", RUNS[1]))
    con.commit()
    con.close()
    srv = make_server(db, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(base + f"/run/{RUNS[1]}")
        body = e.value.read().decode()
        assert e.value.code == 500 and "this page failed" in body and "<script" not in body
        assert _get(base + f"/run/{RUNS[0]}")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
