"""fleet.inventory against real ansible-inventory: the lab example loads, bad inventories fail
with the host, the variable and (for YAML) the line."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.inventory import ansible_bin, ansible_env, load_inventory

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventory" / "lab.yml"

GOOD_HOST = """\
        board: {board}
        accelerator: {acc}
        fleet_root: /opt/fleet
        ansible_host: 192.0.2.10
"""


def write(tmp_path: Path, text: str, name: str = "inv.yml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_lab_example_is_accepted_by_ansible_inventory():
    proc = subprocess.run([ansible_bin("ansible-inventory"), "-i", str(LAB), "--list"],
                          capture_output=True, text=True, env=ansible_env())
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr


def test_lab_example_loads_three_real_boards():
    boards = load_inventory(LAB)
    assert [(b.name, b.board, b.accelerator) for b in boards] == [
        ("pi5-a", "pi5-hailo8l", "hailo8l"),
        ("pi5-b", "pi5-hailo8l", "hailo8l"),
        ("rock5b-a", "rk3588", "rk3588"),
    ]
    assert not any(b.emulated for b in boards)
    assert {b.wheel_platform for b in boards} == {"manylinux_2_28_aarch64"}
    assert next(b for b in boards if b.name == "rock5b-a").fleet_root == "/data/fleet"
    assert all(not b.key_file.startswith("~") for b in boards)  # ~ expanded for fleet's own SSH


def test_limit_by_group_and_glob():
    assert [b.name for b in load_inventory(LAB, limit="rk3588")] == ["rock5b-a"]
    assert [b.name for b in load_inventory(LAB, limit="pi5-*")] == ["pi5-a", "pi5-b"]
    with pytest.raises(FleetError, match="matches no host"):
        load_inventory(LAB, limit="nope")


# A YAML syntax error (with its line), an unknown board or accelerator, a missing fleet_root and a
# host listed twice are cases of the bad-input corpus: tests/test_bad_input_corpus.py, through
# `fleet deploy --inventory tests/bad_input/inventory/*.yml`.


def test_accelerator_must_fit_board(tmp_path):
    p = write(tmp_path, "all:\n  hosts:\n    b1:\n" + GOOD_HOST.format(board="rk3588", acc="hailo8l"))
    with pytest.raises(FleetError, match="is a rk3588 but names accelerator 'hailo8l'"):
        load_inventory(p)


def test_missing_file(tmp_path):
    with pytest.raises(FleetError, match="does not exist"):
        load_inventory(tmp_path / "nope.yml")


def test_ini_inventory_with_string_booleans(tmp_path):
    p = write(tmp_path, """\
        [rk]
        b1 ansible_host=192.0.2.10 board=rk3588 accelerator=rk3588 fleet_root=/opt/fleet emulated=true
        """, name="inv.ini")
    (b,) = load_inventory(p)
    assert b.emulated is True and b.port == 22


def test_group_vars_apply(tmp_path):
    p = write(tmp_path, """\
        all:
          vars:
            fleet_root: /srv/fleet
          children:
            rk3588:
              vars: {board: rk3588, accelerator: rk3588}
              hosts:
                r1: {ansible_host: 192.0.2.20, ansible_port: 2222}
        """)
    (b,) = load_inventory(p)
    assert (b.name, b.fleet_root, b.port, b.board) == ("r1", "/srv/fleet", 2222, "rk3588")
