import http.server
import json
import re
import threading

import pytest

from fleet.cli import main
from fleet.errors import FleetError
from fleet.report.sample import build_sample_store
from fleet.results import export
from fleet.results.store import Metric, Result, Store

# text format 0.0.4 sample line: name{labels} value
LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\} \S+$')


@pytest.fixture
def store(tmp_path):
    s, ids = build_sample_store(tmp_path / "r.db", runs=6)
    return s, ids


def test_metric_name_sanitized():
    assert export.metric_name("energy/inf (J)") == "fleet_energy_inf__J_"
    assert export.metric_name("1x", prefix="") == "_1x"


@pytest.mark.parametrize("name, unit, value, want", [
    ("latency_p50_ms", "ms", 812.0, ("fleet_latency_p50_seconds", 0.812)),
    ("index_embed_s", "s", 3.5, ("fleet_index_embed_seconds", 3.5)),
    ("energy_per_inference_j", "J", 2.0, ("fleet_energy_per_inference_joules", 2.0)),
    ("power_mean_w", "W", 4.5, ("fleet_power_mean_watts", 4.5)),
    ("temp_max_c", "°C", 41.0, ("fleet_temp_max_celsius", 41.0)),
    ("wer", "ratio", 0.08, ("fleet_wer", 0.08)),
    ("throttle_events", "count", 2.0, ("fleet_throttle_events", 2.0)),
    ("f0_rmse_cents", "cents", 12.0, ("fleet_f0_rmse_cents", 12.0)),  # not a base unit: kept as said
    ("snr", "dB", 30.0, ("fleet_snr_db", 30.0)),
    ("ms", "ms", 5.0, ("fleet_ms_seconds", 0.005)),  # a bare unit name is not stripped to nothing
])
def test_base_units(name, unit, value, want):
    got = export.base_unit(name, unit, value)
    assert got[0] == want[0] and got[1] == pytest.approx(want[1])


def _families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_text_is_valid_exposition_in_base_units(store):
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
    fams = _families(text)  # prometheus_client's own parser reads it back
    stored = {(r.board, r.test, m.name): m.value for r in s.results(ids[-1]) for m in r.metrics}
    p50 = [x for x in fams["fleet_latency_p50_seconds"].samples if x.labels["board"] == "sim-pi5-1"]
    assert len(p50) == 1
    assert p50[0].value == pytest.approx(stored[("sim-pi5-1", "test_latency", "latency_p50_ms")] / 1e3)
    assert p50[0].labels == {"suite": "whisper_hybrid", "board": "sim-pi5-1", "accelerator": "hailo8l",
                             "test": "test_latency"}
    assert "fleet_latency_p50_ms" not in fams and "fleet_energy_per_inference_joules" in fams
    assert "fleet_temp_max_celsius" in fams and "fleet_wer" in fams
    outcome = {(x.labels["board"], x.labels["test"]): x.labels["outcome"] for x in fams["fleet_test_outcome"].samples}
    assert outcome[("sim-rk3588-1", "test_wer")] == "error" and outcome[("sim-pi5-2", "test_latency")] == "failed"
    durations = {x.labels["test"]: x.value for x in fams["fleet_test_duration_seconds"].samples}
    assert durations == {"test_wer": 12.0, "test_latency": 14.0}
    # the run id is on the info metric only: no unbounded label on the result series
    assert text.count(ids[-1]) == 1
    (info,) = fams["fleet_run_info"].samples
    assert info.name == "fleet_run_info" and info.labels["run_id"] == ids[-1] and info.value == 1
    boards = {x.labels["board"]: x.labels for x in fams["fleet_board_info"].samples}
    assert boards["sim-rk3588-1"]["accelerator"] == "rk3588" and boards["sim-pi5-1"]["emulated"] == "true"
    for name, fam in fams.items():
        if name not in ("fleet_run_info", "fleet_board_info", "fleet_run_start_time_seconds", "fleet_run_duration_seconds"):
            for x in fam.samples:
                assert set(x.labels) - {"outcome"} == {"suite", "board", "accelerator", "test"}, (name, x)
    with pytest.raises(FleetError):
        export.prometheus_text(s, "nope")


def test_a_parametrised_test_gives_one_series_per_parameter(tmp_path):
    s = Store(tmp_path / "p.db")
    run = s.new_run("rag")
    for coll, v in (("cranfield", 0.41), ("cisi", 0.17)):
        s.add_result(Result(run, "b1", f"test_retrieval_quality[{coll}]", "passed",
                            metrics=[Metric("hybrid_ndcg_at_10", v, "ratio", "higher")]))
    got = {x.labels["test"]: x.value for x in _families(export.prometheus_text(s, run))["fleet_hybrid_ndcg_at_10"].samples}
    assert got == {"test_retrieval_quality[cranfield]": 0.41, "test_retrieval_quality[cisi]": 0.17}
    s.close()


def test_metrics_json_has_units_direction_and_regressions(store, tmp_path):
    s, ids = store
    p = export.write_metrics_json(s, ids[-1], tmp_path / "out" / "metrics.json")
    doc = json.loads(p.read_text())
    assert doc["schema"] == 1 and doc["run"]["id"] == ids[-1]
    assert doc["run"]["started"].endswith("Z") and "T" in doc["run"]["started"]  # ISO 8601 UTC
    assert {b["name"] for b in doc["boards"]} == {"sim-pi5-1", "sim-pi5-2", "sim-rk3588-1"}
    m = next(m for r in doc["results"] if r["board"] == "sim-pi5-1" and r["test"] == "test_wer"
             for m in r["metrics"] if m["name"] == "wer")
    assert m == {"name": "wer", "value": 0.0298, "unit": "ratio", "direction": "lower"}
    assert [(r["board"], r["metric"]) for r in doc["regressions"] if r["status"] == "regression"] == \
        [("sim-pi5-1", "latency_p50_ms"), ("sim-pi5-1", "latency_p90_ms")]
    with pytest.raises(FleetError):
        export.metrics_json(s, "nope")


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A loopback Pushgateway: records each request; replies with the class's ``status``."""

    got: list = []
    status = 200

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.got.append({"method": self.command, "path": self.path, "ctype": self.headers["Content-Type"],
                         "body": self.rfile.read(n).decode()})
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, *a):
        pass


@pytest.fixture
def gateway():
    handler = type("H", (_Gateway,), {"got": [], "status": 200})
    srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_push_to_pushgateway(store, gateway):
    s, ids = store
    handler, url = gateway
    n = export.push(s, ids[-1], url, grouping={"suite": "whisper_hybrid"})
    (req,) = handler.got
    assert req["method"] == "PUT"  # replaces the group's metrics
    assert req["path"] == "/metrics/job/fleet/suite/whisper_hybrid"
    assert req["ctype"].startswith("text/plain; version=0.0.4")
    assert req["body"] == export.prometheus_text(s, ids[-1])
    assert n == sum(len(f.samples) for f in _families(req["body"]).values())
    export.push(s, ids[-1], url, grouping={"suite": "a/b"})  # a "/" in a grouping value: base64 (URL-safe)
    assert handler.got[-1]["path"] == "/metrics/job/fleet/suite@base64/YS9i"


def test_push_errors_are_fleet_errors(store, gateway):
    s, ids = store
    handler, url = gateway
    handler.status = 400
    with pytest.raises(FleetError, match="refused the metrics: HTTP 400"):
        export.push(s, ids[-1], url)
    with pytest.raises(FleetError, match="cannot push to the Pushgateway"):
        export.push(s, ids[-1], "http://127.0.0.1:9", timeout=2)
    with pytest.raises(FleetError, match="no run"):
        export.push(s, "nope", url)


def test_cli_push(store, gateway, capsys):
    s, ids = store
    handler, url = gateway
    assert main(["results", ids[-1], "--db", str(s.path), "--prometheus", "--push", url]) == 0
    assert handler.got[-1]["path"] == "/metrics/job/fleet/suite/whisper_hybrid"
    assert "pushed" in capsys.readouterr().err


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
