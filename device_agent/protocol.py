"""The agent's wire format: JSON lines over stdin/stdout (docs/contracts.md §4).

This is the ONE module that defines it; the controller (``fleet.remote``) imports it.

One request per line, one reply per request, in order. UTF-8, ``\\n``-terminated, at most
``MAX_MESSAGE_BYTES`` per line (newline included). The agent writes nothing else to stdout.

Request::

    {"id": 7, "op": "info|load|run|telemetry|unload|shutdown|parity", "args": {...}}

Reply::

    {"id": 7, "ok": true,  "result": {...}, "timings": {"handle_ms": 12.3}}
    {"id": 7, "ok": false, "error": {"type": "BadInput", "message": "...", "fix": "..."},
     "timings": {"handle_ms": 0.1}}

``id`` is an int (or string) chosen by the controller and echoed back; a line that cannot be
parsed far enough to find its id gets a reply with ``"id": null``. ``timings`` values are
milliseconds; every reply has ``handle_ms`` (request parsed → reply built), ``run`` and ``load``
add ``load_ms`` when they loaded a pipeline.

Ops and their ``args``:

- ``info``: ``{}`` → board, accelerator, emulated, backends, cpu, memory, models, loaded pipelines,
  and ``telemetry: {"sensors": [{"source", "emulated", "channels": [...], "note"?, "period_s"?}],
  "default_rate_hz": 10.0}`` (the sensors discovered at start-up), and ``stack``, the stack
  fingerprint (``device_agent.stack``; collected once per agent process, models re-read on every
  ``info``; judged by the controller's ``fleet doctor``, recorded with every run)::

      "stack": {
        "schema": 1, "accelerator": "hailo8l", "emulated": false,
        "os": {"name": "Debian GNU/Linux 12 (bookworm)", "id", "version_id", "version_codename"},
        "kernel": {"release": "6.6.51+rpt-rpi-2712", "version": "<proc/version>", "machine": "aarch64"},
        "python": {"version": "3.11.2", "implementation": "CPython", "executable": "..."},
        "agent": {"version": "0.1.0"},
        "board_model": "Raspberry Pi 5 Model B Rev 1.0",        # /proc/device-tree/model or null
        "hailo": {                                             # only on hailo8l/hailo8 boards
          "applicable": true,                                  # false + "reason" when emulated
          "library": {"version": "4.23.0", "source": "hailortcli --version"},
          "python_binding": {"version": "4.23.0", "source": "python dist hailort"},
          "driver": {"version": "4.23.0", "source": "/sys/module/hailo_pci/version"},
          "firmware": {"version": "4.23.0", "raw": "4.23.0 (release,app,...)"},
          "device": {"architecture": "hailo8l", "architecture_raw": "HAILO8L", "board_name",
                     "product_name", "serial_number", "part_number"},   # fw-control identify
          "pcie": {"address": "0000:01:00.0", "current_speed": "8.0 GT/s PCIe", "current_gen": 3,
                   "max_speed", "max_gen", "width": 1}},
        "rknn": {                                              # only on rk3588 boards
          "applicable": true,
          "runtime": {"version": "2.3.2", "path": "/usr/lib/librknnrt.so"},
          "driver": {"version": "0.9.8", "source": "/sys/kernel/debug/rknpu/version | dmesg"},
          "toolkit_lite2": {"version": "2.3.2"}},
        "models": {"<model>": {"files": {"<file>": {"sha256", "target", "format", "present",
                                                    "hef_arch"?, "toolkit"?}}}},
        "errors": {"hailo.driver": "why it could not be read", ...}}

  A fact that cannot be read is ``null`` with the reason under ``errors``. ``hef_arch`` is the
  manifest entry's ``hw_arch`` (or ``exporter.hw_arch``), else its ``target``; ``toolkit`` (for
  .rknn) is ``exporter["rknn-toolkit2"]`` or ``toolkit_version``.
- ``load``: ``{"pipeline": "asr.whisper_hybrid", "model_dir": "models/whisper-tiny.en" (optional),
  "options": {...load options}}`` → ``{"pipeline", "model_dir", "options", "models", ...}``.
- ``run``: ``{"pipeline": "asr.whisper_hybrid", "input": "data/speech/jfk.flac",
  "options": {...}}`` → the pipeline's result (contracts §4). ``input`` and ``model_dir`` are
  relative to fleet_root or absolute inside it. A pipeline not yet loaded with the requested load
  options is loaded first (and stays loaded); its cost is reported as ``timings.load_ms``.
  ``args.telemetry`` (optional): ``true`` (default: sample every sensor at 10 Hz while the
  pipeline runs), ``{"rate_hz": 50}`` (0 < Hz <= 100), or ``false`` (off). When the board has
  sensors, the result gains a ``telemetry`` field (not loading, only the request)::

      "telemetry": {
        "trace": {"t0": 1732230000.12, "rate_hz": 10.0, "decimated": 1,
                  "channels": [{"name": "pi5.temp", "unit": "°C", "kind": "temperature",
                                "source": "pi5", "emulated": false, "note": "..."}, ...],
                  "t": [0.0, 0.1, ...],                       # s since t0
                  "values": {"pi5.temp": [61.2, 61.4, ...]},  # null = not read or failed
                  "errors": {"rk3588.npu_load.core2": {"message": "...", "count": 1}}},
        "summary": {"samples": 23, "duration_s": 2.2, "inferences": 1,
                    "temperature": {"pi5.temp": {"max_c", "mean_c", "start_c", "end_c", "n", "emulated"}},
                    "power": {"pi5.power_soc": {"mean_w", "energy_j", "energy_per_inference_j",
                                                "covered_s", "note", "emulated"}},
                    "throttle": {"events", "throttled", "frequency_capped", "undervoltage",
                                 "soft_temp_limit", "channels"},
                    "frequency": {"linux.freq.policy0": {"min", "max", "mean", "unit", "drops", "n"}},
                    "errors": {...}}}

  Channel kinds, units and the summary rules are in ``device_agent.telemetry`` (``base``,
  ``summary``); throttle channels use the bit layout of the Pi's ``vcgencmd get_throttled``.
  Traces over 1200 samples are decimated on the wire (``decimated: k``); the summary always uses
  every sample.
- ``telemetry``: ``{}`` → one reading of every sensor now:
  ``{"t0", "channels": [...], "values": {channel: value}, "errors": {...}}`` (the controller
  polls it to wait for a cool-down before measuring).
- ``unload``: ``{"pipeline": "asr.whisper_hybrid"}`` → ``{"unloaded": n}``; NotLoaded if none.
- ``shutdown``: ``{}`` → ``{}``; the agent then unloads everything and exits 0.
- ``parity``: ``{"pipeline", "options", "inputs": [audio paths | texts]}`` → the same inputs
  through the CPU fp32 reference and the board's NPU stage (or its emulation), per-input cosine
  and max abs error (+ both transcriptions for Whisper); ``device_agent.parity`` documents it.

Error types (``error.type``) and the exit code the CLI uses for each are the classes below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Largest accepted line, request or reply, newline included (bytes). 1 MiB is far above any
#: real message (an ASR result is a few KiB) and bounds the agent's memory per line.
MAX_MESSAGE_BYTES = 1 << 20

#: Operations the agent understands.
OPS = ("info", "load", "run", "telemetry", "unload", "shutdown", "parity")

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class AgentError(Exception):
    """An error the agent reports: ``type`` (class name), ``message`` (what, naming the thing)
    and ``fix`` (one sentence: what to do). ``exit_code`` is what ``fleet-agent`` exits with."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"type": self.type, "message": self.message, "fix": self.fix}

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class BadInput(AgentError):
    """The request or a file it names is wrong: malformed JSON, missing/invalid args, unreadable
    or out-of-range audio, a path outside fleet_root, an unknown option. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class Oversized(BadInput):
    """A line longer than MAX_MESSAGE_BYTES. Exit code 2."""


class UnknownOp(BadInput):
    """``op`` is not one of OPS. Exit code 2."""


class UnknownPipeline(BadInput):
    """``pipeline`` is not a declared pipeline. Exit code 2."""


class NotLoaded(BadInput):
    """``unload`` of a pipeline that is not loaded. Exit code 2."""


class ModelError(AgentError):
    """A model or runtime problem: artifact missing or sha256 mismatch, backend not available,
    a runtime call failed. Exit code 3."""

    exit_code = EXIT_RUNTIME


class Internal(AgentError):
    """An unexpected exception inside the agent (a bug); the message carries its repr. Exit 3."""


ERROR_TYPES: dict[str, type[AgentError]] = {
    c.__name__: c for c in (BadInput, Oversized, UnknownOp, UnknownPipeline, NotLoaded,
                            ModelError, Internal)
}


def error_from_dict(d: dict) -> AgentError:
    """Rebuild an AgentError subclass from a reply's ``error`` object (unknown types → AgentError)."""
    cls = ERROR_TYPES.get(str(d.get("type")), AgentError)
    return cls(str(d.get("message", "")), str(d.get("fix", "")))


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------
@dataclass
class Request:
    """One request: ``id`` (int or str, echoed), ``op`` (one of OPS), ``args`` (op-specific)."""

    id: int | str | None
    op: str
    args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "op": self.op, "args": self.args}


@dataclass
class Reply:
    """One reply. ``ok`` with ``result``, or not ``ok`` with ``error`` (type/message/fix).
    ``timings`` maps stage names to milliseconds."""

    id: int | str | None
    ok: bool
    result: dict | None = None
    error: dict | None = None
    timings: dict = field(default_factory=dict)

    @classmethod
    def success(cls, id, result: dict, timings: dict | None = None) -> "Reply":
        return cls(id=id, ok=True, result=result, timings={} if timings is None else timings)

    @classmethod
    def failure(cls, id, err: AgentError, timings: dict | None = None) -> "Reply":
        return cls(id=id, ok=False, error=err.to_dict(), timings={} if timings is None else timings)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "ok": self.ok}
        if self.ok:
            d["result"] = self.result if self.result is not None else {}
        else:
            d["error"] = self.error or {"type": "Internal", "message": "?", "fix": ""}
        d["timings"] = self.timings
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Reply":
        return cls(id=d.get("id"), ok=bool(d.get("ok")), result=d.get("result"),
                   error=d.get("error"), timings=d.get("timings") or {})


# --------------------------------------------------------------------------------------------
# encode / decode
# --------------------------------------------------------------------------------------------
def _encode(obj: dict) -> bytes:
    try:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise Internal(f"message is not JSON-serialisable: {e}",
                       "report this as an agent bug, with the request that caused it") from None
    data += b"\n"
    if len(data) > MAX_MESSAGE_BYTES:
        raise Oversized(f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                        "ask for less output per request (e.g. fewer tokens)")
    return data


def encode_request(req: Request | dict) -> bytes:
    """Serialise a request to one ``\\n``-terminated UTF-8 line. Raises Oversized."""
    return _encode(req.to_dict() if isinstance(req, Request) else dict(req))


def encode_reply(rep: Reply) -> bytes:
    """Serialise a reply to one ``\\n``-terminated UTF-8 line.

    Raises:
        Oversized: the encoded reply exceeds MAX_MESSAGE_BYTES.
        Internal: the result holds something JSON cannot carry (NaN, numpy arrays…).
    """
    return _encode(rep.to_dict())


def _parse_line(line: bytes | str) -> dict:
    raw = line.encode() if isinstance(line, str) else bytes(line)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Oversized(f"line is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                        "send smaller requests (paths, not file contents)")
    text = raw.decode("utf-8", errors="strict") if raw else ""
    if not text.strip():
        raise BadInput("empty line", 'send one JSON object per line, e.g. {"id": 1, "op": "info"}')
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        cut = " (the line ends before the JSON does: truncated?)" if e.pos >= len(text.rstrip()) else ""
        raise BadInput(f"line is not valid JSON: {e.msg} at character {e.pos + 1}{cut}",
                       'send one JSON object per line, e.g. {"id": 1, "op": "info"}') from None
    if not isinstance(obj, dict):
        raise BadInput(f"message is a JSON {type(obj).__name__}, not an object",
                       'send one JSON object per line, e.g. {"id": 1, "op": "info"}')
    return obj


def request_id(line: bytes | str):
    """Best-effort id of a line that failed to decode (None if it cannot be found)."""
    try:
        obj = json.loads(line)
        rid = obj.get("id") if isinstance(obj, dict) else None
        return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None
    except Exception:
        return None


def decode_request(line: bytes | str) -> Request:
    """Parse one request line.

    Raises:
        Oversized: more than MAX_MESSAGE_BYTES.
        BadInput: not UTF-8 JSON, not an object, bad ``id`` or ``args`` type.
        UnknownOp: ``op`` not in OPS.
    """
    try:
        obj = _parse_line(line)
    except UnicodeDecodeError:
        raise BadInput("line is not UTF-8", "send UTF-8 encoded JSON lines") from None
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))):
        raise BadInput(f"id must be an integer or string, got {type(rid).__name__}",
                       "use the request counter as id")
    op = obj.get("op")
    if not isinstance(op, str):
        raise BadInput("request has no 'op' string", f"set op to one of {', '.join(OPS)}")
    if op not in OPS:
        raise UnknownOp(f"unknown op {op!r}", f"use one of {', '.join(OPS)}")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadInput(f"args must be a JSON object, got {type(args).__name__}",
                       'pass args as an object, e.g. "args": {}')
    return Request(id=rid, op=op, args=args)


def decode_reply(line: bytes | str) -> dict:
    """Parse one reply line into its dict (keys id, ok, result | error, timings).

    Returns the plain dict so callers can use ``msg.get(...)``; ``Reply.from_dict(msg)`` gives the
    dataclass. Raises Oversized or BadInput (not JSON, not an object, no ``ok`` bool).
    """
    try:
        obj = _parse_line(line)
    except UnicodeDecodeError:
        raise BadInput("reply is not UTF-8", "check that nothing but the agent writes to stdout") from None
    if not isinstance(obj.get("ok"), bool):
        raise BadInput(f"reply has no boolean 'ok': {str(obj)[:200]}",
                       "check that nothing but the agent writes to the agent's stdout")
    if obj["ok"] is False and not isinstance(obj.get("error"), dict):
        raise BadInput("error reply without an 'error' object", "upgrade the agent on the board")
    return obj
