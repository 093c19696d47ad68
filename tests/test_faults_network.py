"""Fault matrix row N1 (docs/faults.md): 20 % random packet loss plus a bandwidth cap on one
board's link, while a small real suite runs on 2 emulated boards.

Inside the faulty board's network namespace: an nftables table whose input-hook chain drops
`numgen random mod 100 < 20` of the packets, and a tbf qdisc (2 mbit, 400 ms queue) on the
board-side veth. TCP retransmits under SSH; the suite must still complete, with the same
transcripts on the faulty board as on the clean one, in under 2 minutes. Rules are removed in a
finally (and the namespace goes with the sim).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim_fleet import deployed_fleet

from fleet.results.store import Store
from fleet.sim.state import load_state

ROOT = Path(__file__).resolve().parents[1]
FAULTY, CLEAN = "sim-rk3588-1", "sim-pi5-1"
NFT_TABLE = "fleet_fault_loss"

pytestmark = pytest.mark.slow

SUITE_YML = """name: netfault
pipeline: asr.whisper_hybrid
model: whisper-tiny.en
dataset: speech
options:
  precision: int8
request_timeout_s: 60
"""

SUITE_TESTS = '''
def test_info(agent):
    assert agent.info()["board"]


def test_telemetry(agent):
    for _ in range(10):
        assert agent.request("telemetry").result


def test_transcribe_three_clips(agent, suite, record):
    items = suite.dataset_items()[:3]
    agent.request("load", {"pipeline": suite.pipeline, "options": suite.options})
    for item in items:
        rep = agent.request("run", {"pipeline": suite.pipeline, "input": f"data/{suite.dataset}/{item['audio']}",
                                    "options": suite.options})
        record.output({"id": item["id"], "text": rep.result["text"]})
        assert rep.result["text"].strip()
'''


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two emulated boards in namespaces, deployed with the Whisper artifacts."""
    if os.geteuid() != 0:
        pytest.skip("link faults need network namespaces (root)")
    base = tmp_path_factory.mktemp("netfault")
    suite = base / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text(SUITE_YML)
    (suite / "test_netfault_suite.py").write_text(SUITE_TESTS)
    with deployed_fleet(base, "pi5-hailo8l:1,rk3588:1", ("whisper-tiny.en",), use_netns=True) as (state_dir, inv):
        yield {"state_dir": state_dir, "inventory": inv, "base": base, "suite": suite,
               "boards": {b.name: b for b in load_state(state_dir).boards}}


def _board_veth(netns: str) -> str:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", "veth"],
                         check=True, capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]
    assert len(names) == 1, out
    return names[0]


def _add_faults(netns: str, dev: str) -> None:
    nft = (f"table inet {NFT_TABLE} {{\n"
           "  chain input {\n"
           "    type filter hook input priority 0; policy accept;\n"
           "    numgen random mod 100 < 20 counter drop\n"
           "  }\n"
           "}\n")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=nft, text=True, check=True)
    subprocess.run(["ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", dev, "root",
                    "tbf", "rate", "2mbit", "burst", "32kbit", "latency", "400ms"], check=True)


def _remove_faults(netns: str, dev: str | None) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", NFT_TABLE],
                   check=False, capture_output=True)
    if dev:
        subprocess.run(["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", dev, "root"],
                       check=False, capture_output=True)


def test_packet_loss_and_bandwidth_cap_on_one_board(fleet):
    faulty = fleet["boards"][FAULTY]
    db = fleet["base"] / "results.db"
    env = {**os.environ, "FLEET_HOME": str(fleet["base"])}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "fleet.cli", "test", str(fleet["suite"]), "--inventory", str(fleet["inventory"]),
           "--db", str(db)]
    dev = None
    try:
        dev = _board_veth(faulty.netns)
        _add_faults(faulty.netns, dev)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
        took = time.monotonic() - t0
        counters = subprocess.run(["ip", "netns", "exec", faulty.netns, "nft", "list", "table", "inet", NFT_TABLE],
                                  check=False, capture_output=True, text=True).stdout
    finally:
        _remove_faults(faulty.netns, dev)
    out = proc.stdout + proc.stderr
    store = Store(db)
    run_id = store.latest_run()
    res = {(r.board, r.test): r for r in store.results(run_id)}
    assert proc.returncode == 0, (out, {k: (r.outcome, r.message) for k, r in res.items()})
    assert took < 120, took
    tests = ("test_info", "test_telemetry", "test_transcribe_three_clips")
    assert {k: r.outcome for k, r in res.items()} == {(b, t): "passed" for b in (FAULTY, CLEAN) for t in tests}
    texts = {b: [o["text"] for o in res[(b, "test_transcribe_three_clips")].outputs] for b in (FAULTY, CLEAN)}
    assert len(texts[CLEAN]) == 3 and all(t.strip() for t in texts[CLEAN])
    assert texts[FAULTY] == texts[CLEAN]
    # the fault really was there: packets were dropped on the faulty board's input
    assert "packets 0 " not in counters, counters
    # and it is gone afterwards
    assert NFT_TABLE not in subprocess.run(["ip", "netns", "exec", faulty.netns, "nft", "list", "tables"],
                                           check=False, capture_output=True, text=True).stdout
