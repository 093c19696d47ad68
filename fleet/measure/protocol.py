"""The measurement protocol of a latency test, after MLPerf LoadGen's SingleStream scenario.

One query at a time (the next is issued when the previous completes). A measurement:

1. optionally cools down: polls the board's temperature until the chosen zone (or the hottest
   one) is below ``cooldown.below_c``, giving up after ``cooldown.timeout_s``;
2. runs ``warmup`` queries that are left out of every figure;
3. issues queries, cycling over the items, until at least ``min_queries`` have completed, every
   item has run once, and ``min_duration_s`` has passed since the first measured query was
   issued (LoadGen's min_query_count and min_duration), or ``max_queries`` is reached;
4. reports latency p50/p90/p99 with n, min, max and mean, and a verdict: VALID, or INVALID with
   every reason that applies:

   - too few samples (n < min_queries),
   - too short (duration < min_duration_s),
   - start temperature above ``start_temp_max_c``,
   - cool-down timed out,
   - throttled, frequency-capped, at the soft temperature limit or undervolted during the
     measurement (any measured query's telemetry summary; device_agent.telemetry.summary).

An INVALID measurement never passes a latency threshold: the suite fails the test with the
reasons. A board without a temperature or throttle sensor cannot show a violation; that is
stated in ``notes``, not hidden. Percentiles use numpy's default (linear interpolation), as the
rest of fleet's latency figures do. The clock and sleep are injectable for tests.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from device_agent.telemetry.summary import merge

_KEYS = {"min_queries", "min_duration_s", "max_queries", "start_temp_max_c", "cooldown", "sample_hz"}
_COOLDOWN_KEYS = {"below_c", "zone", "timeout_s", "poll_s"}


def _num(d: dict, key: str, where: str, lo: float | None = 0.0, integer: bool = False, strict: bool = False):
    v = d[key]
    kind = "a whole number" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ValueError(f"{where}{key} must be {kind}, got {v!r}")
    if lo is not None and (v <= lo if strict else v < lo):
        raise ValueError(f"{where}{key} must be {'>' if strict else '>='} {lo:g}, got {v!r}")
    return v


@dataclass
class MeasurementConfig:
    """Protocol settings (suite.yml ``measurement:``; ``warmup`` comes from ``warmup_requests``).

    Attributes:
        warmup: queries run first and excluded.
        min_queries: minimum measured queries.
        min_duration_s: minimum measured duration (s), first issue to last completion.
        max_queries: stop here even if min_duration_s is not reached (then INVALID: too short).
        start_temp_max_c: INVALID when the start temperature (°C) is above it.
        cooldown_below_c: wait before measuring until the zone is below this (°C); None = no wait.
        cooldown_zone: channel name or its last part (e.g. ``cpu-thermal``); None = the hottest.
        cooldown_timeout_s: give up waiting after this (s); the measurement is then INVALID.
        cooldown_poll_s: polling interval (s).
        sample_hz: telemetry sampling rate requested from the agent (Hz).
    """

    warmup: int = 1
    min_queries: int = 1
    min_duration_s: float = 0.0
    max_queries: int | None = None
    start_temp_max_c: float | None = None
    cooldown_below_c: float | None = None
    cooldown_zone: str | None = None
    cooldown_timeout_s: float = 300.0
    cooldown_poll_s: float = 2.0
    sample_hz: float = 10.0

    @classmethod
    def from_dict(cls, d: dict | None, warmup: int = 1) -> "MeasurementConfig":
        """Parse suite.yml's ``measurement:`` mapping.

        Raises:
            ValueError: unknown key, wrong type or out-of-range value (message names the key).
        """
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"measurement must be a mapping, got {type(d).__name__}")
        d = dict(d or {})
        unknown = set(d) - _KEYS
        if unknown:
            raise ValueError(f"unknown measurement key(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(_KEYS))}")
        w = "measurement."
        c = cls(warmup=warmup)
        if "min_queries" in d:
            c.min_queries = _num(d, "min_queries", w, 1, integer=True)
        if "min_duration_s" in d:
            c.min_duration_s = float(_num(d, "min_duration_s", w, 0))
        if d.get("max_queries") is not None:
            c.max_queries = _num(d, "max_queries", w, 1, integer=True)
            if c.max_queries < c.min_queries:
                raise ValueError(f"measurement.max_queries ({c.max_queries}) is below min_queries ({c.min_queries})")
        if d.get("start_temp_max_c") is not None:
            c.start_temp_max_c = float(_num(d, "start_temp_max_c", w, None))
        if "sample_hz" in d:
            c.sample_hz = float(_num(d, "sample_hz", w, 0, strict=True))
            if c.sample_hz > 100:
                raise ValueError(f"measurement.sample_hz must be <= 100, got {c.sample_hz:g}")
        cd = d.get("cooldown")
        if cd is not None:
            if not isinstance(cd, dict):
                raise ValueError("measurement.cooldown must be a mapping, e.g. {below_c: 60, timeout_s: 300}")
            unknown = set(cd) - _COOLDOWN_KEYS
            if unknown:
                raise ValueError(f"unknown measurement.cooldown key(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(_COOLDOWN_KEYS))}")
            if "below_c" not in cd:
                raise ValueError("measurement.cooldown needs below_c (°C)")
            w2 = "measurement.cooldown."
            c.cooldown_below_c = float(_num(cd, "below_c", w2, None))
            if "timeout_s" in cd:
                c.cooldown_timeout_s = float(_num(cd, "timeout_s", w2, 0, strict=True))
            if "poll_s" in cd:
                c.cooldown_poll_s = float(_num(cd, "poll_s", w2, 0, strict=True))
            if cd.get("zone") is not None:
                if not isinstance(cd["zone"], str) or not cd["zone"]:
                    raise ValueError(f"measurement.cooldown.zone must be a channel name, got {cd['zone']!r}")
                c.cooldown_zone = cd["zone"]
        return c


def latency_stats(ms: list[float]) -> dict:
    """{n, p50_ms, p90_ms, p99_ms, min_ms, max_ms, mean_ms} of latencies in ms (n=0: only n)."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "mean_ms": float(a.mean())}


def zone_temps(temps: dict[str, float | None], zone: str | None) -> dict[str, float]:
    """The temperatures of ``zone`` (a channel name, or its last dotted part) or, for None, all."""
    out = {k: v for k, v in temps.items() if v is not None}
    if zone is None:
        return out
    return {k: v for k, v in out.items() if k == zone or k.endswith("." + zone)}


def reading_temps(reading: dict) -> dict[str, float | None]:
    """Temperature channels of an agent ``telemetry`` reply: {channel: °C}."""
    kinds = {c["name"]: c.get("kind") for c in reading.get("channels", [])}
    return {k: v for k, v in (reading.get("values") or {}).items() if kinds.get(k) == "temperature"}


def wait_for_cooldown(read: Callable[[], dict[str, float | None]], below_c: float, zone: str | None,
                      timeout_s: float, poll_s: float, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll ``read()`` ({channel: °C}) until the zone's hottest channel is below ``below_c``.

    Returns:
        {"ok", "waited_s", "temp_c" (last hottest reading or None), "channel", "below_c"}; ok is
        False on timeout or when no channel matches the zone.
    """
    t0 = clock()
    while True:
        temps = zone_temps(read(), zone)
        ch, t = max(temps.items(), key=lambda kv: kv[1]) if temps else (None, None)
        waited = clock() - t0
        if t is not None and t < below_c:
            return {"ok": True, "waited_s": waited, "temp_c": t, "channel": ch, "below_c": below_c}
        if t is None or waited >= timeout_s:
            return {"ok": False, "waited_s": waited, "temp_c": t, "channel": ch, "below_c": below_c,
                    "reason": "no temperature channel" + (f" matches zone {zone!r}" if zone else "")
                    if t is None else "timeout"}
        sleep(min(poll_s, max(0.0, timeout_s - waited)))


def start_temperature(summary: dict | None, zone: str | None) -> tuple[str | None, float | None]:
    """(channel, °C) of the hottest start temperature in a telemetry summary (the zone's if set)."""
    temps = {k: v.get("start_c") for k, v in ((summary or {}).get("temperature") or {}).items()}
    temps = zone_temps(temps, zone)
    if not temps:
        return None, None
    return max(temps.items(), key=lambda kv: kv[1])


def decide_validity(n: int, duration_s: float, summary: dict | None, cfg: MeasurementConfig,
                    start: tuple[str | None, float | None] = (None, None),
                    cooldown: dict | None = None) -> tuple[bool, list[str], list[str]]:
    """VALID or INVALID with reasons.

    Args:
        n: measured queries.
        duration_s: measured duration (s).
        summary: merged telemetry summary of the measured queries (None: no telemetry).
        cfg: the protocol settings.
        start: (channel, °C) of the start temperature.
        cooldown: the result of wait_for_cooldown, if one ran.

    Returns:
        (valid, reasons, notes): reasons make it INVALID; notes are caveats (e.g. unchecked).
    """
    reasons, notes = [], []
    if n < cfg.min_queries:
        reasons.append(f"too few samples: n={n} < min_queries {cfg.min_queries}")
    if duration_s < cfg.min_duration_s:
        reasons.append(f"too short: {duration_s:.2f} s < min_duration_s {cfg.min_duration_s:g} s")
    ch, t = start
    if cfg.start_temp_max_c is not None:
        if t is None:
            notes.append("start temperature not checked: no temperature sensor")
        elif t > cfg.start_temp_max_c:
            reasons.append(f"temperature above the start limit: {t:.1f} °C ({ch}) > {cfg.start_temp_max_c:g} °C")
    if cooldown is not None and not cooldown.get("ok"):
        reasons.append(f"cool-down timed out: {cooldown.get('reason', 'timeout')} after {cooldown['waited_s']:.0f} s"
                       + (f", {cooldown['temp_c']:.1f} °C ({cooldown['channel']}) not below {cooldown['below_c']:g} °C"
                          if cooldown.get("temp_c") is not None else ""))
    th = (summary or {}).get("throttle") or {}
    if not th.get("channels"):
        notes.append("throttling not checked: no throttle or frequency-limit sensor on this board")
    src = ", ".join(th.get("channels", []))
    events = th.get("events", 0)
    for flag, text in (("throttled", "throttled"), ("soft_temp_limit", "soft temperature limit active"),
                       ("frequency_capped", "frequency-capped"), ("undervoltage", "undervoltage")):
        if th.get(flag):
            reasons.append(f"{text} during the measurement ({src}; {events} throttle event(s))")
    errs = (summary or {}).get("errors") or {}
    if errs:
        notes.append("sensor errors: " + "; ".join(f"{k}: {v.get('message')} (x{v.get('count')})"
                                                   for k, v in sorted(errs.items())))
    return not reasons, reasons, notes


@dataclass
class Query:
    """One measured query: the item, the agent's result, its latency (ms), issue time (s)."""

    index: int
    item: Any
    result: dict
    latency_ms: float
    issued_s: float


@dataclass
class Measurement:
    """A finished measurement: queries, latency, merged telemetry, verdict."""

    config: MeasurementConfig
    queries: list[Query] = field(default_factory=list)
    warmup: list[Query] = field(default_factory=list)
    duration_s: float = 0.0
    latency: dict = field(default_factory=dict)
    summary: dict | None = None
    start: tuple = (None, None)
    cooldown: dict | None = None
    valid: bool = True
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """"VALID" or "INVALID"."""
        return "VALID" if self.valid else "INVALID"

    def first_pass(self) -> list[tuple[Any, dict]]:
        """(item, result) for the first measured run of every distinct item, in order."""
        seen, out = set(), []
        for q in self.queries:
            key = id(q.item)
            if key not in seen:
                seen.add(key)
                out.append((q.item, q.result))
        return out

    def to_dict(self) -> dict:
        """Plain data for the results store (no per-query results)."""
        return {"verdict": self.verdict, "valid": self.valid, "reasons": list(self.reasons),
                "notes": list(self.notes), "n": len(self.queries), "warmup": len(self.warmup),
                "duration_s": self.duration_s, "latency": dict(self.latency),
                "start_temp": {"channel": self.start[0], "temp_c": self.start[1]},
                "cooldown": self.cooldown, "config": asdict(self.config)}


class Protocol:
    """Runs a measurement (see the module docstring).

    Args:
        config: the settings.
        clock: monotonic seconds (injectable).
        sleep: sleep(seconds) (injectable).
        latency_of: a result's latency in ms (default: the agent-side ``total_ms``).
    """

    def __init__(self, config: MeasurementConfig, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 latency_of: Callable[[dict], float] = lambda r: float(r["total_ms"])):
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.latency_of = latency_of

    def run(self, items: list, query: Callable[[Any], dict],
            read_temps: Callable[[], dict[str, float | None]] | None = None,
            cover_all: bool = True) -> Measurement:
        """Measure.

        Args:
            items: the inputs, cycled in order (warm-up uses the first ones).
            query: runs one item, returns the agent's result (with ``telemetry`` when sampled).
            read_temps: {channel: °C} now, for the cool-down (required when one is configured).
            cover_all: keep going until every item ran once (so accuracy can use the same pass).

        Raises:
            ValueError: no items, or a cool-down configured without read_temps. Whatever
            ``query`` raises propagates (a failed request is not a sample).
        """
        c = self.config
        if not items:
            raise ValueError("a measurement needs at least one item")
        m = Measurement(config=c)
        if c.cooldown_below_c is not None:
            if read_temps is None:
                raise ValueError("a cool-down needs read_temps")
            m.cooldown = wait_for_cooldown(read_temps, c.cooldown_below_c, c.cooldown_zone,
                                           c.cooldown_timeout_s, c.cooldown_poll_s, self.clock, self.sleep)
        for i in range(c.warmup):
            item = items[i % len(items)]
            t = self.clock()
            r = query(item)
            m.warmup.append(Query(i, item, r, self.latency_of(r), t))
        need = max(c.min_queries, len(items) if cover_all else 0)
        cap = None if c.max_queries is None else max(c.max_queries, need if cover_all else 0)
        t_start = self.clock()
        k = 0
        while True:
            item = items[k % len(items)]
            t = self.clock()
            r = query(item)
            m.queries.append(Query(k, item, r, self.latency_of(r), t - t_start))
            k += 1
            elapsed = self.clock() - t_start
            if cap is not None and k >= cap:
                break
            if k >= need and elapsed >= c.min_duration_s:
                break
        m.duration_s = self.clock() - t_start
        m.latency = latency_stats([q.latency_ms for q in m.queries])
        sums = [(q.result.get("telemetry") or {}).get("summary") for q in m.queries]
        m.summary = merge([s for s in sums if s]) if any(sums) else None
        first = next((s for s in sums if s), None)
        zone = c.cooldown_zone
        m.start = start_temperature(first, zone)
        m.valid, m.reasons, m.notes = decide_validity(len(m.queries), m.duration_s, m.summary, c, m.start,
                                                      m.cooldown)
        return m
