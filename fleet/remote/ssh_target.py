"""Where and how to reach a board over SSH, resolved the way Ansible's ``ssh`` connection does it.

Ansible runs OpenSSH with the host's ``ansible_host``, ``ansible_port``, ``ansible_user`` and
``ansible_ssh_private_key_file`` as ``-o`` options, then ``ansible_ssh_common_args`` and
``ansible_ssh_extra_args`` verbatim; OpenSSH fills in what is still unset from the ssh_config
files (the ``-F`` file if given, else ``~/.ssh/config`` then ``/etc/ssh/ssh_config``), first
value wins (ssh_config(5); Ansible's ssh plugin docs:
https://docs.ansible.com/ansible/latest/collections/ansible/builtin/ssh_connection.html).
`fleet test` and `fleet doctor` speak to the agent through paramiko/fabric, not OpenSSH, so this
module resolves the same values with the same precedence once, when the inventory is read, and
the controller then connects to exactly what ``ansible -m ping`` would: through the same
``ProxyJump`` hops (ssh(1) ``-J``) or ``ProxyCommand``, with the same user, port and key.

Host keys stay pinned: every hop and the board are checked against known_hosts and an unknown
key is refused (``StrictHostKeyChecking=no`` in the args is not honoured: fleet never turns
checking off).
"""

from __future__ import annotations

import getpass
import shlex
from dataclasses import dataclass
from pathlib import Path

#: ssh(1) options that take an argument (the next argv item unless attached, as in ``-p2222``).
_WITH_ARG = set("BbcDEeFIiJLlmOoPpQRSWw")
#: The ssh_config keywords fleet reads (lowercase, as paramiko's SSHConfig returns them).
_KEYS = ("hostname", "port", "user", "identityfile", "userknownhostsfile", "proxyjump", "proxycommand")
#: The ssh_config files OpenSSH reads when no ``-F`` is given, in order (ssh(1) FILES).
DEFAULT_CONFIGS = ("~/.ssh/config", "/etc/ssh/ssh_config")


class SSHArgsError(ValueError):
    """``ansible_ssh_common_args``/``ansible_ssh_extra_args`` or a ProxyJump spec cannot be read."""


@dataclass(frozen=True)
class Hop:
    """One jump host (ProxyJump) on the way to a board.

    Attributes:
        name: the hop as written (``bastion``, ``admin@10.0.0.1:2222``).
        host, port, user: where to connect (after its ssh_config entry).
        key_file: private key from its ssh_config ``IdentityFile``, or "" for agent/default keys.
        known_hosts: its ssh_config ``UserKnownHostsFile``, or "" for ~/.ssh/known_hosts.
    """

    name: str
    host: str
    port: int
    user: str
    key_file: str = ""
    known_hosts: str = ""


@dataclass(frozen=True)
class SSHTarget:
    """The resolved SSH address of one board (see the module docstring for the precedence).

    Attributes:
        host, port, user, key_file, known_hosts: as :class:`Hop`.
        jump: ProxyJump hops, first hop first (empty: direct).
        proxy_command: ProxyCommand with %h/%p/%r/%n expanded, or "" (exclusive with ``jump``).
    """

    host: str
    port: int
    user: str
    key_file: str = ""
    known_hosts: str = ""
    jump: tuple[Hop, ...] = ()
    proxy_command: str = ""


def parse_ssh_args(text: str) -> tuple[dict[str, str], str]:
    """Read the ssh(1) options of ``ansible_ssh_common_args`` + ``ansible_ssh_extra_args``.

    Args:
        text: the args as one shell-quoted string.

    Returns:
        ({lowercase ssh_config keyword: value}, the ``-F`` file or ""). ``-o Key=Value``,
        ``-o "Key Value"``, ``-oKey=Value``, ``-J``, ``-i``, ``-l``, ``-p`` are read; the first
        value of a keyword wins, as in OpenSSH. Other options are skipped with their argument.

    Raises:
        SSHArgsError: unbalanced quotes, or an option missing its argument.
    """
    try:
        argv = shlex.split(text or "")
    except ValueError as e:
        raise SSHArgsError(f"cannot split {text!r}: {e}") from None
    opts: dict[str, str] = {}
    config = ""
    short = {"J": "proxyjump", "i": "identityfile", "l": "user", "p": "port"}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("-") or len(a) < 2:
            continue
        flag, value = a[1], a[2:]
        if flag not in _WITH_ARG:
            continue
        if not value:
            if i >= len(argv):
                raise SSHArgsError(f"option -{flag} has no argument in {text!r}")
            value = argv[i]
            i += 1
        if flag == "o":
            key, sep, val = value.partition("=")
            if not sep:
                key, _, val = value.partition(" ")
            key, val = key.strip().lower(), val.strip()
            if not key or not val:
                raise SSHArgsError(f"-o {value!r} is not Key=Value in {text!r}")
            opts.setdefault(key, val)
        elif flag == "F":
            config = config or value
        elif flag in short:
            opts.setdefault(short[flag], value)
    return opts, config


def _config_lookup(alias: str, config_file: str) -> dict:
    """ssh_config values for ``alias``: from ``config_file`` alone when given (as ``-F``), else
    from the default files; first file and first value win. Keys are :data:`_KEYS`."""
    import paramiko

    files = [config_file] if config_file else list(DEFAULT_CONFIGS)
    out: dict = {}
    for f in files:
        p = Path(f).expanduser()
        if not p.is_file():
            continue
        found = paramiko.SSHConfig.from_path(str(p)).lookup(alias)
        for k in _KEYS:
            if k in found and k not in out:
                out[k] = found[k]
    if out.get("hostname") == alias:
        del out["hostname"]  # paramiko fills hostname in with the alias itself
    return out


def _first(value) -> str:
    """First item of an ssh_config value that may be a list (IdentityFile) or a list of paths
    separated by spaces (UserKnownHostsFile)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    value = str(value or "").split()
    return str(Path(value[0]).expanduser()) if value else ""


def _port(value, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SSHArgsError(f"{what} {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SSHArgsError(f"{what} {port} is not a port number (1-65535)")
    return port


def parse_jump(spec: str, config_file: str = "") -> tuple[Hop, ...]:
    """ProxyJump hops from ``[user@]host[:port][,...]`` (or ``ssh://[user@]host[:port]``),
    each completed from its own ssh_config entry (explicit user and port win); ``none`` = ().

    Raises:
        SSHArgsError: an empty hop or a bad port.
    """
    if not spec or spec.strip().lower() == "none":
        return ()
    hops = []
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("ssh://"):
            part = part[len("ssh://"):].rstrip("/")
        user, _, hostport = part.rpartition("@")
        if hostport.startswith("["):  # [IPv6]:port
            host, _, rest = hostport[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = hostport.partition(":")
        if not host:
            raise SSHArgsError(f"ProxyJump {spec!r} has an empty hop")
        cfg = _config_lookup(host, config_file)
        hops.append(Hop(
            name=part,
            host=str(cfg.get("hostname") or host),
            port=_port(port or cfg.get("port") or 22, f"ProxyJump {part!r}: port"),
            user=user or str(cfg.get("user") or getpass.getuser()),
            key_file=_first(cfg.get("identityfile")),
            known_hosts=_first(cfg.get("userknownhostsfile")),
        ))
    return tuple(hops)


def _expand(command: str, host: str, port: int, user: str, alias: str) -> str:
    """ssh_config(5) TOKENS of a ProxyCommand: %h %p %r %n %%."""
    out, i = [], 0
    while i < len(command):
        c = command[i]
        if c == "%" and i + 1 < len(command):
            nxt = command[i + 1]
            out.append({"h": host, "p": str(port), "r": user, "n": alias, "%": "%"}.get(nxt, c + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def resolve(alias: str, user: str | None = None, port=None, key_file: str = "", known_hosts: str = "",
            ssh_args: str = "") -> SSHTarget:
    """Resolve one host as Ansible + OpenSSH would.

    Args:
        alias: ``ansible_host`` (else the inventory name): what ssh_config ``Host`` lines match.
        user, port, key_file: ``ansible_user``, ``ansible_port``, ``ansible_ssh_private_key_file``
            (None/"" = unset: the args, then ssh_config, then the defaults decide).
        known_hosts: ``fleet_known_hosts`` ("" = the args' ``UserKnownHostsFile``, then
            ssh_config's, then ~/.ssh/known_hosts).
        ssh_args: ``ansible_ssh_common_args`` and ``ansible_ssh_extra_args``, joined.

    Raises:
        SSHArgsError: unreadable args, a bad port or ProxyJump.
    """
    opts, config_file = parse_ssh_args(ssh_args)
    cfg = _config_lookup(alias, config_file)

    def pick(key):
        return opts.get(key) or cfg.get(key)

    host = str(opts.get("hostname") or cfg.get("hostname") or alias)
    port_ = _port(port if port not in (None, "") else (pick("port") or 22), "port")
    user_ = str(user or pick("user") or getpass.getuser())
    # ProxyJump and ProxyCommand exclude each other; the command line's wins over ssh_config's
    level = opts if ("proxyjump" in opts or "proxycommand" in opts) else cfg
    jump = parse_jump(str(level.get("proxyjump") or ""), config_file)
    command = "" if jump else str(level.get("proxycommand") or "")
    if command.strip().lower() == "none":
        command = ""
    return SSHTarget(
        host=host,
        port=port_,
        user=user_,
        key_file=str(Path(key_file).expanduser()) if key_file else _first(pick("identityfile")),
        known_hosts=known_hosts or _first(pick("userknownhostsfile")),
        jump=jump,
        proxy_command=_expand(command, host, port_, user_, alias) if command else "",
    )
