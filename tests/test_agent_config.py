"""Board config (agent.yml) and the fleet_root path rule."""

import os

import pytest

from device_agent.config import load_config, resolve_inside
from device_agent.protocol import BadInput


def write(root, text):
    (root / "agent.yml").write_text(text)


def test_reads_agent_yml(tmp_path):
    write(tmp_path, f"board: pi5-hailo8l\naccelerator: hailo8l\nemulated: true\nfleet_root: {tmp_path}\n")
    c = load_config(tmp_path)
    assert (c.board, c.accelerator, c.emulated, c.npu) == ("pi5-hailo8l", "hailo8l", True, "hailo8l")
    assert c.root == tmp_path and c.config_file == tmp_path / "agent.yml"


def test_missing_agent_yml_means_plain_cpu(tmp_path, capsys):
    c = load_config(tmp_path)
    assert (c.board, c.accelerator, c.emulated, c.npu, c.config_file) == ("cpu", "cpu", False, None, None)
    assert "no " in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [
    ("board: jetson\n", "unknown board"),
    ("accelerator: tpu\n", "unknown accelerator"),
    ("emulated: maybe\n", "emulated must be"),
    ("fleet_root: relative/dir\n", "not an absolute path"),
    ("fleet_root: /somewhere/else\n", "says fleet_root"),
    ("- a list\n", "not a YAML mapping"),
    ("board: [unclosed\n", "cannot read"),
])
def test_bad_agent_yml(tmp_path, text, words):
    write(tmp_path, text)
    with pytest.raises(BadInput, match=words) as ei:
        load_config(tmp_path)
    assert ei.value.fix


def test_root_must_exist(tmp_path):
    with pytest.raises(BadInput, match="not a directory"):
        load_config(tmp_path / "nope")


@pytest.mark.parametrize("path", ["../etc/passwd", "data/../../x", "/etc/passwd", "..", ""])
def test_paths_outside_root_are_refused(tmp_path, path):
    with pytest.raises(BadInput) as ei:
        resolve_inside(tmp_path, path, "input")
    assert "input" in ei.value.message and ei.value.fix


def test_paths_inside_root(tmp_path):
    assert resolve_inside(tmp_path, "data/speech/a.wav") == tmp_path / "data/speech/a.wav"
    assert resolve_inside(tmp_path, "data/../models/m") == tmp_path / "models/m"
    assert resolve_inside(tmp_path, str(tmp_path / "data/x.wav")) == tmp_path / "data/x.wav"
    # a sibling whose name starts with the root's name is still outside
    with pytest.raises(BadInput):
        resolve_inside(tmp_path, str(tmp_path) + "-evil/x")
    # symlinks placed under the root by the deploy are followed by the OS, not refused
    (tmp_path / "data").mkdir()
    os.symlink("/tmp", tmp_path / "data" / "link")
    assert resolve_inside(tmp_path, "data/link/x") == tmp_path / "data/link/x"
