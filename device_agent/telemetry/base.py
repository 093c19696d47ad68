"""What every sensor shares: channels (a named value with a unit), the sensor interface, and the
roots a sensor reads from (``/sys``, ``/proc``, commands), so tests drive sensors with fixture
trees and recorded command outputs.

A sensor is one hardware concept (labgrid style): it is *probed* once at agent start-up, declares
its channels then, and is *read* by the sampler many times. ``read`` never raises: a value it
cannot get is ``None`` with a message in the errors dict, so one broken sensor never breaks a
measurement.

Channel names are ``<source>.<quantity>[.<instance>]``, e.g. ``linux.temp.cpu-thermal``,
``pi5.throttled``, ``rk3588.npu_load.core1``. Channel kinds drive the summary
(``device_agent.telemetry.summary``):

==============  ======================================================================
kind            meaning
==============  ======================================================================
temperature     °C
power           W (energy is integrated from it)
voltage         V
frequency       current clock (kHz for cpufreq, Hz for vcgencmd/devfreq — the unit says)
frequency_max   the clock ceiling a cooling device may lower (cpufreq scaling_max_freq)
throttle        bit mask in the layout of the Pi's ``get_throttled`` (THROTTLE_BITS)
utilisation     % of the CPU time (0-100)
load            % accelerator load (0-100 per core)
memory          MiB
==============  ======================================================================
"""

from __future__ import annotations

import abc
import os
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("temperature", "power", "voltage", "frequency", "frequency_max", "throttle",
         "utilisation", "load", "memory")

#: The common throttle encoding: the bit layout of ``vcgencmd get_throttled``
#: (docs/reference/device_apis.md §4.1, Raspberry Pi os.html#vcgencmd). Sensors of other boards that
#: report throttling (the emulated model) use the same bits. Bits 16-19 are the "since boot"
#: (sticky) versions of bits 0-3.
THROTTLE_BITS = {
    0: "undervoltage",
    1: "frequency_capped",
    2: "throttled",
    3: "soft_temp_limit",
}
STICKY_SHIFT = 16


def decode_throttle(mask: int) -> dict:
    """Decode a ``get_throttled`` bit mask.

    Returns:
        ``{"now": {flag: bool}, "since_boot": {flag: bool}}`` with the flags of THROTTLE_BITS
        (undervoltage, frequency_capped, throttled, soft_temp_limit).
    """
    mask = int(mask)
    return {"now": {name: bool(mask >> bit & 1) for bit, name in THROTTLE_BITS.items()},
            "since_boot": {name: bool(mask >> (bit + STICKY_SHIFT) & 1) for bit, name in THROTTLE_BITS.items()}}


@dataclass(frozen=True)
class Channel:
    """One value a sensor reports.

    Attributes:
        name: ``<source>.<quantity>[.<instance>]``.
        unit: "°C", "W", "V", "kHz", "Hz", "%", "MiB" or "flags".
        kind: one of KINDS.
        source: the sensor plug-in (linux, pi5, rk3588, hailo, emulated).
        emulated: True when the value comes from a model, not hardware.
        note: scope or caveat shown with the value (e.g. what a power figure leaves out).
    """

    name: str
    unit: str
    kind: str
    source: str
    emulated: bool = False
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["note"]:
            d.pop("note")
        return d


class SensorUnavailable(Exception):
    """A source this sensor needs is absent (file, command, library). Raised by probes and
    command runners; the sampler never sees it (``read`` turns it into an error entry)."""


class CommandRunner:
    """Runs board commands (``vcgencmd …``) and returns their stdout.

    Args:
        timeout_s: per command (s); a hung firmware mailbox must not hang a measurement.
    """

    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s

    def available(self, program: str) -> bool:
        """True when ``program`` is on PATH."""
        from shutil import which

        return which(program) is not None

    def run(self, command: str) -> str:
        """stdout of ``command`` (split with shlex, no shell).

        Raises:
            SensorUnavailable: program missing, non-zero exit, or timeout.
        """
        try:
            p = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise SensorUnavailable(f"{command.split()[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise SensorUnavailable(f"`{command}` timed out after {self.timeout_s} s") from None
        if p.returncode != 0:
            raise SensorUnavailable(f"`{command}` exited {p.returncode}: {p.stderr.strip()[:200]}")
        return p.stdout


class RecordedCommands(CommandRunner):
    """Recorded command outputs, for tests and for replaying a board's telemetry.

    Args:
        outputs: command → output text, or a list of texts returned in turn (the last repeats),
            so a test can script a Pi that starts throttling mid-measurement.
    """

    def __init__(self, outputs: dict[str, str | list[str]]):
        super().__init__()
        self.outputs = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in outputs.items()}
        self.calls: list[str] = []

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "RecordedCommands":
        """Load ``<dir>/<command>.txt`` files named by the exact command, spaces included
        (``vcgencmd get_throttled.txt``). A file may hold several outputs separated by a line
        ``---``, returned in turn."""
        return cls({f.name[:-4]: f.read_text().split("\n---\n") for f in sorted(Path(path).glob("*.txt"))})

    def available(self, program: str) -> bool:
        return any(c.split()[0] == program for c in self.outputs)

    def run(self, command: str) -> str:
        self.calls.append(command)
        outs = self.outputs.get(command)
        if not outs:
            raise SensorUnavailable(f"no recorded output for `{command}`")
        return outs.pop(0) if len(outs) > 1 else outs[0]


@dataclass
class Roots:
    """Where sensors read from. Defaults are the live system; tests pass fixture trees.

    Attributes:
        sys: the sysfs root ("/sys").
        proc: the procfs root ("/proc").
        commands: runs ``vcgencmd`` and friends (RecordedCommands in tests).
    """

    sys: Path = Path("/sys")
    proc: Path = Path("/proc")
    commands: CommandRunner = field(default_factory=CommandRunner)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Roots":
        """Roots from ``FLEET_TELEMETRY_SYS``, ``FLEET_TELEMETRY_PROC`` and
        ``FLEET_TELEMETRY_COMMANDS`` (a folder of recorded outputs, see
        RecordedCommands.from_dir), else the live system."""
        env = os.environ if env is None else env
        cmds = env.get("FLEET_TELEMETRY_COMMANDS")
        return cls(sys=Path(env.get("FLEET_TELEMETRY_SYS") or "/sys"),
                   proc=Path(env.get("FLEET_TELEMETRY_PROC") or "/proc"),
                   commands=RecordedCommands.from_dir(cmds) if cmds else CommandRunner())


def read_text(path: Path) -> str:
    """The stripped text of a sysfs/procfs file (raw os.read: a third of Path.read_text's cost,
    which matters at 50 Hz). Raises SensorUnavailable when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
    except OSError as e:
        raise SensorUnavailable(f"{path}: {e.strerror or e}") from None
    return b"".join(chunks).decode(errors="replace").strip()


def read_int(path: Path) -> int:
    """A sysfs file holding one integer. Raises SensorUnavailable (unreadable or not an int)."""
    text = read_text(path)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        raise SensorUnavailable(f"{path}: expected an integer, got {text[:40]!r}") from None


class Sensor(abc.ABC):
    """A telemetry source (an ABC, like the backends and pipelines). Subclasses set ``source``,
    build ``channels`` in ``__init__`` and implement ``probe`` (an instance when the source exists
    here, else None) and ``read``; a class missing either cannot be instantiated.

    Attributes:
        source: plug-in name (also the channel-name prefix).
        emulated: True for modelled values.
        period_s: read at most this often (s); 0 = every sampler tick. Sensors whose read spawns
            processes (vcgencmd) use it to bound their cost.
        channels: what ``read`` returns, fixed at discovery.
    """

    source = ""
    emulated = False
    period_s = 0.0
    note = ""

    def __init__(self) -> None:
        self.channels: list[Channel] = []

    @classmethod
    @abc.abstractmethod
    def probe(cls, config, roots: Roots, **kwargs) -> "Sensor | None":
        """An instance when this source is present for ``config`` (a BoardConfig), else None."""

    def channel(self, quantity: str, unit: str, kind: str, note: str = "") -> Channel:
        """Declare a channel named ``<source>.<quantity>``."""
        c = Channel(f"{self.source}.{quantity}", unit, kind, self.source, self.emulated, note)
        self.channels.append(c)
        return c

    def start(self) -> None:
        """Called when a sampling window opens (e.g. to prime counters). Default: nothing."""

    @abc.abstractmethod
    def read(self) -> tuple[dict[str, float | None], dict[str, str]]:
        """One reading: (channel name → value or None, channel or sensor name → error message).
        Never raises."""

    def describe(self) -> dict:
        """{source, emulated, channels, note} for the agent's ``info``."""
        d = {"source": self.source, "emulated": self.emulated,
             "channels": [c.to_dict() for c in self.channels]}
        if self.period_s:
            d["period_s"] = self.period_s
        if self.note:
            d["note"] = self.note
        return d
