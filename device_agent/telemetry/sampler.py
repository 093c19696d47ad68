"""The background sampler: reads every sensor at a fixed rate while a pipeline request runs.

    with Sampler(sensors, rate_hz=10) as s:
        result = pipeline.run(...)
    result["telemetry"] = s.telemetry(inferences=1)    # {"trace": ..., "summary": ...}

A sample is taken when the window opens and when it closes (every sensor read, whatever its
``period_s``), and on a fixed schedule in between (a background thread; no drift: tick k is due
at start + k/rate). Opening and closing never wait for that thread to be scheduled (on a loaded
board a thread start or join can cost tens of ms): the thread is started without the start
handshake, and ``stop`` only takes the sample lock, so a tick in progress finishes first and a
late tick sees the stop flag and exits without reading. The summary is computed from every sample; the trace sent on the wire keeps
every k-th sample when there are more than ``max_wire_samples`` (``decimated: k``), so a reply
stays far below the protocol's line limit.
"""

from __future__ import annotations

import _thread
import math
import threading
import time
from typing import Callable

from .base import Sensor
from .summary import summarize

DEFAULT_RATE_HZ = 10.0
MAX_RATE_HZ = 100.0
MAX_WIRE_SAMPLES = 1200  # 2 min at 10 Hz; ~20 channels x 1200 samples is ~200 KB of JSON


def _round(v):
    if v is None:
        return None
    return int(v) if float(v).is_integer() and abs(v) < 2 ** 53 else round(float(v), 4)


class Sampler:
    """Samples ``sensors`` at ``rate_hz`` between ``start()`` and ``stop()``.

    Args:
        sensors: the discovered sensors.
        rate_hz: samples per second (Hz), 0 < rate_hz <= 100.
        clock: monotonic seconds (injectable).
        wall: wall-clock seconds since the epoch, for ``t0`` (injectable).
        max_wire_samples: cap on samples in the wire trace (decimated above it).

    Raises:
        ValueError: rate_hz out of range.
    """

    def __init__(self, sensors: list[Sensor], rate_hz: float = DEFAULT_RATE_HZ,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 max_wire_samples: int = MAX_WIRE_SAMPLES):
        if not (0 < float(rate_hz) <= MAX_RATE_HZ):
            raise ValueError(f"telemetry rate_hz must be in (0, {MAX_RATE_HZ:g}], got {rate_hz!r}")
        self.sensors = list(sensors)
        self.rate_hz = float(rate_hz)
        self.clock = clock
        self.wall = wall
        self.max_wire_samples = max_wire_samples
        self.channels = [c for s in self.sensors for c in s.channels]
        self.t: list[float] = []
        self.values: dict[str, list] = {c.name: [] for c in self.channels}
        self.errors: dict[str, dict] = {}
        self._last_read: dict[int, float] = {}
        self._stop = threading.Event()
        self._ident: int | None = None  # the sampling thread's id (pthread_t on Linux)
        self._lock = threading.Lock()
        self._t_start = 0.0
        self.t0 = 0.0

    # -- sampling --------------------------------------------------------------------------
    def sample(self, force: bool = False) -> None:
        """Take one sample now (every sensor if ``force``, else those whose period has passed)."""
        with self._lock:
            self._sample(force)

    def _sample(self, force: bool = False) -> None:
        now = self.clock()
        row: dict[str, float | None] = {}
        for i, s in enumerate(self.sensors):
            names = [c.name for c in s.channels]
            if not force and s.period_s and now - self._last_read.get(i, -1e18) < s.period_s:
                row.update(dict.fromkeys(names))
                continue
            self._last_read[i] = now
            try:
                vals, errs = s.read()
            except Exception as e:  # a sensor bug must not break the measurement
                vals, errs = {}, {s.source: f"{type(e).__name__}: {e}"}
            for n in names:
                v = vals.get(n)
                if v is not None and not math.isfinite(v):  # JSON carries no NaN/inf
                    errs = {**errs, n: f"non-finite value {v!r}"}
                    v = None
                row[n] = v
            for k, msg in errs.items():
                e = self.errors.setdefault(k, {"message": msg, "count": 0})
                e["message"] = msg
                e["count"] += 1
        self.t.append(now - self._t_start)
        for n in self.values:
            self.values[n].append(row.get(n))

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        k = 1
        while True:
            delay = self._t_start + k * period - self.clock()
            if self._stop.wait(max(0.0, delay)):
                return
            with self._lock:
                if self._stop.is_set():  # stopped while this tick waited for the lock
                    return
                self._sample()
            k += 1
            behind = int((self.clock() - self._t_start) / period)
            if behind >= k:  # a slow read: skip the missed ticks rather than burst
                k = behind + 1

    def start(self) -> "Sampler":
        """Prime the sensors, take the first sample and start the background thread."""
        for s in self.sensors:
            try:
                s.start()
            except Exception:
                pass
        self.t0 = self.wall()
        self._t_start = self.clock()
        self.sample(force=True)
        self._ident = _thread.start_new_thread(self._loop, ())
        return self

    def stop(self) -> None:
        """Stop sampling and take the closing sample (waits at most for a tick in progress)."""
        with self._lock:
            self._stop.set()
            self._sample(force=True)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results ---------------------------------------------------------------------------
    def trace(self, wire: bool = True) -> dict:
        """The trace (device_agent.telemetry.summary documents its shape). ``wire`` rounds the
        values to 4 decimals and decimates above ``max_wire_samples`` (keeping the last sample)."""
        n = len(self.t)
        k = 1
        if wire and n > self.max_wire_samples:
            k = -(-n // self.max_wire_samples)
        idx = list(range(0, n, k))
        if idx and idx[-1] != n - 1:
            idx.append(n - 1)
        conv = _round if wire else (lambda v: v)
        return {"t0": self.t0, "rate_hz": self.rate_hz, "decimated": k,
                "channels": [c.to_dict() for c in self.channels],
                "t": [round(self.t[i], 4) if wire else self.t[i] for i in idx],
                "values": {name: [conv(vs[i]) for i in idx] for name, vs in self.values.items()},
                "errors": {k_: dict(v) for k_, v in self.errors.items()}}

    def telemetry(self, inferences: int = 1) -> dict:
        """``{"trace": wire trace, "summary": summary of the full-resolution trace}``."""
        return {"trace": self.trace(wire=True), "summary": summarize(self.trace(wire=False), inferences)}
