"""The dashboard over a store with a 3-board run: HTTP-level checks, then Debian's chromium driven
headless by Playwright (executable /usr/bin/chromium; `playwright install` is never used).
Screenshots go to $FLEET_TEST_ARTIFACTS (default runs/test-artifacts/dashboard)."""

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleet.dashboard.server import make_server
from fleet.report.sample import build_sample_store

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "r.db"
    store, ids = build_sample_store(db, runs=5)
    store.close()
    srv = make_server(db, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_port}", ids
    srv.shutdown()
    srv.server_close()


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def test_pages_and_read_only(dash):
    base, ids = dash
    run = ids[-1]
    for path in ("/", f"/run/{run}", f"/run/{run}/test/sim-pi5-1/test_latency", "/trends",
                 "/trends?suite=whisper_hybrid&metric=wer", f"/compare?a={ids[0]}&b={run}"):
        status, body = _get(base + path)
        assert status == 200 and body.startswith("<!DOCTYPE html>"), path
    assert 'data-outcome="failed"' in _get(f"{base}/run/{run}")[1]
    for path in ("/run/nope", "/elsewhere"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(base + path)
        assert e.value.code == 404
    req = urllib.request.Request(base + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_default_bind_is_localhost():
    from fleet.cli import build_parser

    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port) == ("127.0.0.1", 8765)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)")
def test_in_chromium(dash):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, ids = dash
    run = ids[-1]
    shots = Path(os.environ.get("FLEET_TEST_ARTIFACTS", "runs/test-artifacts")) / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            pages = {"fleet": "/", "run": f"/run/{run}", "test": f"/run/{run}/test/sim-pi5-1/test_latency",
                     "trends": "/trends?suite=whisper_hybrid&metric=latency_p50_ms",
                     "compare": f"/compare?a={ids[-2]}&b={run}"}
            for name, path in pages.items():
                resp = page.goto(base + path, wait_until="load")
                assert resp.status == 200, path
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                if name == "fleet":
                    assert page.locator("#fleet tr[data-board]").count() == 3
                if name == "run":
                    cell = lambda b, t: page.locator(f'#matrix td[data-board="{b}"][data-test="{t}"]')
                    assert cell("sim-pi5-1", "test_wer").get_attribute("data-outcome") == "passed"
                    assert cell("sim-pi5-2", "test_latency").get_attribute("data-outcome") == "failed"
                    assert cell("sim-rk3588-1", "test_wer").get_attribute("data-outcome") == "error"
                    # the cell's colour comes from its outcome class
                    bg = cell("sim-pi5-2", "test_latency").evaluate("e => getComputedStyle(e).backgroundColor")
                    assert bg == "rgb(255, 215, 213)"
                    cell("sim-pi5-1", "test_latency").locator("a").click()
                    page.wait_for_load_state("load")
                    assert "/test/sim-pi5-1/test_latency" in page.url
                if name == "test":
                    plot = page.locator(".plot.telemetry svg")
                    assert plot.count() == 1
                    box = plot.bounding_box()
                    assert box and box["width"] > 300 and box["height"] > 150
                    assert page.locator(".plot.telemetry svg path").count() > 10  # lines, windows, axes drawn
                if name == "trends":
                    assert page.locator(".plot.trend svg").count() == 1
            assert errors == []
        finally:
            browser.close()


def test_bad_port_and_port_in_use_are_messages(tmp_path, capsys):
    """`--port 99999` is refused by the parser; a port already in use is exit 2 naming it: no traceback."""
    import socket

    from fleet.cli import main
    from fleet.results.store import Store

    assert main(["dashboard", "--db", str(tmp_path / "none.db")]) == 2   # read-only: no store is created
    assert "no results store at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
    Store(tmp_path / "r.db").close()
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--port", "99999"])
    assert e.value.code == 2 and "'99999' is not a TCP port" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "--db", str(tmp_path / "r.db"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"fleet: error: port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err
