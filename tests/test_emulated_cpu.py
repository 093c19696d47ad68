"""Suites on boards whose CPU is emulated (issue 14 §3; fleet.runner.emulation): latency never
VALID there, the smoke selection in suite.yml, board labels in the store and `fleet results`,
`fleet doctor`'s cpu check, and the rag.hybrid small collection. No board needed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fleet.doctor.checks import FAIL, OK, check_info, expected_of
from fleet.errors import FleetError
from fleet.inventory import Board
from fleet.measure.protocol import MeasurementConfig, Protocol, decide_validity
from fleet.runner import emulation
from fleet.runner.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
BASE = "pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n"


def _board(**kw) -> Board:
    return Board("a64", "pi5-hailo8l", "hailo8l", True, "/opt/fleet", "h", 22, "root", **kw)


def _suite(tmp_path, text):
    d = tmp_path / "suites" / "s"
    d.mkdir(parents=True)
    (d / "suite.yml").write_text(text)
    (d / "test_s.py").write_text("def test_s():\n    pass\n")
    return load_suite(d)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _measure(cpu_emulated: str, cfg: MeasurementConfig):
    clock = Clock()

    def q(item):
        clock.t += 0.5
        return {"total_ms": 500.0}

    return Protocol(cfg, clock=clock, cpu_emulated=cpu_emulated).run([1, 2], q)


def test_emulated_cpu_is_never_valid():
    cfg = MeasurementConfig(warmup=0, min_queries=2)
    m = _measure("qemu-user", cfg)
    assert not m.valid and m.reasons == ["CPU emulated by qemu-user"] and m.invalid_only_by_emulation
    assert m.to_dict()["cpu_emulated"] == "qemu-user" and m.to_dict()["verdict"] == "INVALID"
    native = _measure("", cfg)
    assert native.valid and not native.invalid_only_by_emulation and native.to_dict()["cpu_emulated"] is None
    # another broken rule: INVALID for both reasons, and not "only by emulation"
    slow = _measure("qemu-user", MeasurementConfig(warmup=0, min_queries=2, min_duration_s=60, max_duration_s=1.0))
    assert len(slow.reasons) == 3 and slow.reasons[0] == "CPU emulated by qemu-user" and not slow.invalid_only_by_emulation
    valid, reasons, _ = decide_validity(5, 10.0, None, cfg, cpu_emulated="qemu-user")
    assert not valid and reasons == ["CPU emulated by qemu-user"]


def test_judge_measurement_skips_only_for_emulation():
    b = _board(cpu_emulated="qemu-user")
    with pytest.raises(pytest.skip.Exception, match=r"latency not judged on a64: INVALID measurement \(CPU emulated by qemu-user\)"):
        emulation.judge_measurement(_measure("qemu-user", MeasurementConfig(warmup=0, min_queries=2)), b)
    with pytest.raises(pytest.fail.Exception, match="INVALID measurement on a64: CPU emulated by qemu-user; max_duration_s 1 s reached"):
        emulation.judge_measurement(_measure("qemu-user", MeasurementConfig(warmup=0, min_queries=2, min_duration_s=60, max_duration_s=1.0)), b)
    emulation.judge_measurement(_measure("", MeasurementConfig(warmup=0, min_queries=2)), _board())  # VALID: returns
    with pytest.raises(pytest.skip.Exception, match="throughput not judged on a64"):
        emulation.not_judged(b, "throughput")
    emulation.not_judged(_board(), "throughput")


def test_shipped_suites_declare_smoke_selections():
    w = load_suite(ROOT / "suites" / "whisper_hybrid")
    emu, native = _board(arch="aarch64", cpu_emulated="qemu-user"), _board()
    assert w.uses_smoke(emu) and not w.uses_smoke(native) and w.uses_smoke(native, forced=True)
    items = w.dataset_items(smoke=True)
    assert [i["id"] for i in items] == w.smoke_ids() and len(items) == 2
    assert len(w.dataset_items()) == 20
    m = w.measurement_for(True)
    assert (m.warmup, m.min_queries, m.min_duration_s) == (0, 2, 0.0) and m.start_temp_max_c == w.measurement.start_temp_max_c
    assert w.measurement_for(False) is w.measurement
    assert w.arm_parity_bounds_for(emu) == {"wer_delta_max": 0.09}
    # the smoke clips are in the data set's deployable smoke selection (fleet deploy --datasets speech:smoke)
    from fleet.datasets.catalog import get_dataset

    deployable = {Path(e.path).stem for e in get_dataset("speech").selected("smoke")}
    assert set(w.smoke_ids()) <= deployable
    for name in ("rag_embedder", "voice_conversion", "model_bench"):
        assert load_suite(ROOT / "suites" / name).smoke, name
    vc = load_suite(ROOT / "suites" / "voice_conversion")
    assert set(vc.smoke_ids()) <= deployable
    mb = load_suite(ROOT / "suites" / "model_bench")
    assert mb.options_for(True)["samples"] == 2 and mb.options_for(False)["samples"] == 8


@pytest.mark.parametrize("bad, needle", [
    ("smoke: {itemz: [a]}\n", "unknown key 'smoke.itemz'"),
    ("smoke: {items: []}\n", "smoke.items"),
    ("smoke: {options: {threads: many}}\n", "smoke.options.threads"),
    ("smoke: {options: {bogus: 1}}\n", "unknown option 'smoke.options.bogus'"),
    ("smoke: {measurement: {min_queries: 0}}\n", "smoke.measurement.min_queries must be >= 1"),
    ("smoke: {measurement: {max_queries: 3}}\n", "unknown key 'smoke.measurement.max_queries'"),
    ("measurement: {min_duration_s: 5}\nsmoke: {measurement: {max_duration_s: 2}}\n", "max_duration_s"),
    ("arm_parity: {bounds: {emulated: {wer_max: 0}}}\n", "unknown key 'arm_parity.bounds.emulated.wer_max'"),
])
def test_bad_smoke_blocks_name_the_problem(tmp_path, bad, needle):
    with pytest.raises(FleetError) as e:
        _suite(tmp_path, BASE + bad)
    assert needle in str(e.value)


def test_unknown_smoke_item_names_it(tmp_path):
    s = _suite(tmp_path, BASE + "smoke: {items: [jfk, nope]}\n")
    with pytest.raises(FleetError, match="smoke item\\(s\\) nope not in data set speech"):
        s.dataset_items(smoke=True)
    assert [i["id"] for i in s.select_items([{"id": "nope"}, {"id": "jfk"}], smoke=True)] == ["jfk", "nope"]
    plain = _suite(tmp_path / "p", BASE)
    assert not plain.uses_smoke(_board(cpu_emulated="qemu-user"))  # no smoke: declared: the full suite


def test_board_labels():
    w = load_suite(ROOT / "suites" / "whisper_hybrid")
    lab = emulation.board_labels(_board(arch="aarch64", cpu_emulated="qemu-user"), w)
    assert lab == {"arch": "aarch64", "cpu_emulated": "qemu-user",
                   "selection": {"name": "smoke", "items": w.smoke_ids(), "why": "CPU emulated by qemu-user"}}
    assert emulation.board_labels(_board(), w)["selection"] == {"name": "full"}
    assert emulation.board_labels(_board(), w, forced=True)["selection"]["why"] == "fleet test --smoke"
    with pytest.raises(pytest.skip.Exception, match="x86_64"):
        emulation.require_arm(_board(arch="x86_64"))
    assert emulation.require_arm(_board(), {"cpu": {"machine": "aarch64"}}) == "aarch64"


def test_results_show_the_labels(tmp_path, capsys):
    from fleet.results.cli import cmd_results, summarize
    from fleet.results.store import Result, Store

    db = tmp_path / "r.db"
    st = Store(db)
    st.start_run("r1", "whisper_hybrid")
    w = load_suite(ROOT / "suites" / "whisper_hybrid")
    info = {"cpu": {"machine": "aarch64"},
            **emulation.board_labels(_board(arch="aarch64", cpu_emulated="qemu-user"), w)}
    st.add_board("r1", "sim-pi5-a64-1", "pi5-hailo8l", "hailo8l", True, info)
    st.add_result(Result(run_id="r1", board="sim-pi5-a64-1", test="test_latency", outcome="skipped",
                         message="latency not judged", duration_s=1.0, emulated=True, finished=1.0))
    st.finish_run("r1", "passed")
    st.close()
    st = Store(db, read_only=True)
    data = summarize(st, "r1")
    (b,) = data["boards"]
    assert (b["arch"], b["cpu_emulated"], b["selection"]["name"]) == ("aarch64", "qemu-user", "smoke")
    assert data["run"]["smoke"] == ["sim-pi5-a64-1"]
    st.close()
    cmd_results(argparse.Namespace(run="r1", db=str(db), json=False, telemetry=False, csv=None))
    out = capsys.readouterr().out
    assert "SMOKE SELECTION" in out and "aarch64 CPU qemu-user" in out
    assert "sim-pi5-a64-1 aarch64, CPU emulated by qemu-user: latency INVALID, never judged; smoke selection" in out


def _info(machine: str) -> dict:
    return {"cpu": {"model": "Cortex-A76", "count": 4, "machine": machine},
            "stack": {"os": {"name": "Debian GNU/Linux 12 (bookworm)"}, "kernel": {"release": "6.1", "machine": machine},
                      "python": {"version": "3.11.2"}, "agent": {"version": "x"}, "accelerator": "hailo8l",
                      "emulated": True}}


def test_doctor_fingerprints_arch_and_emulation():
    b = _board(arch="aarch64", cpu_emulated="qemu-user")
    (cpu,) = [f for f in check_info(_info("aarch64"), expected_of(b)) if f.check == "cpu"]
    assert cpu.status == OK and cpu.detail.startswith("aarch64 (Cortex-A76 x4); CPU emulated by qemu-user")
    (bad,) = [f for f in check_info(_info("x86_64"), expected_of(b)) if f.check == "cpu"]
    assert bad.status == FAIL and "inventory arch aarch64" in bad.detail and "arch: x86_64" in bad.fix
    (plain,) = [f for f in check_info(_info("x86_64"), expected_of(_board())) if f.check == "cpu"]
    assert plain.status == OK and "emulated" not in plain.detail


def test_rag_small_collection(tmp_path):
    from device_agent.rag.collection import load_collection, sub_collection

    d = tmp_path / "c"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n"
                                            for i in range(10)))
    (d / "queries.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(3)))
    (d / "qrels.tsv").write_text("q0\td7\t1\nq1\td8\t1\nq2\td9\t1\n")
    col = load_collection(d)
    sub = sub_collection(col, 2, 3)
    assert sub.doc_ids == ["d0", "d1", "d2", "d7", "d8"] and [q for q, _ in sub.queries] == ["q0", "q1"]
    assert sub.qrels == {"q0": {"d7": 1}, "q1": {"d8": 1}} and sub.corpus_sha256 != col.corpus_sha256
    assert sub.doc_texts[3] == col.doc_texts[7]


def test_fleet_test_smoke_reaches_the_plugin(monkeypatch):
    """`fleet test --smoke` passes --fleet-smoke to pytest (the plugin's ``smoke`` fixture)."""
    import fleet.runner.cli as runner_cli
    from fleet.cli import main

    calls = []

    def fake_run_suite(*a, **kw):
        calls.append(kw.get("smoke"))
        raise SystemExit(0)

    monkeypatch.setattr(runner_cli, "run_suite", fake_run_suite)
    for argv, want in ((["test", "suites/whisper_hybrid", "--smoke"], True), (["test", "suites/whisper_hybrid"], False)):
        with pytest.raises(SystemExit):
            main(argv)
        assert calls[-1] is want
