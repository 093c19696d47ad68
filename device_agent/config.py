"""Board configuration (``{fleet_root}/agent.yml``, written by the agent role) and path rules.

agent.yml keys (docs/contracts.md §1-2)::

    board: a board class of device_agent.families (pi5-hailo8l | pi5-hailo10h | rk3588 | cpu | a plug-in's)
    accelerator: the accelerator of a family of that board class (hailo8l | hailo8 | hailo10h | rk3588 | cpu)
    emulated: false
    fleet_root: /opt/fleet
    family: {...}          # only for a plug-in board family: its BoardFamily as data (fleet deploy)

Every path the agent is given (``input``, ``model_dir``) is relative to fleet_root or absolute
inside it. The check is lexical (``..`` is normalised away, symlinks are not followed), so
symlinks placed under fleet_root by the deploy are trusted, while ``../`` escapes and absolute
paths elsewhere are refused.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import families
from .protocol import BadInput

CONFIG_NAME = "agent.yml"


@dataclass(frozen=True)
class BoardConfig:
    """What this board is. ``root`` is the resolved fleet_root; ``config_file`` is None when no
    agent.yml existed and the defaults of a plain CPU host were used."""

    board: str
    accelerator: str
    emulated: bool
    root: Path
    config_file: Path | None = None

    @property
    def family(self) -> families.BoardFamily:
        """The board family (device_agent.families) of this board's accelerator."""
        return families.by_accelerator(self.accelerator)

    @property
    def npu(self) -> str | None:
        """The NPU the board carries ('hailo8l', 'hailo8', 'rk3588', ...), or None for a CPU board."""
        fam = families.registry().find(self.accelerator)
        return self.accelerator if fam is None or fam.npu else None

    def resolve(self, path: str | os.PathLike, what: str = "path") -> Path:
        """Resolve ``path`` (relative to fleet_root, or absolute inside it) to an absolute path.

        Raises:
            BadInput: empty, or outside fleet_root after normalising ``..``.
        """
        return resolve_inside(self.root, path, what)


def resolve_inside(root: Path, path: str | os.PathLike, what: str = "path") -> Path:
    """Lexically resolve ``path`` against ``root`` and refuse anything outside it.

    Args:
        root: absolute fleet_root.
        path: relative (to root) or absolute path.
        what: the argument's name, used in the error message.

    Raises:
        BadInput: empty path, or the normalised path is not root or below it.
    """
    if path is None or str(path).strip() == "":
        raise BadInput(f"{what} is empty", f"give {what} relative to fleet_root {root}")
    raw = str(path)
    root_s = os.path.normpath(str(root))
    full = os.path.normpath(raw if os.path.isabs(raw) else os.path.join(root_s, raw))
    if os.path.commonpath([root_s, full]) != root_s:
        raise BadInput(f"{what} {raw!r} is outside fleet_root {root_s}",
                       f"give {what} relative to fleet_root (e.g. data/speech/x.wav), "
                       "without '..' escapes, or as an absolute path inside it")
    return Path(full)


def default_root() -> Path:
    """$FLEET_ROOT, else the folder holding the running venv when it has agent.yml
    (``{fleet_root}/venv/bin/fleet-agent``), else the current directory."""
    env = os.environ.get("FLEET_ROOT")
    if env:
        return Path(env)
    venv_parent = Path(sys.prefix).parent
    if (venv_parent / CONFIG_NAME).is_file():
        return venv_parent
    return Path.cwd()


def load_config(root: str | os.PathLike | None = None) -> BoardConfig:
    """Read ``{root}/agent.yml``.

    Without agent.yml the agent runs as a plain, non-emulated CPU host (board ``cpu``) and says
    so in ``info`` (``config_file: null``); a warning goes to stderr.

    Raises:
        BadInput: root missing, agent.yml unreadable/not a mapping, unknown board or accelerator,
            emulated not a bool, or fleet_root not absolute or different from ``root``.
    """
    root_p = Path(root) if root is not None else default_root()
    root_p = Path(os.path.abspath(root_p))
    if not root_p.is_dir():
        raise BadInput(f"fleet_root {root_p} is not a directory",
                       "pass --root with the board's fleet_root (the folder holding agent.yml)")
    cfg_file = root_p / CONFIG_NAME
    if not cfg_file.is_file():
        print(f"fleet-agent: no {cfg_file}; running as a plain CPU host", file=sys.stderr)
        return BoardConfig(board="cpu", accelerator="cpu", emulated=False, root=root_p)
    try:
        data = yaml.safe_load(cfg_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BadInput(f"cannot read {cfg_file}: {e}", "rewrite it with `fleet deploy` (agent role)") from None
    if not isinstance(data, dict):
        raise BadInput(f"{cfg_file} is not a YAML mapping", "rewrite it with `fleet deploy` (agent role)")
    board = str(data.get("board", "cpu"))
    accel = str(data.get("accelerator", "cpu"))
    emulated = data.get("emulated", False)
    reg = families.registry()
    fam_def = data.get("family")
    if fam_def is not None:  # a plug-in family's definition, written by fleet deploy
        try:
            fam = families.BoardFamily.from_dict(fam_def)
        except ValueError as e:
            raise BadInput(f"{cfg_file}: family: {e}", "rewrite it with `fleet deploy` (agent role)") from None
        families.register(fam, f"{cfg_file}")
    boards, accels = reg.board_classes(), reg.accelerators()
    if board not in boards:
        raise BadInput(f"{cfg_file}: unknown board {board!r}", f"use one of {', '.join(boards)}")
    if accel not in accels:
        raise BadInput(f"{cfg_file}: unknown accelerator {accel!r}", f"use one of {', '.join(accels)}")
    if not isinstance(emulated, bool):
        raise BadInput(f"{cfg_file}: emulated must be true or false, got {emulated!r}",
                       "set emulated: true|false in the inventory")
    declared = data.get("fleet_root")
    if declared is not None:
        if not os.path.isabs(str(declared)):
            raise BadInput(f"{cfg_file}: fleet_root {declared!r} is not an absolute path",
                           "set fleet_root to an absolute path in the inventory")
        if os.path.realpath(str(declared)) != os.path.realpath(root_p):
            raise BadInput(f"{cfg_file} says fleet_root {declared} but the agent was started with "
                           f"--root {root_p}",
                           "start the agent with --root set to the board's fleet_root, or redeploy")
    return BoardConfig(board=board, accelerator=accel, emulated=emulated, root=root_p,
                       config_file=cfg_file)
