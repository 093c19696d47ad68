"""`fleet-agent serve` driven over a subprocess pipe, and the CLI's exit codes (no models needed)."""

import json
import subprocess
import sys

import pytest

from device_agent.protocol import MAX_MESSAGE_BYTES, decode_reply

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

AGENT = [sys.executable, "-m", "device_agent.cli"]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "agent.yml").write_text(
        f"board: pi5-hailo8l\naccelerator: hailo8l\nemulated: true\nfleet_root: {tmp_path}\n")
    (tmp_path / "data").mkdir()
    return tmp_path


class Served:
    """An agent subprocess; ``ask`` writes one raw line and reads one reply."""

    def __init__(self, root):
        self.p = subprocess.Popen(AGENT + ["--root", str(root), "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ask(self, line: bytes) -> dict:
        self.p.stdin.write(line if line.endswith(b"\n") else line + b"\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        assert out, self.p.stderr.read().decode()
        return decode_reply(out)

    def req(self, id, op, **args) -> dict:
        return self.ask(json.dumps({"id": id, "op": op, "args": args}).encode())


def test_serve_session(root):
    s = Served(root)
    try:
        r = s.req(1, "info")
        assert r["ok"] and r["id"] == 1 and r["timings"]["handle_ms"] >= 0
        info = r["result"]
        assert (info["board"], info["accelerator"], info["emulated"]) == ("pi5-hailo8l", "hailo8l", True)
        assert info["backends"]["onnx"]["available"] is True
        assert info["backends"]["hailo"]["available"] is False and "hailo-all" in info["backends"]["hailo"]["reason"]
        assert info["cpu"]["count"] >= 1 and info["memory"]["total_mb"] > 0
        assert info["agent"]["version"] and info["python"]["version"]
        assert "asr.whisper_hybrid" in info["pipelines"]
        assert info["pipelines"]["asr.whisper_hybrid"]["options"]["precision"]["default"] == "int8"

        r = s.ask(b"this is not json")
        assert not r["ok"] and r["id"] is None and r["error"]["type"] == "BadInput" and r["error"]["fix"]
        r = s.req(2, "dance")
        assert r["id"] == 2 and r["error"]["type"] == "UnknownOp"
        r = s.ask(b'{"id": 3, "op": "info", "args": "' + b"x" * (MAX_MESSAGE_BYTES + 10) + b'"}')
        assert r["error"]["type"] == "Oversized"
        r = s.req(4, "run", pipeline="asr.nope", input="data/x.wav")
        assert r["error"]["type"] == "UnknownPipeline" and "asr.whisper_hybrid" in r["error"]["fix"]
        r = s.req(5, "run", pipeline="asr.whisper_hybrid", input="../../etc/passwd")
        assert r["error"]["type"] == "BadInput" and "outside fleet_root" in r["error"]["message"]
        r = s.req(6, "run", pipeline="asr.whisper_hybrid", input="data/x.wav", options={"colour": 1})
        assert r["error"]["type"] == "BadInput" and "unknown option" in r["error"]["message"]
        r = s.req(7, "run", pipeline="asr.whisper_hybrid", input="data/x.wav", options={"precision": "fp8"})
        assert r["error"]["type"] == "BadInput"
        r = s.req(8, "run", pipeline="asr.whisper_hybrid", input="data/x.wav")
        assert r["error"]["type"] == "ModelError" and "models/whisper-tiny.en" in r["error"]["message"]
        r = s.req(9, "unload", pipeline="asr.whisper_hybrid")
        assert r["error"]["type"] == "NotLoaded"
        r = s.req(10, "info")  # still alive after all that
        assert r["ok"]
        r = s.req(11, "shutdown")
        assert r["ok"] and r["id"] == 11
        assert s.p.wait(timeout=10) == 0
        assert s.p.stdout.read() == b""  # nothing after the last reply
    finally:
        s.p.kill()


def test_serve_exits_on_eof(root):
    p = subprocess.run(AGENT + ["--root", str(root), "serve"], input=b'{"id": 1, "op": "info"}\n',
                       capture_output=True, timeout=60)
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["ok"]


def test_serve_stdout_carries_only_protocol(root, tmp_path):
    """Chatter written to fd 1 by libraries (C printf or print()) must land on stderr."""
    code = ("import os, sys\n"
            "from device_agent import cli, agent\n"
            "orig = agent.Agent.info\n"
            "def noisy(self):\n"
            "    print('python chatter'); os.write(1, b'C chatter\\n'); return orig(self)\n"
            "agent.Agent.info = noisy\n"
            f"sys.exit(cli.main(['--root', {str(root)!r}, 'serve']))\n")
    p = subprocess.run([sys.executable, "-c", code], input=b'{"id": 1, "op": "info"}\n',
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["ok"]
    assert b"python chatter" in p.stderr and b"C chatter" in p.stderr


def test_cli_info_json(root):
    p = subprocess.run(AGENT + ["--root", str(root), "info", "--json"], capture_output=True, timeout=60)
    assert p.returncode == 0
    assert json.loads(p.stdout)["board"] == "pi5-hailo8l"


def test_cli_exit_codes(root, tmp_path):
    def run(*args):
        return subprocess.run(AGENT + ["--root", str(root), "run", "asr.whisper_hybrid", *args, "--json"],
                              capture_output=True, timeout=60)

    p = run("--input", "../outside.wav")
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["type"] == "BadInput"
    p = run("--input", "data/x.wav", "--option", "nonsense")
    assert p.returncode == 2 and b"key=value" in p.stderr
    p = run("--input", "data/x.wav")  # no models deployed
    assert p.returncode == 3 and json.loads(p.stdout)["error"]["type"] == "ModelError"
    assert b"fix:" in p.stderr
    (root / "agent.yml").write_text("board: nope\n")
    p = subprocess.run(AGENT + ["--root", str(root), "info"], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"unknown board" in p.stderr


def test_agent_imports_stay_board_sized():
    """The board installs device_agent alone: it must not pull fleet, torch, transformers, ansible."""
    code = ("import sys, device_agent.cli, device_agent.agent, device_agent.pipelines, device_agent.protocol\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fleet', 'torch', 'transformers', 'ansible', 'ansible_runner', 'fabric', 'ctranslate2'))\n"
            "print(','.join(bad))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.strip() == b""
