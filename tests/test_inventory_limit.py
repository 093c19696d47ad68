"""`--limit` selects exactly what Ansible's own pattern code selects (issue 13 §3).

Every pattern is resolved twice on the same inventory, by fleet and by
``ansible -i INV PATTERN --list-hosts``, and the two host sets must be equal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.inventory import ansible_bin, ansible_env, default_inventory, load_inventory

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

# pi5 is a group whose hosts all sit in its child groups (nested twice for pi5_hailo8l_a)
INVENTORY = """
all:
  vars: {fleet_root: /opt/fleet, emulated: true, ansible_host: 127.0.0.1}
  children:
    pi5:
      children:
        pi5_hailo8l:
          vars: {board: pi5-hailo8l, accelerator: hailo8l}
          children:
            pi5_hailo8l_a:
              hosts: {pi5-a1: {}, pi5-a2: {}}
          hosts: {pi5-b1: {}}
        pi5_hailo8:
          vars: {board: pi5-hailo8l, accelerator: hailo8}
          hosts: {pi5-c1: {}}
    rk3588:
      vars: {board: rk3588, accelerator: rk3588}
      hosts: {rk-1: {}, rk-2: {}}
    shelf2:
      hosts: {pi5-a2: {}, rk-2: {}}
"""

PATTERNS = [
    "all", "*", "pi5", "pi5_hailo8l", "pi5_hailo8l_a", "rk3588", "pi5_hailo8l:&rk3588", "pi5:&shelf2",
    "all:!rk3588", "pi5:!pi5_hailo8l_a", "~pi5-[ab].*", "~rk-\\d", "pi5-a*", "rk-1,pi5-c1", "rk-1:pi5-b1",
    "shelf2:!rk3588:pi5_hailo8", "pi5[0]",
]


@pytest.fixture(scope="module")
def inv(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("limit") / "lab.yml"
    p.write_text(INVENTORY)
    return p


def ansible_hosts(inv: Path, pattern: str, *extra: str) -> set[str]:
    """The hosts ``ansible -i INV PATTERN [EXTRA...] --list-hosts`` prints."""
    proc = subprocess.run([ansible_bin("ansible"), "-i", str(inv), pattern, *extra, "--list-hosts"],
                          capture_output=True, text=True, env=ansible_env(), check=True)
    lines = proc.stdout.splitlines()
    assert lines and lines[0].strip().startswith("hosts ("), proc.stdout
    return {ln.strip() for ln in lines[1:] if ln.strip()}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_limit_selects_what_ansible_lists(inv, pattern):
    want = ansible_hosts(inv, pattern)
    if not want:
        with pytest.raises(FleetError, match="matches no host"):
            load_inventory(inv, pattern)
        return
    assert {b.name for b in load_inventory(inv, pattern)} == want


def test_the_cases_the_review_found(inv):
    # `all` and a group made only of child groups used to match nothing, `a:&b` used to act as `a,b`
    assert len(load_inventory(inv, "all")) == 6
    assert {b.name for b in load_inventory(inv, "pi5")} == {"pi5-a1", "pi5-a2", "pi5-b1", "pi5-c1"}
    with pytest.raises(FleetError, match="matches no host") as e:
        load_inventory(inv, "pi5_hailo8l:&rk3588")
    assert "hosts are: pi5-a1, pi5-a2" in e.value.fix and "--list-hosts" in e.value.fix


def test_limit_from_a_file(inv, tmp_path):
    f = tmp_path / "retry"
    f.write_text("rk-2\npi5-b1\n")
    assert {b.name for b in load_inventory(inv, f"@{f}")} == {"rk-2", "pi5-b1"} == ansible_hosts(inv, "all", "--limit", f"@{f}")


def test_only_selected_hosts_are_checked(tmp_path):
    # a host with a bad var does not stop a run limited to the other host (a play reads only its hosts)
    p = tmp_path / "inv.yml"
    p.write_text("all:\n  vars: {fleet_root: /opt/fleet}\n  hosts:\n"
                 "    good: {board: cpu, accelerator: cpu}\n    bad: {board: nosuch, accelerator: cpu}\n")
    assert [b.name for b in load_inventory(p, "good")] == ["good"]
    with pytest.raises(FleetError, match="unknown board 'nosuch'"):
        load_inventory(p)


def test_default_inventory_from_the_environment(monkeypatch, inv):
    monkeypatch.delenv("FLEET_INVENTORY", raising=False)
    assert default_inventory() == "inventory/sim.yml"
    assert default_inventory("x.yml") == "x.yml"
    monkeypatch.setenv("FLEET_INVENTORY", str(inv))
    assert default_inventory() == str(inv)
    assert default_inventory("x.yml") == "x.yml"
    assert len(load_inventory(None, "rk3588")) == 2


@pytest.mark.parametrize("command", ["deploy", "test", "doctor", "leases"])
def test_every_board_command_takes_limit_and_names_the_default(command):
    out = subprocess.run([sys.executable, "-m", "fleet", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--limit PATTERN, -l PATTERN" in text or "-l PATTERN, --limit PATTERN" in text, text
    assert "$FLEET_INVENTORY, else inventory/sim.yml" in text, text


def test_leases_limit_filters_by_the_inventory(inv, tmp_path):
    from fleet.leases import LeaseStore

    db = tmp_path / "l.db"
    store = LeaseStore(str(db))
    for b in ("rk-1", "pi5-a1"):
        assert store.acquire(b, "r1", ttl_s=600)[0]
    store.close()
    out = subprocess.run([sys.executable, "-m", "fleet", "leases", "--db", str(db), "-i", str(inv),
                          "-l", "rk3588", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    assert [lz["board"] for lz in json.loads(out.stdout)] == ["rk-1"]
    # release --limit frees only the selected boards' leases
    out = subprocess.run([sys.executable, "-m", "fleet", "leases", "release", "--db", str(db), "-i", str(inv),
                          "-l", "rk3588", "--yes"], capture_output=True, text=True)
    assert out.returncode == 0 and "released rk-1" in out.stdout, out.stdout + out.stderr
    assert [lz.board for lz in LeaseStore(str(db)).list()] == ["pi5-a1"]
