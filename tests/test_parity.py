"""Parity (fleet.models.parity, the agent's ``parity`` op, ``fleet models parity``): the fp32
reference against a target's real static QDQ INT8 emulation model, on evaluation-side data."""

from __future__ import annotations

import json

import pytest
from emulation_artifacts import REPO, shared_root

from device_agent.agent import Agent
from device_agent.config import load_config
from device_agent.protocol import Request
from fleet.cli import main
from fleet.deploy.local import lay_out_board
from fleet.errors import FleetError
from fleet.models.calibration import in_calibration_split, split_key
from fleet.models.parity import eval_clips, run_parity

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    return shared_root(tmp_path_factory)


def test_whisper_parity_emulated_hailo8l(emu):
    res = run_parity("whisper-tiny.en", "hailo8l", emu, clips=3)
    assert res["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    assert res["candidate"]["artifact"] == "encoder_npu.int8.onnx"
    assert res["reference"]["artifact"] == "encoder.onnx" and res["reference"]["precision"] == "fp32"
    out = res["outputs"]["encoder_out"]
    assert out["n"] >= 3 and 0.98 <= out["cosine_min"] <= out["cosine_mean"] < 1.0  # INT8: close, not equal
    assert out["max_abs_err"] > 0
    t = res["task"]
    assert t["metric"] == "wer" and t["clips"] == 3 and abs(t["wer_delta"]) <= 0.05
    assert t["wer_reference"] < 0.15  # real transcription, not garbage
    # stored in the manifest entry of the emulation model
    doc = json.loads((emu / "manifest.json").read_text())
    e = next(e for e in doc["artifacts"] if e["target"] == "hailo8l" and e["model"] == "whisper-tiny.en")
    assert e["parity"]["task"]["wer_delta"] == t["wer_delta"] and e["parity"]["emulation"] == res["emulation"]


def test_eval_clips_never_calibrated_on():
    clips = eval_clips()
    assert clips and not any(in_calibration_split(split_key("speech", "clip", c["id"])) for c in clips)


def test_minilm_parity_cosine(emu):
    res = run_parity("minilm-l6-v2", "hailo8l", emu, texts=16, task_metric=False, store=False)
    out = res["outputs"]["sentence_embedding"]
    assert out["n"] == 16 and out["cosine_min"] >= 0.985 and out["cosine_mean"] < 1.0
    assert res["stored"] is False and res["task"] == {}


def test_target_without_its_build_is_an_error(emu):
    with pytest.raises(FleetError) as e:
        run_parity("whisper-tiny.en", "rk3588", emu, clips=1)
    assert "fleet models build whisper-tiny.en --target rk3588" in e.value.fix
    assert "cpu int8-dynamic fallback" in e.value.message
    with pytest.raises(FleetError, match="no parity recipe"):
        run_parity("resnet50", "cpu", emu)
    with pytest.raises(FleetError, match="unknown target"):
        run_parity("minilm-l6-v2", "tpu", emu)


def test_parity_op_refuses_bad_requests(emu, tmp_path):
    root = lay_out_board(tmp_path / "b", emu, board="pi5-hailo8l", accelerator="hailo8l", emulated=True,
                         models=("minilm-l6-v2",))
    agent = Agent(load_config(root), sensors=[])

    def err(args):
        rep = agent.handle(Request(1, "parity", args))
        assert not rep.ok
        return rep.error

    assert err({"pipeline": "rag.hybrid"})["type"] == "BadInput"
    assert "at most" in err({"pipeline": "rag.hybrid", "inputs": ["x"] * 300})["message"]
    assert "no parity check" in err({"pipeline": "asr.nope", "inputs": ["x"]})["message"]
    assert "not a non-empty text" in err({"pipeline": "rag.hybrid", "inputs": ["ok", ""]})["message"]
    rep = agent.handle(Request(2, "parity", {"pipeline": "rag.hybrid", "inputs": ["boundary layer flow"]}))
    assert rep.ok and rep.result["candidate"]["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    assert rep.result["board"] == {"board": "pi5-hailo8l", "accelerator": "hailo8l", "emulated": True}
    agent.close()


def test_cli_json(emu, capsys):
    rc = main(["models", "parity", "whisper-tiny.en", "--target", "hailo8l", "--artifacts", str(emu),
               "--clips", "1", "--json", "--no-store"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "hailo8l" and res["task"]["clips"] == 1 and res["stored"] is False
    rc = main(["models", "parity", "whisper-tiny.en", "--target", "rk3588", "--artifacts", str(emu)])
    assert rc == 3 and "--target rk3588" in capsys.readouterr().err


def test_suite_parity_bounds_are_checked(tmp_path):
    from fleet.runner.suite import load_suite

    s = load_suite(REPO / "suites" / "whisper_hybrid")
    assert s.parity["bounds"]["emulated"]["wer_delta_max"] is not None
    d = tmp_path / "s"
    d.mkdir()
    (d / "test_s.py").write_text("")
    base = "pipeline: rag.hybrid\nmodel: minilm-l6-v2\ndataset: cranfield\n"
    for block, msg in (("parity: {inputs: 4, bound: {}}", "unknown key 'parity.bound'"),
                       ("parity: {bounds: {emulated: {cos_min: 0.9}}}", "unknown key 'parity.bounds.emulated.cos_min'"),
                       ("parity: {bounds: {tpu: {cosine_min: 0.9}}}", "unknown key 'parity.bounds.tpu'"),
                       ("parity: {inputs: 0}", "parity.inputs"),
                       ("parity: {bounds: {emulated: {cosine_min: yes}}}", "must be a number")):
        (d / "suite.yml").write_text(base + block + "\n")
        with pytest.raises(FleetError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            load_suite(d)
    (d / "suite.yml").write_text(base + "parity: {inputs: 4, bounds: {emulated: {cosine_min: 0.99}}}\n")
    assert load_suite(d).parity == {"inputs": 4, "bounds": {"emulated": {"cosine_min": 0.99}}}


def test_crepe_pitch_parity_in_cents():
    """CREPE (vc.pitch_shift's pitch stage): the cpu build's static QDQ INT8 model against fp32 on
    two evaluation clips; pitch error in cents from the same decoder."""
    from fleet.paths import artifacts_dir

    if not (artifacts_dir() / "cpu" / "crepe-tiny").is_dir():
        pytest.fail("crepe-tiny is not built: fleet models build crepe-tiny")
    res = run_parity("crepe-tiny", "cpu", clips=2, store=False)
    assert res["stage"] == "pitch" and res["emulation"] == "cpu int8-static-qdq-per-channel"
    out, t = res["outputs"]["salience"], res["task"]
    assert 0.99 <= out["cosine_min"] < 1.0
    # measured on 11 clips: median 0.76 cents, p95 8.1 cents, 0.4 % of voiced frames over 50 cents
    assert t["metric"] == "pitch_cents" and t["voiced_frames"] > 100
    assert t["median_abs_cents"] < 5 and t["over_50_cents"] < 0.02


class InProcessSession:
    """``fleet.remote.session.AgentSession.request`` over an in-process agent (no SSH)."""

    def __init__(self, agent):
        self.agent = agent

    def request(self, op, args=None, timeout_s=None):
        rep = self.agent.handle(Request(1, op, args or {}))
        assert rep.ok, rep.error
        return rep


def test_suite_parity_check_records_and_enforces_bounds(emu, tmp_path):
    """fleet.runner.parity_check, as suites' test_npu_parity use it: a real parity op result on an
    emulated board recorded with its label, then held to suite.yml bounds."""
    from fleet.inventory import Board
    from fleet.runner.parity_check import record_and_check, request_parity
    from fleet.runner.plugin import Recorder
    from fleet.runner.suite import load_suite

    suite = load_suite(REPO / "suites" / "rag_embedder")
    root = lay_out_board(tmp_path / "b", emu, board="pi5-hailo8l", accelerator="hailo8l", emulated=True,
                         models=(suite.model,))
    b = Board(name="sim-pi5-1", board="pi5-hailo8l", accelerator="hailo8l", emulated=True,
              fleet_root=str(root), host="192.0.2.1", port=22, user="fleet")
    agent = Agent(load_config(root), sensors=[])
    try:
        r = request_parity(b, InProcessSession(agent), suite, ["boundary layer flow", "heat transfer at mach 5"])
    finally:
        agent.close()
    rec = Recorder()
    record_and_check(b, suite, rec, r, stage="inference", output="embedding", inputs="2 texts",
                     metrics={"parity_recall_delta": (0.0, "ratio", "higher")})
    assert [(m.name, m.unit, m.direction) for m in rec.metrics] == [
        ("parity_cosine_mean", "ratio", "higher"), ("parity_cosine_min", "ratio", "higher"),
        ("parity_max_abs_err", "", "lower"), ("parity_recall_delta", "ratio", "higher")]
    emulation = "onnxruntime static QDQ INT8 (hailo8l)"
    assert rec.backends == {"inference": "onnx", "inference_reference": "onnx fp32", "emulation": emulation}
    assert rec.outputs[0]["parity"] == f"emulation: {emulation}" and rec.emulated is True
    # every missed bound is listed; a bound on a metric the test does not record fails too
    suite.parity["bounds"]["emulated"] = {"cosine_min": 1.01, "cosine_mean_min": None, "max_abs_err_max": 0.0,
                                          "wer_delta_max": 0.01}
    with pytest.raises(AssertionError) as ei:
        record_and_check(b, suite, Recorder(), r, stage="inference", output="embedding", inputs="2 texts")
    msg = str(ei.value)
    assert msg.startswith(f"parity (emulation: {emulation}) on sim-pi5-1, 2 texts: embedding cosine min ")
    assert "< 1.01" in msg and "embedding max abs err" in msg and "> 0.0" in msg and "cosine mean" not in msg
    assert "parity.bounds sets wer_delta_max but this test records no parity_wer_delta" in msg
    cpu = Board(name="c", board="cpu", accelerator="cpu", emulated=False, fleet_root="/opt/fleet",
                host="192.0.2.2", port=22, user="fleet")
    with pytest.raises(pytest.skip.Exception, match="c has no NPU"):
        request_parity(cpu, None, suite, ["x"])
