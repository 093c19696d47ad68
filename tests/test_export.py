import http.server
import json
import re
import threading

import pytest

from fleet.cli import main
from fleet.errors import FleetError
from fleet.report.sample import build_sample_store
from fleet.results import export

# text format 0.0.4 sample line: name{labels} value
LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\} \S+$')


@pytest.fixture
def store(tmp_path):
    s, ids = build_sample_store(tmp_path / "r.db", runs=6)
    return s, ids


def test_metric_name_sanitized():
    assert export.metric_name("energy/inf (J)") == "fleet_energy_inf__J_"
    assert export.metric_name("1x", prefix="") == "_1x"


def test_prometheus_text_is_valid_exposition(store):
    s, ids = store
    text = export.prometheus_text(s, ids[-1])
    seen_families = []
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            seen_families.append(line.split()[2])
            assert line.endswith(" gauge")
        elif not line.startswith("#"):
            assert LINE.match(line), line
    assert len(seen_families) == len(set(seen_families))  # each family once, contiguous
    p50 = [l for l in text.splitlines() if l.startswith("fleet_latency_p50_ms{") and 'board="sim-pi5-1"' in l]
    assert len(p50) == 1
    for lab in ('suite="whisper_hybrid"', f'run="{ids[-1]}"', 'unit="ms"', 'emulated="true"'):
        assert lab in p50[0]
    assert 'fleet_test_outcome{board="sim-rk3588-1"' in text and 'outcome="error"' in text
    assert 'unit="°C"' in text


def test_label_escaping():
    assert export._label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_metrics_json_has_units_direction_and_regressions(store, tmp_path):
    s, ids = store
    p = export.write_metrics_json(s, ids[-1], tmp_path / "out" / "metrics.json")
    doc = json.loads(p.read_text())
    assert doc["schema"] == 1 and doc["run"]["id"] == ids[-1]
    assert {b["name"] for b in doc["boards"]} == {"sim-pi5-1", "sim-pi5-2", "sim-rk3588-1"}
    m = next(m for r in doc["results"] if r["board"] == "sim-pi5-1" and r["test"] == "test_wer"
             for m in r["metrics"] if m["name"] == "wer")
    assert m == {"name": "wer", "value": 0.0298, "unit": "ratio", "direction": "lower"}
    assert [(r["board"], r["metric"]) for r in doc["regressions"] if r["status"] == "regression"] == \
        [("sim-pi5-1", "latency_p50_ms"), ("sim-pi5-1", "latency_p90_ms")]
    with pytest.raises(FleetError):
        export.metrics_json(s, "nope")


def test_push_to_pushgateway(store):
    s, ids = store
    got = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            got["path"] = self.path
            got["ctype"] = self.headers["Content-Type"]
            got["body"] = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        text = export.prometheus_text(s, ids[-1])
        url = f"http://127.0.0.1:{srv.server_port}"
        assert export.push(text, url, grouping={"suite": "whisper_hybrid"}) == 200
        assert got["path"] == "/metrics/job/fleet/suite/whisper_hybrid"
        assert got["ctype"].startswith("text/plain; version=0.0.4")
        assert got["body"] == text
        assert export._grouping_part("suite", "a/b") == "/suite@base64/YS9i"
    finally:
        srv.shutdown()
    with pytest.raises(FleetError):
        export.push(text, "http://127.0.0.1:9", timeout=2)


def test_cli(store, tmp_path, capsys):
    s, ids = store
    db = str(s.path)
    assert main(["results", ids[-1], "--db", db, "--prometheus"]) == 0
    assert "# TYPE fleet_wer gauge" in capsys.readouterr().out
    out = tmp_path / "m.json"
    assert main(["results", ids[-1], "--db", db, "--metrics-json", str(out)]) == 0
    assert json.loads(out.read_text())["run"]["id"] == ids[-1]
    assert main(["results", ids[-1], "--db", db, "--regressions"]) == 0
    assert "regression" in capsys.readouterr().out
    assert main(["results", ids[-1], "--db", db, "--regressions", "--fail-on-regression"]) == 1
    capsys.readouterr()
    assert main(["results", ids[-1], "--db", db, "--regressions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["status"] == "regression" and r["metric"] == "latency_p50_ms" for r in rows)
