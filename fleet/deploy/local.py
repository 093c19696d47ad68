"""A board laid out on the controller itself, the way `fleet deploy` lays out a real one, with
symlinks instead of copies: for benchmarks and tests that drive the agent in-process or through
`fleet-agent` without SSH. The model folders come from the same selection and board manifest
the deploy uses, so what runs here is what a board of that class gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fleet.deploy.artifacts import board_manifest, load_manifest, select
from fleet.inventory import Board


def lay_out_board(root: Path, artifacts_dir: Path, *, board: str = "cpu", accelerator: str = "cpu",
                  emulated: bool = False, models: tuple[str, ...] | None = None,
                  data: dict[str, Path] | None = None) -> Path:
    """Make ``root`` a fleet_root: ``models/<model>/`` (symlinks + board manifest.json),
    ``data/<name>`` (symlinks to ``data``'s folders) and ``agent.yml``.

    Args:
        root: the folder to fill (created if missing).
        artifacts_dir: controller artifacts with manifest.json.
        board, accelerator, emulated: the board class written to agent.yml and used to select
            artifacts (an emulated NPU board gets the cpu ONNX artifacts, like a deployed one).
        models: models to lay out (default: every model in the manifest).
        data: dataset name -> controller folder.

    Returns:
        ``root``.

    Raises:
        FleetError: no manifest, or a requested model without cpu artifacts (the message says
            which `fleet models build` to run).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = Board(name="local", board=board, accelerator=accelerator, emulated=emulated,
                 fleet_root=str(root), host="localhost", port=22, user="root")
    arts = select(spec, load_manifest(Path(artifacts_dir)), Path(artifacts_dir), models)
    for model in dict.fromkeys(a.model for a in arts):
        mine = [a for a in arts if a.model == model]
        mdir = root / "models" / model
        for a in mine:
            dst = mdir / a.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():  # entries may share one file (the tokenizer of fp32 and int8)
                os.symlink(a.src, dst)
        (mdir / "manifest.json").write_text(json.dumps(board_manifest(mine, model), indent=2))
    for name, src in (data or {}).items():
        (root / "data").mkdir(exist_ok=True)
        link = root / "data" / name
        if not link.exists():
            os.symlink(Path(src).resolve(), link)
    (root / "agent.yml").write_text(f"board: {board}\naccelerator: {accelerator}\n"
                                    f"emulated: {str(emulated).lower()}\nfleet_root: {root}\n")
    return root
