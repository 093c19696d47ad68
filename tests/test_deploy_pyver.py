"""Boards whose Python is not 3.11: the board's Python gathered when the inventory does not say it,
the wheelhouse built for it, and a board whose Python cannot install a pinned dependency refused
before anything is copied (fleet.deploy.preflight).

The unit tests use a fake package index (``LOOKUP``: the versions with wheels per Python, as PyPI
listed them for manylinux_2_28_aarch64 on 2026-12-02); one slow test asks the real index; the
sim test deploys two x86 boards, one of them stated as Python 3.9.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fleet.deploy import plan as plan_mod
from fleet.deploy import preflight
from fleet.deploy.plan import make_plan
from fleet.deploy.wheelhouse import NoWheel, Wheelhouse
from fleet.inventory import Board

ROOT = Path(__file__).resolve().parents[1]
A64 = "manylinux_2_28_aarch64"

# name -> python -> versions with a wheel (newest first); what `pip index versions` answered
INDEX = {
    "onnxruntime": {"3.9": ["1.19.2", "1.19.0"], **{p: ["1.32.0", "1.31.1", "1.31.0"] for p in ("3.11", "3.12", "3.13", "3.14")},
                    "3.10": ["1.23.2"]},
    "pyworld-prebuilt": {p: ["0.3.6.post1"] for p in ("3.9", "3.10", "3.11", "3.12", "3.13")},
    "bm25s": {p: ["0.3.16"] for p in preflight.CANDIDATE_PYTHONS},
}


def LOOKUP(name, python, platform):  # noqa: N802 - a fake of preflight.index_versions
    return tuple(INDEX.get(name, {}).get(python, ("9.9",) if name not in INDEX else ()))


def test_parse_probe_finds_its_line_among_banners():
    assert preflight.parse_probe("Welcome to the board\r\nFLEET-PYTHON 3.13 aarch64\r\n") == ("3.13", "aarch64")
    assert preflight.parse_probe("python3: not found") is None


def test_probe_events_record_ok_unreachable_and_failed():
    handler, got = preflight.probe_events(["a", "b", "c", "d"])
    handler({"event": "runner_on_ok", "event_data": {"host": "a", "res": {"stdout": "FLEET-PYTHON 3.9 aarch64\n"}}})
    handler({"event": "runner_on_unreachable", "event_data": {"host": "b", "res": {"msg": "ssh: connect timed out"}}})
    handler({"event": "runner_on_failed", "event_data": {"host": "c", "res": {
        "stderr": "", "stdout": "/bin/sh: 1: /nonexistent/python3: not found\n", "msg": "non-zero return code"}}})
    assert (got["a"].status, got["a"].python_version, got["a"].machine) == ("ok", "3.9", "aarch64")
    assert got["b"].status == "unreachable" and "connect timed out" in got["b"].reason
    assert got["c"].status == "failed" and "/nonexistent/python3: not found" in got["c"].reason
    assert got["d"].status == "failed" and "reported nothing" in got["d"].reason


def test_python_39_board_is_refused_naming_package_python_and_what_works():
    no = preflight.refusal(ROOT, A64, "3.9", lookup=LOOKUP)
    text = no.reason("rk", "aarch64")
    assert text.startswith("refused before anything was copied: the board's Python 3.9 on manylinux_2_28_aarch64")
    assert "needs Python >=3.10 (pyproject.toml requires-python)" in text
    assert "no wheel of onnxruntime==1.31.1 (an agent dependency) for Python 3.9" in text
    assert "onnxruntime==1.31.1 has wheels for Python 3.11 to 3.14" in no.fix
    assert "the newest onnxruntime with a wheel for Python 3.9 is 1.19.2" in no.fix
    assert "a board Python of 3.11 to 3.14 would work (Debian 12 bookworm ships 3.11, Debian 13 trixie ships 3.13)" in no.fix
    assert "older pin alone is not enough" in no.fix
    assert "pyworld" not in text  # it has a cp39 wheel


def test_supported_python_is_not_refused_and_asks_no_index():
    asked = []
    assert preflight.refusal(ROOT, A64, "3.13", lookup=lambda *a: asked.append(a) or ()) is None
    assert asked == []  # the wheelhouse build decides; the index is asked only to explain a refusal


def test_missing_wheel_from_pip_on_an_allowed_python_offers_the_older_pin():
    e = NoWheel("no wheel", "fix", "onnxruntime==1.31.1", A64, "3.10")
    no = preflight.refusal(ROOT, A64, "3.10", no_wheel=e, lookup=LOOKUP)
    assert "no wheel of onnxruntime==1.31.1 (an agent dependency) for Python 3.10" in no.problems[0]
    assert "the newest onnxruntime with a wheel for Python 3.10 is 1.23.2" in no.fix
    assert "pin the older versions in pyproject.toml" in no.fix
    # the index unreachable: pip's word still names the package
    blind = preflight.refusal(ROOT, A64, "3.10", no_wheel=e, lookup=lambda *a: ())
    assert "no wheel of onnxruntime==1.31.1" in blind.problems[0]


def _board(name, **kw) -> Board:
    base = dict(name=name, board="rk3588", accelerator="rk3588", emulated=True, fleet_root="/opt/fleet",
                host="192.0.2.1", port=22, user="root")
    return Board(**{**base, **kw})


def test_plan_refuses_only_the_boards_whose_wheelhouse_cannot_exist(tmp_path, monkeypatch):
    """A 3.12 board whose wheelhouse build finds no wheel and a 3.9 board are refused (and never
    reach pip for 3.9); the 3.13 board, whose Python was gathered, is planned with its own wheelhouse."""
    from test_deploy import MODEL, make_artifacts

    built = []

    def fake_ensure(project, cache, platform, python_version):
        built.append(python_version)
        if python_version == "3.12":
            raise NoWheel("no wheel", "fix", "pyworld-prebuilt==0.3.6.post1", platform, python_version)
        d = tmp_path / f"wh-{python_version}"
        d.mkdir(exist_ok=True)
        (d / "fleet-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
        return Wheelhouse(platform, d, "fleet-0.1.0-py3-none-any.whl", f"{python_version}" * 20, rebuilt=True)

    monkeypatch.setattr(plan_mod, "ensure_wheelhouse", fake_ensure)
    monkeypatch.setattr(preflight, "index_versions", LOOKUP)
    boards = [_board("old", wheel_platform=A64, python_version="3.9"),
              _board("mid", wheel_platform=A64, python_version="3.12"),
              _board("new", wheel_platform=A64)]
    gathered = lambda bs: [b if b.python_version else replace(b, python_version="3.13") for b in bs]  # noqa: E731
    arts = make_artifacts(tmp_path / "artifacts")
    plan = make_plan(boards, project=ROOT, wheel_cache=tmp_path / "wh", bundle_cache=tmp_path / "bundles",
                     artifacts_dir=arts, datasets=(), models=(MODEL,), gather=gathered)
    assert sorted(plan.hosts) == ["new"] and sorted(plan.refused) == ["mid", "old"]
    assert sorted(built) == ["3.12", "3.13"]  # 3.9 is outside requires-python: no pip run at all
    assert "no wheel of pyworld-prebuilt==0.3.6.post1" in plan.refused["mid"].problems[0]
    assert "requires-python" in plan.refused["old"].problems[0]
    assert plan.hosts["new"].wheelhouse_key == ("3.13" * 20)[:16]


SLOW = pytest.mark.slow


@SLOW
def test_real_index_says_what_a_39_aarch64_board_could_run():
    """Against the index the wheelhouse uses: onnxruntime 1.31.1 has no cp39 aarch64 wheel."""
    (m,) = [x for x in preflight.missing_wheels(["onnxruntime==1.31.1", "numpy>=1.24"], A64, "3.9")]
    assert m.name == "onnxruntime" and "3.9" not in m.pythons and "3.13" in m.pythons
    assert m.newest_for_board.startswith("1.")


@SLOW
def test_deploy_refuses_a_39_board_copies_nothing_and_deploys_the_other(tmp_path):
    """Two x86 sim boards: one stated as Python 3.9 (refused: no task runs on it, its root is
    untouched), the other with no Python stated (gathered from the board, then deployed); exit 1."""
    from fleet.deploy.run import deploy
    from fleet.sim import lifecycle
    from test_deploy import MODEL, make_artifacts

    arts = make_artifacts(tmp_path / "artifacts")
    state_dir, inv = tmp_path / "sim", tmp_path / "inventory" / "sim.yml"
    state = lifecycle.up(state_dir, inv, mix="pi5-hailo8l:1,rk3588:1", use_netns=os.geteuid() == 0)
    try:
        doc = yaml.safe_load(inv.read_text())
        hv = doc["all"]["hosts"]
        assert hv["sim-pi5-1"]["fleet_python_version"] == hv["sim-rk3588-1"]["fleet_python_version"]  # the sim says it
        del hv["sim-pi5-1"]["fleet_python_version"]
        hv["sim-rk3588-1"]["fleet_python_version"] = "3.9"
        inv.write_text(yaml.safe_dump(doc))
        old_root = Path(next(b.root for b in state.boards if b.name == "sim-rk3588-1"))
        before = sorted(p.relative_to(old_root) for p in old_root.rglob("*"))
        result = deploy(inv, models=(MODEL,), datasets=(), runs_dir=tmp_path / "runs", artifacts_dir=arts)
        hosts = {h.host: h for h in result.hosts}
        assert result.exit_code == 1, result.to_dict()
        assert hosts["sim-pi5-1"].status == "changed", hosts["sim-pi5-1"]
        r = hosts["sim-rk3588-1"]
        assert r.status == "refused" and "Python 3.9" in r.reason and "onnxruntime==1.31.1" in r.reason, r
        assert sorted(p.relative_to(old_root) for p in old_root.rglob("*")) == before  # nothing copied
        events = [json.loads(f.read_text()) for f in Path(result.run_dir).glob("ansible/artifacts/*/job_events/*.json")]
        touched = {(e["event_data"].get("host"), Path(e["event_data"].get("playbook", "")).name)
                   for e in events if e.get("event", "").startswith("runner_on_")}
        assert ("sim-rk3588-1", "site.yml") not in touched and ("sim-rk3588-1", "probe.yml") not in touched
        assert ("sim-pi5-1", "probe.yml") in touched  # its Python was gathered, the refused one's was stated
        saved = json.loads((Path(result.run_dir) / "deploy.json").read_text())
        assert saved["exit_code"] == 1 and {h["host"]: h["status"] for h in saved["hosts"]} == {
            "sim-pi5-1": "changed", "sim-rk3588-1": "refused"}
    finally:
        lifecycle.down(state_dir)
