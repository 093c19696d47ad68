"""An emulated fleet deployed for real, and its agents' processes, for the integration tests."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from fleet.deploy.run import deploy
from fleet.paths import artifacts_dir
from fleet.sim import lifecycle


@contextmanager
def deployed_fleet(base: Path, mix: str, models: tuple[str, ...] | None = None, use_netns: bool | None = None,
                   bastion: bool = False):
    """Emulated boards (``fleet sim up --mix MIX``: real sshds, in network namespaces when root or
    ``use_netns``) with state in ``base/sim`` and inventory ``base/inventory/sim.yml``, deployed by
    the real `fleet deploy` (Ansible) with ``models`` (None: every model built in the artifacts).
    ``bastion``: the boards sit behind an emulated jump host (`fleet sim up --bastion`).

    Yields:
        (state_dir, inventory path). The boards are taken down on exit, whatever happened.

    Raises:
        AssertionError: no built artifacts, or the deploy failed (with its per-host summary).
    """
    arts = artifacts_dir()
    first = models[0] if models else "whisper-tiny.en"
    assert (arts / "manifest.json").exists(), f"no artifacts in {arts}: run `fleet models build {first}`"
    state_dir, inv = base / "sim", base / "inventory" / "sim.yml"
    try:
        lifecycle.up(state_dir, inv, mix=mix, use_netns=os.geteuid() == 0 if use_netns is None else use_netns,
                     bastion=bastion)
        kwargs = {"models": models} if models else {}
        result = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", **kwargs)
        assert result.exit_code == 0, result.to_dict()
        yield state_dir, inv
    finally:
        lifecycle.down(state_dir)


def agent_pids(root: str) -> list[int]:
    """Pids of `fleet-agent --root ROOT serve` processes (the board's agents), by /proc scan."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if "serve" in argv and "--root" in argv and any(a.endswith("fleet-agent") for a in argv):
            i = argv.index("--root")
            if i + 1 < len(argv) and argv[i + 1] == root:
                out.append(int(d.name))
    return out
