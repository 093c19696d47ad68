"""Read a standard Ansible inventory into the boards fleet works with.

Ansible itself resolves the inventory (``ansible-inventory --list``), so group vars, host_vars
folders and INI inventories behave exactly as they do for a play. fleet then checks the host vars
it needs (docs/contracts.md §1) and says which host and variable is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from fleet.errors import FleetError
from fleet.families import registry

ARCHES = {"x86_64", "aarch64"}
CPU_EMULATORS = {"qemu-user"}


def board_classes() -> dict[str, tuple[str, ...]]:
    """board class -> the accelerators it may carry, from the board families (fleet.families:
    built-ins and plug-ins). Raises FleetError when a plug-in cannot be used."""
    return registry().board_classes()


def accelerators() -> set[str]:
    """Every accelerator a board family declares (``hailo8l``, ..., ``cpu``)."""
    return set(registry().accelerators())


def __getattr__(name: str):
    # BOARD_CLASSES / ACCELERATORS, read from the registry when asked (older callers)
    if name == "BOARD_CLASSES":
        return {k: set(v) for k, v in board_classes().items()}
    if name == "ACCELERATORS":
        return accelerators()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Board:
    """One board of the fleet, as the inventory describes it.

    Attributes:
        name: the inventory hostname.
        board: board class (``pi5-hailo8l``, ``pi5-hailo10h``, ``rk3588``, ``cpu``: fleet.families).
        accelerator: the NPU (``hailo8l``, ``hailo8``, ``hailo10h``, ``rk3588``) or ``cpu``.
        emulated: True for an emulated board (NPU stages run on the onnx backend).
        fleet_root: absolute path on the board under which fleet installs everything.
        host, port, user: SSH address.
        key_file: SSH private key, or "" for the SSH agent/defaults.
        known_hosts: known_hosts file pinning the host key, or "" for ~/.ssh/known_hosts.
        python: the board's Python interpreter.
        wheel_platform: pip platform tag for the board's wheelhouse, "" = the controller's own.
        reconnect_timeout_s: host var ``fleet_reconnect_timeout_s``: how long (s) `fleet test`
            retries SSH to this board when it does not answer or its link drops (a board that
            reboots); None = the suite's ``reconnect_timeout_s``. It wins over the suite's.
        jump: ProxyJump hops (fleet.remote.ssh_target.Hop), first hop first; () = direct.
        proxy_command: ProxyCommand (tokens expanded), or "".

    host, port, user, key_file, known_hosts, jump and proxy_command are resolved as Ansible's ssh
    connection resolves them (fleet.remote.ssh_target.resolve): the ansible_* vars, then
    ``ansible_ssh_common_args``/``ansible_ssh_extra_args``, then ssh_config (``-F`` or ~/.ssh/config).
        arch: host var ``arch``: the board's CPU architecture (``aarch64``, ``x86_64``), "" = not said.
        python_version: host var ``fleet_python_version`` (``3.11``): the board's Python, for its
            wheelhouse; "" = not said.
        cpu_emulated: host var ``cpu_emulated``: ``qemu-user`` when the board's CPU is emulated
            (results from it say so; its latency is never valid), "" for a native CPU.
    """

    name: str
    board: str
    accelerator: str
    emulated: bool
    fleet_root: str
    host: str
    port: int
    user: str
    key_file: str = ""
    known_hosts: str = ""
    python: str = "/usr/bin/python3"
    wheel_platform: str = ""
    reconnect_timeout_s: float | None = None
    jump: tuple = ()
    proxy_command: str = ""
    arch: str = ""
    python_version: str = ""
    cpu_emulated: str = ""

    @property
    def board_class(self) -> str:
        """The threshold class of suite.yml: ``emulated``, else the accelerator."""
        return "emulated" if self.emulated else self.accelerator

    @property
    def agent_command(self) -> str:
        """Shell command that starts the agent's JSON-lines session on the board."""
        return f"{self.fleet_root}/venv/bin/fleet-agent --root {self.fleet_root} serve"

    def to_dict(self) -> dict:
        """Plain dict for JSON output (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Board":
        """The Board ``to_dict()`` (through JSON) gave: hops back as Hop, lists back as tuples.

        Raises:
            TypeError: a key that is not a Board field.
        """
        from fleet.remote.ssh_target import Hop

        d = dict(d)
        d["jump"] = tuple(Hop(**h) if isinstance(h, dict) else h for h in d.get("jump") or ())
        return cls(**d)


def ansible_bin(name: str) -> str:
    """Path of an Ansible executable: next to this Python first (a venv need not be on PATH)."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise FleetError(
            f"{name} was not found next to {sys.executable} or on PATH",
            "install the controller extra: pip install -e '.[controller]' (make demo does it)",
        )
    return found


def ansible_env() -> dict:
    """Environment for Ansible subprocesses: the venv's bin on PATH (ansible-runner looks up
    ansible-playbook by name), host key checking forced on."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    return env


class _DuplicateKey(yaml.MarkedYAMLError):
    """A mapping names one key twice (YAML 1.2 forbids it; PyYAML and Ansible keep the last)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys: a host listed twice under ``hosts:`` would
    otherwise silently become one host with the second entry's vars (Ansible only warns)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not key_node.start_mark:
                raise _DuplicateKey(None, None, f"'{key}' appears twice in one mapping, at line "
                                    f"{first.line + 1} and at line {key_node.start_mark.line + 1}",
                                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def _check_yaml(path: Path) -> None:
    """Fail with the line number when a YAML inventory does not parse (Ansible's message hides it)
    or names a key twice in one mapping (e.g. a host listed twice)."""
    if path.suffix not in (".yml", ".yaml"):
        return
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise FleetError(
            f"inventory {path}: duplicate key: {e.problem}",
            "list each host once per group and each variable once per host; remove or rename the repeat",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FleetError(
            f"inventory {path}: YAML syntax error{where}: {getattr(e, 'problem', e)}",
            "fix the YAML at that line (indentation, a missing ':' or an unclosed quote)",
        ) from None
    if not isinstance(data, dict) or not data:
        raise FleetError(
            f"inventory {path}: expected a YAML mapping with an 'all:' group, found {type(data).__name__}",
            "see inventory/lab.yml for the expected layout",
        )


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _local_path(value) -> str:
    """A controller-side path from the inventory: ``~`` expanded, "" stays "" (relative paths are
    relative to the folder fleet runs in, the checkout, as they are for Ansible under fleet)."""
    return os.path.expanduser(str(value)) if value else ""


def _board_from_vars(name: str, hv: dict, source: Path) -> Board:
    def need(key: str) -> str:
        if key not in hv or hv[key] in (None, ""):
            raise FleetError(
                f"inventory {source}: host '{name}' has no '{key}'",
                f"set {key} for '{name}' in its host vars (see inventory/lab.yml)",
            )
        return hv[key]

    board = str(need("board"))
    classes = board_classes()
    if board not in classes:
        raise FleetError(
            f"inventory {source}: host '{name}' has unknown board '{board}'",
            f"use one of: {', '.join(sorted(classes))}",
        )
    acc = str(need("accelerator"))
    if acc not in accelerators():
        raise FleetError(
            f"inventory {source}: host '{name}' has unknown accelerator '{acc}'",
            f"use one of: {', '.join(sorted(accelerators()))}",
        )
    if acc not in classes[board]:
        raise FleetError(
            f"inventory {source}: host '{name}' is a {board} but names accelerator '{acc}'",
            f"a {board} carries {', '.join(sorted(classes[board]))}",
        )
    root = str(need("fleet_root"))
    if not root.startswith("/"):
        raise FleetError(
            f"inventory {source}: host '{name}' has a relative fleet_root '{root}'",
            "give fleet_root as an absolute path on the board, e.g. /opt/fleet",
        )
    emulated = hv.get("emulated", False)
    if isinstance(emulated, str) and emulated.strip().lower() in _BOOL_WORDS:
        emulated = _BOOL_WORDS[emulated.strip().lower()]  # INI inventories give strings
    if not isinstance(emulated, bool):
        raise FleetError(
            f"inventory {source}: host '{name}' has emulated={emulated!r}, not true/false",
            "write emulated: true or emulated: false",
        )
    try:
        port = None if hv.get("ansible_port") in (None, "") else int(hv["ansible_port"])
    except (TypeError, ValueError):
        raise FleetError(
            f"inventory {source}: host '{name}' has a non-numeric ansible_port {hv.get('ansible_port')!r}",
            "give the SSH port as a number",
        ) from None
    reconnect = hv.get("fleet_reconnect_timeout_s")
    if reconnect is not None:
        try:
            reconnect = float(reconnect)  # INI inventories give strings
        except (TypeError, ValueError):
            reconnect = -1.0
        if not reconnect >= 0:  # also NaN
            raise FleetError(
                f"inventory {source}: host '{name}' has fleet_reconnect_timeout_s="
                f"{hv.get('fleet_reconnect_timeout_s')!r}, not a number of seconds >= 0",
                "give the seconds to retry SSH to the board, e.g. fleet_reconnect_timeout_s: 90 for a board that reboots",
            )
    from fleet.remote.ssh_target import SSHArgsError, resolve

    args = " ".join(str(hv.get(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    try:
        ssh = resolve(str(hv.get("ansible_host", name)), user=hv.get("ansible_user"), port=port,
                      key_file=_local_path(hv.get("ansible_ssh_private_key_file", "")),
                      known_hosts=_local_path(hv.get("fleet_known_hosts", "")), ssh_args=args)
    except SSHArgsError as e:
        raise FleetError(
            f"inventory {source}: host '{name}': SSH settings: {e}",
            "fix ansible_ssh_common_args / ansible_ssh_extra_args or ansible_port "
            "(they are ssh(1) options, e.g. -o ProxyJump=user@bastion:22)",
        ) from None
    arch = str(hv.get("arch") or "")
    if arch and arch not in ARCHES:
        raise FleetError(f"inventory {source}: host '{name}' has unknown arch '{arch}'",
                         f"use one of: {', '.join(sorted(ARCHES))} (`uname -m` on the board)")
    wheel_platform = str(hv.get("fleet_wheel_platform", "") or "")
    if arch == "aarch64" and not wheel_platform.endswith("aarch64"):
        raise FleetError(
            f"inventory {source}: host '{name}' is aarch64 but fleet_wheel_platform is "
            f"'{wheel_platform or '(unset: the controller' + chr(39) + 's own)'}'",
            "set fleet_wheel_platform: manylinux_2_28_aarch64 (glibc >= 2.28, as on Debian 11/12)",
        )
    pyver = str(hv.get("fleet_python_version") or "")
    if pyver and not (pyver.count(".") == 1 and all(p.isdigit() for p in pyver.split("."))):
        raise FleetError(f"inventory {source}: host '{name}' has fleet_python_version '{pyver}', not MAJOR.MINOR",
                         "write e.g. fleet_python_version: '3.11' (quoted, so YAML keeps it a string)")
    emulator = str(hv.get("cpu_emulated") or "")
    if emulator and emulator not in CPU_EMULATORS:
        raise FleetError(f"inventory {source}: host '{name}' has cpu_emulated '{emulator}'",
                         f"use one of: {', '.join(sorted(CPU_EMULATORS))}, or leave it out for a native CPU")
    return Board(
        name=name,
        board=board,
        accelerator=acc,
        emulated=emulated,
        fleet_root=root.rstrip("/") or "/",
        host=ssh.host,
        port=ssh.port,
        user=ssh.user,
        key_file=ssh.key_file,
        known_hosts=ssh.known_hosts,
        python=str(hv.get("ansible_python_interpreter", "/usr/bin/python3")),
        wheel_platform=wheel_platform,
        reconnect_timeout_s=reconnect,
        jump=ssh.jump,
        proxy_command=ssh.proxy_command,
        arch=arch,
        python_version=pyver,
        cpu_emulated=emulator,
    )


#: Help text of every command's ``--inventory``/``-i`` and ``--limit``/``-l`` (one wording).
INVENTORY_HELP = "Ansible inventory file or folder (default $FLEET_INVENTORY, else inventory/sim.yml)"
LIMIT_HELP = ("Ansible host pattern, as `ansible -i INV PATTERN --list-hosts` resolves it: names, groups "
              "(child groups included), globs, ~regex, a:b (union), a:&b (and), a:!b (not), @file")
DEFAULT_INVENTORY = "inventory/sim.yml"


def default_inventory(given: str | Path | None = None) -> str:
    """The inventory a command uses: ``given`` (``--inventory``), else ``$FLEET_INVENTORY``, else
    inventory/sim.yml (what `fleet sim up` writes), as ``ANSIBLE_INVENTORY`` is for ``ansible``."""
    return str(given or os.environ.get("FLEET_INVENTORY") or DEFAULT_INVENTORY)


def add_inventory_args(p, limit: bool = True) -> None:
    """Add ``--inventory/-i`` (default None: :func:`default_inventory` resolves it) and, with
    ``limit``, ``--limit/-l`` to an argparse parser, with the same names and help on every command."""
    p.add_argument("--inventory", "-i", default=None, help=INVENTORY_HELP)
    if limit:
        p.add_argument("--limit", "-l", default=None, metavar="PATTERN", help=LIMIT_HELP)


def _ansible_inventory(p: Path, limit: str | None) -> tuple[dict, str]:
    """``ansible-inventory -i P --list [--limit LIMIT]``: (its JSON, its stderr).

    Ansible resolves the inventory and the pattern (groups and their child groups, ``all``,
    ``a:&b``, ``a:!b``, ``~regex``, ``@file``) with the code a play uses, so ``--limit`` selects
    exactly what ``ansible -i P PATTERN --list-hosts`` lists (tests/test_inventory_limit.py).
    """
    cmd = [ansible_bin("ansible-inventory"), "-i", str(p), "--list"]
    if limit:
        cmd += ["--limit", limit]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ansible_env())
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise FleetError(
            f"inventory {p}: ansible-inventory rejected it{f' with --limit {limit!r}' if limit else ''}: "
            f"{' '.join(msg[-3:])}",
            "check it with `ansible-inventory -i FILE --list`" + (f" and `ansible -i FILE '{limit}' --list-hosts`"
                                                                   if limit else ""),
        )
    if "Unable to parse" in proc.stderr or "as an inventory source" in proc.stderr:
        raise FleetError(
            f"inventory {p}: Ansible could not parse it: {proc.stderr.strip()}",
            "check the file with `ansible-inventory -i FILE --list`",
        )
    return json.loads(proc.stdout), proc.stderr


def load_inventory(path: str | Path | None, limit: str | None = None) -> list[Board]:
    """Resolve an Ansible inventory and return its boards (those ``limit`` selects), sorted by name.

    Args:
        path: inventory file (YAML or INI) or directory; None = :func:`default_inventory`.
        limit: optional Ansible host pattern (``--limit``), resolved by Ansible itself
            (:func:`_ansible_inventory`). Only the selected hosts' vars are checked, as a play
            with ``--limit`` only reads those hosts.

    Raises:
        FleetError: missing file, YAML syntax error (with line), Ansible rejecting the file or the
            pattern, a selected host without board/accelerator/fleet_root, unknown board or
            accelerator values, or a limit that matches no host.
    """
    p = Path(default_inventory(path))
    if not p.exists():
        raise FleetError(
            f"inventory {p} does not exist",
            "pass --inventory FILE or set FLEET_INVENTORY; `fleet sim up` writes inventory/sim.yml, "
            "inventory/lab.yml is the lab example",
        )
    if p.is_file():
        _check_yaml(p)
    data, _ = _ansible_inventory(p, limit)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    if not hostvars and limit:
        everyone = sorted(_ansible_inventory(p, None)[0].get("_meta", {}).get("hostvars", {}))
        if everyone:
            raise FleetError(
                f"--limit '{limit}' matches no host in {p}",
                f"hosts are: {', '.join(everyone)} (`ansible -i {p} '{limit}' --list-hosts` shows the same)",
            )
    if not hostvars:
        raise FleetError(f"inventory {p} lists no hosts", "add hosts under all: hosts: (see inventory/lab.yml)")
    return [_board_from_vars(name, hv, p) for name, hv in sorted(hostvars.items())]
