"""The agent: board facts (``info``), loaded pipelines, and the JSON-lines ``serve`` loop.

Pipelines stay loaded between requests, keyed by (pipeline, model_dir, load options), so a
suite pays the load once per variant. Every reply carries ``timings.handle_ms``.
"""

from __future__ import annotations

import os
import platform
import select
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import BinaryIO

from . import __version__
from .backends import create_backends
from .backends.base import Backend
from .config import BoardConfig
from .manifest import check_npu_targets, list_models
from .pipelines import PIPELINES, Pipeline, pipeline_class
from .protocol import (
    EXIT_RUNTIME,
    MAX_MESSAGE_BYTES,
    AgentError,
    BadInput,
    Internal,
    NotLoaded,
    Oversized,
    Reply,
    Request,
    decode_request,
    encode_reply,
    request_id,
)
from .stack import collect_stack
from .telemetry import DEFAULT_RATE_HZ, Sampler, discover


# Arm MIDR part numbers (implementer 0x41) of the cores fleet's boards carry (Arm TRMs; Linux
# arch/arm64/include/asm/cputype.h): an arm64 /proc/cpuinfo names no model, only these numbers.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76",
             "0xd41": "Cortex-A78", "0xd0c": "Neoverse-N1"}


def cpu_info(text: str | None = None) -> dict:
    """{model, count, machine}: CPU model from /proc/cpuinfo (x86 'model name', Arm 'Model' or
    'Hardware' lines; else the Arm cores named from their 'CPU part' numbers, e.g. ``Cortex-A76``
    or ``Cortex-A55 + Cortex-A76`` on an RK3588 with a mainline kernel), logical CPU count.
    ``text`` replaces /proc/cpuinfo (tests)."""
    model = platform.processor() or ""
    parts: list[str] = []
    try:
        lines = (Path("/proc/cpuinfo").read_text(errors="replace") if text is None else text).splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, val = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and val.strip():
            model = val.strip()
            break
        if key.strip() == "CPU part" and val.strip():
            parts.append(ARM_PARTS.get(val.strip().lower(), f"Arm part {val.strip()}"))
    else:
        if parts:
            model = " + ".join(sorted(set(parts)))
    return {"model": model or "unknown", "count": os.cpu_count(), "machine": platform.machine()}


def memory_info() -> dict:
    """{total_mb, available_mb} from /proc/meminfo (MiB), empty if unreadable."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out["total_mb" if key == "MemTotal" else "available_mb"] = int(val.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return out


class Agent:
    """Handles requests (docs/contracts.md §4; ``device_agent.protocol`` documents the ops).

    Args:
        config: this board.
        backends: backend name → Backend (default: onnx, hailo, rknn).
        sensors: telemetry sensors (default: ``telemetry.discover`` at start-up).
        stack_roots: where the stack fingerprint reads from (``device_agent.stack.StackRoots``;
            default the live system).
    """

    def __init__(self, config: BoardConfig, backends: dict[str, Backend] | None = None,
                 sensors: list | None = None, stack_roots=None):
        self.config = config
        self.stack_roots = stack_roots
        self._stack: dict | None = None
        self.backends = backends or create_backends()
        self.loaded: dict[tuple, Pipeline] = {}
        self.sensors = discover(config, backends=self.backends) if sensors is None else list(sensors)

    # -- ops ---------------------------------------------------------------------------------
    def info(self) -> dict:
        """Board, backends (version or the reason absent), CPU, memory, versions, models (from
        their manifests), declared pipelines with their options, and what is loaded."""
        c = self.config
        pipelines = {}
        for name, cls in PIPELINES.items():
            defaults = cls(c).default_options()
            pipelines[name] = {"default_model": cls.default_model,
                               "options": {o.name: {"default": defaults[o.name], "help": o.help,
                                                    "choices": list(o.choices) if o.choices else None,
                                                    "load": o.load} for o in cls.OPTIONS}}
        return {
            "board": c.board, "accelerator": c.accelerator, "emulated": c.emulated,
            "fleet_root": str(c.root), "config_file": str(c.config_file) if c.config_file else None,
            "backends": {name: b.describe() for name, b in self.backends.items()},
            "cpu": cpu_info(), "memory": memory_info(),
            "agent": {"version": __version__},
            "python": {"version": platform.python_version(), "executable": sys.executable},
            "models": list_models(c.root / "models"),
            "pipelines": pipelines,
            "loaded": [{"pipeline": k[0], "model_dir": k[1], "options": dict(k[2])} for k in self.loaded],
            "telemetry": {"sensors": [s.describe() for s in self.sensors], "default_rate_hz": DEFAULT_RATE_HZ},
            "stack": self.stack(),
        }

    def stack(self, refresh: bool = False) -> dict:
        """The stack fingerprint (``device_agent.stack``), collected once per agent process (before
        any model opens the NPU: `hailortcli fw-control identify` needs the device free, §5.2);
        the models part is re-read every call since a deploy may change it."""
        if self._stack is None or refresh:
            self._stack = collect_stack(self.config, self.stack_roots)
        else:
            from .stack.collect import collect_models

            errors = {k: v for k, v in self._stack["errors"].items() if not k.startswith("models.")}
            self._stack = {**self._stack, "models": collect_models(self.config.root / "models", errors),
                           "errors": errors}
        return self._stack

    def _prepare(self, args: dict) -> tuple[Pipeline, Path, dict, tuple]:
        cls = pipeline_class(args.get("pipeline"))
        pipe = cls(self.config)
        options = args.get("options") or {}
        if not isinstance(options, dict):
            raise BadInput("options must be a JSON object", 'pass e.g. "options": {"precision": "int8"}')
        opts = pipe.resolve_options(options)
        model_dir = self.config.resolve(args.get("model_dir") or f"models/{cls.default_model}", "model_dir")
        return pipe, model_dir, opts, (cls.name, str(model_dir), pipe.load_key(opts))

    def _ensure_loaded(self, args: dict, timings: dict) -> tuple[Pipeline, dict, bool]:
        pipe, model_dir, opts, key = self._prepare(args)
        if key in self.loaded:
            return self.loaded[key], opts, False
        check_npu_targets(model_dir, self.config.accelerator)
        t = time.perf_counter()
        pipe.load(model_dir, self.backends, opts)
        timings["load_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        self.loaded[key] = pipe
        return pipe, opts, True

    def load(self, args: dict, timings: dict) -> dict:
        """Load a pipeline (no-op if loaded with the same load options)."""
        pipe, opts, fresh = self._ensure_loaded(args, timings)
        return {**pipe.info, "loaded_now": fresh,
                "options": {o.name: opts[o.name] for o in pipe.OPTIONS if o.load}}

    def run(self, args: dict, timings: dict) -> dict:
        """Run a pipeline on ``args.input`` (loading it first if needed)."""
        if not args.get("input"):
            raise BadInput("run needs args.input", "pass the input path relative to fleet_root, "
                           "e.g. data/speech/jfk.flac")
        input_path = self.config.resolve(args["input"], "input")
        pipe, opts, _ = self._ensure_loaded(args, timings)
        return pipe.run(input_path, opts)

    def run_measured(self, args: dict, timings: dict) -> dict:
        """``run`` with the telemetry sampler around the pipeline request (the wire's ``run``).

        ``args.telemetry``: absent/true = sample at DEFAULT_RATE_HZ, ``{"rate_hz": x}``, or false
        = off. Loading happens before the sampler starts, so a trace covers the request only.
        The result gets ``telemetry: {trace, summary}`` (device_agent.protocol).

        Raises:
            BadInput: a bad ``telemetry`` argument (and everything ``run`` raises).
        """
        tel = args.get("telemetry", True)
        if tel is False or not self.sensors:
            return self.run(args, timings)
        if tel is True or tel is None:
            rate = DEFAULT_RATE_HZ
        elif isinstance(tel, dict) and set(tel) <= {"rate_hz"}:
            rate = tel.get("rate_hz", DEFAULT_RATE_HZ)
        else:
            raise BadInput(f"telemetry must be true, false or {{\"rate_hz\": Hz}}, got {tel!r}",
                           'pass e.g. "telemetry": {"rate_hz": 10}')
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100:
            raise BadInput(f"telemetry.rate_hz must be a number in (0, 100], got {rate!r}",
                           'pass e.g. "telemetry": {"rate_hz": 10}')
        if not args.get("input"):
            return self.run(args, timings)  # raises BadInput
        self.config.resolve(args["input"], "input")  # same error order as run: a bad path before any load
        self._ensure_loaded(args, timings)
        with Sampler(self.sensors, rate) as sampler:
            result = self.run(args, timings)
        # a request may run many inferences (model.bench task=throughput says how many)
        n = result.get("inferences") if isinstance(result.get("inferences"), int) and result["inferences"] > 0 else 1
        return {**result, "telemetry": sampler.telemetry(inferences=n)}

    def telemetry(self) -> dict:
        """One reading of every sensor now: ``{"t0", "channels", "values": {ch: value}, "errors"}``
        (used by the controller to wait for a cool-down)."""
        s = Sampler(self.sensors)
        for sensor in self.sensors:
            sensor.start()
        s.t0 = time.time()
        s.sample(force=True)
        tr = s.trace(wire=True)
        return {"t0": tr["t0"], "channels": tr["channels"],
                "values": {k: v[0] for k, v in tr["values"].items()}, "errors": tr["errors"]}

    def unload(self, args: dict) -> dict:
        """Unload every loaded instance of ``args.pipeline`` (all pipelines if omitted)."""
        name = args.get("pipeline")
        if name is not None:
            pipeline_class(name)
        keys = [k for k in self.loaded if name is None or k[0] == name]
        if name is not None and not keys:
            raise NotLoaded(f"pipeline {name!r} is not loaded", "nothing to unload")
        for k in keys:
            self.loaded.pop(k).unload()
        return {"unloaded": len(keys)}

    def close(self) -> None:
        """Unload everything and release backends."""
        self.unload({})
        for b in self.backends.values():
            b.close()

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        """Run one request; never raises (errors become error replies)."""
        t0 = time.perf_counter()
        timings: dict = {}
        try:
            if req.op == "info":
                result = self.info()
            elif req.op == "load":
                result = self.load(req.args, timings)
            elif req.op == "run":
                result = self.run_measured(req.args, timings)
            elif req.op == "telemetry":
                result = self.telemetry()
            elif req.op == "unload":
                result = self.unload(req.args)
            elif req.op == "parity":
                from .parity import run_parity  # numpy work only; imported when used

                result = run_parity(self, req.args, timings)
            else:  # shutdown
                result = {}
            reply = Reply.success(req.id, result, timings)
        except AgentError as e:
            reply = Reply.failure(req.id, e, timings)
        except Exception as e:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            reply = Reply.failure(req.id, Internal(f"{type(e).__name__}: {e}",
                                                   "report this agent bug with the request"), timings)
        timings["handle_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
        return reply

    def handle_line(self, line: bytes) -> tuple[bytes, bool]:
        """Decode, handle and encode one line. Returns (reply line, stop?)."""
        t0 = time.perf_counter()
        try:
            req = decode_request(line)
        except AgentError as e:
            rep = Reply.failure(request_id(line) if len(line) <= MAX_MESSAGE_BYTES else None, e,
                                {"handle_ms": round((time.perf_counter() - t0) * 1e3, 3)})
            return encode_reply(rep), False
        rep = self.handle(req)
        try:
            data = encode_reply(rep)
        except AgentError as e:
            data = encode_reply(Reply.failure(req.id, e, rep.timings))
        return data, req.op == "shutdown"


#: How long ``serve`` lives on once nobody can read its replies (s): time for a normal shutdown
#: (reply sent, pipelines unloading) to finish by itself before the watchdog ends the process.
ORPHAN_GRACE_S = 5.0


def watch_reply_reader(fd: int, grace_s: float = ORPHAN_GRACE_S, poll_s: float = 1.0) -> threading.Thread:
    """Exit the process ``grace_s`` (s) after the reader of ``fd`` (serve's reply pipe) went away.

    A request can hang (a stuck NPU call, a deadlock) so the serve loop never reads stdin again and
    never sees EOF; when the controller gives the session up, sshd closes its end of the agent's
    stdout (and exits when the SSH connection goes). No reply can be delivered after that, so the
    process only holds the NPU (a Hailo VDevice, an RKNN context) the next agent needs.
    ``poll(2)`` reports POLLERR on a pipe's write end once no reader is left (POLLHUP for a socket
    or a tty), without reading or writing anything. The thread polls its own dup of ``fd``, so a
    closed-and-reused fd number is never watched by mistake. Exits with ``EXIT_RUNTIME`` (3) via
    ``os._exit``: the main thread may be stuck where it cannot be unwound.

    Returns:
        the started daemon thread.
    """
    watched = os.dup(fd)

    def watch():
        poller = select.poll()
        poller.register(watched, 0)  # 0: only the always-reported POLLERR/POLLHUP/POLLNVAL
        while True:
            events = 0
            for _, ev in poller.poll(poll_s * 1000):
                events |= ev
            if events & select.POLLNVAL:
                return
            if events & (select.POLLERR | select.POLLHUP):
                time.sleep(grace_s)
                try:
                    os.write(2, b"fleet-agent: nobody reads the replies any more (the controller gave the "
                                b"session up): exiting\n")
                except OSError:
                    pass
                os._exit(EXIT_RUNTIME)

    t = threading.Thread(target=watch, name="fleet-agent-reply-watch", daemon=True)
    t.start()
    return t


def _read_line(f: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes | None, bool]:
    """One line of at most ``limit`` bytes → (line, oversized). An oversized line is drained up to
    its newline so the next request starts clean. (None, False) at EOF."""
    line = f.readline(limit + 1)
    if not line:
        return None, False
    if len(line) > limit:
        while not line.endswith(b"\n"):
            line = f.readline(1 << 16)
            if not line:
                break
        return b"", True
    return line, False


def serve(agent: Agent, infile: BinaryIO, outfile: BinaryIO) -> int:
    """JSON lines: read requests from ``infile``, write replies to ``outfile``, until shutdown or
    EOF. Returns the exit status (0). A malformed line gets an error reply, never a crash."""
    try:
        while True:
            line, oversized = _read_line(infile)
            if line is None:
                break
            if oversized:
                err = Oversized(f"request line over the {MAX_MESSAGE_BYTES}-byte limit",
                                "send smaller requests (paths, not file contents)")
                data, stop = encode_reply(Reply.failure(None, err, {"handle_ms": 0.0})), False
            elif not line.strip():
                continue  # blank lines (e.g. a trailing newline) are ignored
            else:
                data, stop = agent.handle_line(line)
            try:
                outfile.write(data)
                outfile.flush()
            except BrokenPipeError:
                break
            if stop:
                break
    finally:
        agent.close()
    return 0
