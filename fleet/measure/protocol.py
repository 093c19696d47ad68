"""The measurement protocol of a latency test, after MLPerf LoadGen's SingleStream scenario.

One query at a time (the next is issued when the previous completes). A measurement:

1. optionally cools down: polls the board's temperature until the chosen zone (or the hottest
   one) is below ``cooldown.below_c``, giving up after ``cooldown.timeout_s``;
2. runs ``warmup`` queries that are left out of every figure;
3. issues queries, cycling over the items, until all three minimums are met: at least
   ``min_queries`` completed, every item ran once, and ``min_duration_s`` passed since the first
   measured query was issued (LoadGen's min_query_count and min_duration). Being fast never makes
   a measurement INVALID: a fast board simply runs more queries. The only other way out is the
   safety bound ``max_duration_s`` (LoadGen's max_duration); reaching it before the minimums is
   INVALID with that reason. There is no query cap: one used to end fast boards' runs before
   min_duration_s (issue 13), and a cap that only ends runs whose minimums are met would never act;
4. reports latency as LoadGen does (``latency_stats``): n, min, max, mean, p50/p90/p99 and the
   early-stopping estimate of the p90, each percentile null with the reason when n is too small
   for it; and a verdict: VALID, or INVALID with every reason that applies:

   - max_duration_s reached before the minimums,
   - too few samples (n < min_queries), not every item ran, too short (< min_duration_s),
   - start temperature above ``start_temp_max_c``,
   - cool-down timed out,
   - throttled, frequency-capped, at the soft temperature limit or undervolted during the
     measurement (any measured query's telemetry summary; device_agent.telemetry.summary);
   - the board's CPU is emulated (inventory host var ``cpu_emulated``, e.g. ``qemu-user``: an
     aarch64 board under qemu-user runs SIMD code ~100-200x slower than the host, so its
     latencies say nothing about a real board's; reason ``CPU emulated by qemu-user``). Such a
     measurement is never VALID, whatever else it met (:func:`emulation_reason`).

An INVALID measurement never passes a latency threshold: the suite fails the test with the
reasons. A board without a temperature or throttle sensor cannot show a violation; that is
stated in ``notes``, not hidden. The clock and sleep are injectable for tests.

Percentiles (LoadGen ``loadgen/results.cc``, ``PerformanceSummary::ProcessLatencies``): the
latencies sorted ascending, percentile p is the sample at index floor(n * p) (0-based), no
interpolation. That index is the maximum's (n - 1) unless floor(n * p) <= n - 2, i.e. unless
n * (1 - p) > 1: a p99 from 100 samples or fewer *is* the maximum, a p90 from 10 or fewer too. So
a percentile is reported only from n >= ``min_samples(p)`` = floor(1 / (1 - p)) + 1 samples (p50:
3, p90: 11, p99: 101) and is null otherwise, with the reason. floor(n * p) is computed exactly
(fractions), where LoadGen multiplies doubles.

Early stopping (LoadGen ``loadgen/results.cc`` ``PerformanceSummary::EarlyStopping`` and
``loadgen/early_stopping.cc``; MLPerf Inference rules, "Early stopping"): SingleStream's reported
p90 is the t-th largest latency, where t is the largest number of queries over the p90 that still
lets one claim, with 99 % confidence (tolerance 0), that the true p90 is no higher:
t = max{t >= 1 : P(Binomial(n, 1 - p) <= t) < 1 - 0.99}. LoadGen searches for the same t through
``MinPassingQueriesFinder`` (the smallest h with BetaRegularized(p, h, 1 + t) < 1 - c, then
n >= h + t); BetaRegularized(p, h, 1 + t) is exactly that binomial tail for h + t queries. No t
exists below 64 queries for the p90 (LoadGen: "Need to process at least 64 queries for early
stopping"); the estimate is then null with the reason, and the measurement stays VALID (fleet's
suites set their own, smaller min_queries; LoadGen would call such a run INVALID).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from device_agent.telemetry.summary import merge

_KEYS = {"min_queries", "min_duration_s", "max_duration_s", "start_temp_max_c", "cooldown", "sample_hz"}
_COOLDOWN_KEYS = {"below_c", "zone", "timeout_s", "poll_s"}
#: keys that were removed, with what to use instead
REMOVED_KEYS = {"max_queries": "it ended fast boards' runs before min_duration_s (issue 13); a run now ends when "
                           "its minimums are met; bound a slow board with max_duration_s (e.g. 600)"}

#: percentiles reported, as LoadGen lists them (fractions of 1)
PERCENTILES = {"p50": Fraction(1, 2), "p90": Fraction(9, 10), "p99": Fraction(99, 100)}
#: LoadGen's SingleStream target percentile and early-stopping settings (loadgen/results.cc)
TARGET_PERCENTILE = "p90"
EARLY_STOPPING_CONFIDENCE = 0.99
EARLY_STOPPING_TOLERANCE = 0.0


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
    """Protocol settings: the single definition of suite.yml's ``measurement:`` block (``warmup``
    comes from ``warmup_requests``). A run ends when min_queries, every item once and
    min_duration_s are all met, or at max_duration_s (then INVALID).

    Attributes:
        warmup: queries run first and excluded.
        min_queries: minimum measured queries (>= 1).
        min_duration_s: minimum measured duration (s), first issue to last completion (>= 0).
        max_duration_s: safety bound (s, > min_duration_s): stop there even before the minimums,
            and the measurement is INVALID; None = no bound (each query still has the suite's
            request_timeout_s).
        start_temp_max_c: INVALID when the start temperature (°C) is above it.
        cooldown_below_c: wait before measuring until the zone is below this (°C); None = no wait.
        cooldown_zone: channel name or its last part (e.g. ``cpu-thermal``); None = the hottest.
        cooldown_timeout_s: give up waiting after this (s); the measurement is then INVALID.
        cooldown_poll_s: polling interval (s).
        sample_hz: telemetry sampling rate requested from the agent (Hz, 0 < x <= 100).
    """

    warmup: int = 1
    min_queries: int = 1
    min_duration_s: float = 0.0
    max_duration_s: float | None = None
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
            ValueError: unknown or removed key, wrong type or out-of-range value (message names
            the key and what to do).
        """
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"measurement must be a mapping, got {type(d).__name__}")
        d = dict(d or {})
        for k in sorted(set(d) & set(REMOVED_KEYS)):
            raise ValueError(f"measurement.{k} is no longer supported: {REMOVED_KEYS[k]}")
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
        if d.get("max_duration_s") is not None:
            c.max_duration_s = float(_num(d, "max_duration_s", w, 0, strict=True))
            if c.max_duration_s <= c.min_duration_s:
                raise ValueError(f"measurement.max_duration_s ({c.max_duration_s:g}) must be above "
                                 f"min_duration_s ({c.min_duration_s:g}), e.g. 600")
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


def percentile_index(n: int, p: Fraction) -> int:
    """LoadGen's index of percentile ``p`` (0 < p < 1) in ``n`` ascending latencies: floor(n * p)."""
    return math.floor(n * p)


def min_samples(p: Fraction) -> int:
    """The fewest samples from which percentile ``p`` is not the maximum: the smallest n with
    floor(n * p) <= n - 2, i.e. n * (1 - p) > 1; floor(1 / (1 - p)) + 1 (p50: 3, p90: 11, p99: 101)."""
    return math.floor(1 / (1 - p)) + 1


def early_stopping_t(n: int, p: Fraction, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int | None:
    """LoadGen's SingleStream early-stopping t for percentile ``p`` with tolerance 0: the largest
    t >= 1 with P(Binomial(n, 1 - p) <= t) < 1 - confidence, or None when even t = 1 fails (too
    few queries: n < 64 for the p90 at 99 %). The estimate is the t-th largest latency.

    The binomial pmf is summed in log space (lgamma), so n in the millions neither underflows
    nor overflows; cost O(t)."""
    q = float(1 - p)
    lp, lq = math.log(float(p)), math.log(q)
    lg_n = math.lgamma(n + 1)
    cdf, t = 0.0, None
    for k in range(n + 1):
        cdf += math.exp(lg_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lq + (n - k) * lp)
        if cdf >= 1 - confidence:
            break
        if k >= 1:
            t = k
    return t


@functools.lru_cache(maxsize=None)
def early_stopping_min_queries(p: Fraction, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """The fewest queries for which ``early_stopping_t`` exists (p90 at 99 %: 64)."""
    n = 2
    while early_stopping_t(n, p, confidence) is None:
        n += 1
    return n


def latency_stats(ms: list[float]) -> dict:
    """Latency figures of one measurement as LoadGen reports them (see the module docstring).

    Args:
        ms: per-query latencies (ms), any order.

    Returns:
        {"n", "min_ms", "max_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms",
        "p90_early_stopping_ms", "unreported": {key: reason}}; a percentile from too few samples
        is None and ``unreported`` says why. n = 0 gives only {"n": 0}.
    """
    a = np.sort(np.asarray(ms, dtype=float))
    n = int(a.size)
    if n == 0:
        return {"n": 0}
    out: dict = {"n": n, "min_ms": float(a[0]), "max_ms": float(a[-1]), "mean_ms": float(a.mean())}
    unreported = {}
    for name, p in PERCENTILES.items():
        need = min_samples(p)
        if n >= need:
            out[f"{name}_ms"] = float(a[percentile_index(n, p)])
        else:
            out[f"{name}_ms"] = None
            unreported[f"{name}_ms"] = (f"n={n} < {need}: a {name} from {need - 1} samples or fewer is the "
                                        f"maximum (LoadGen index floor(n*p))")
    p = PERCENTILES[TARGET_PERCENTILE]
    t = early_stopping_t(n, p)
    key = f"{TARGET_PERCENTILE}_early_stopping_ms"
    if t is None:
        out[key] = None
        unreported[key] = (f"n={n} < {early_stopping_min_queries(p)}: LoadGen's early-stopping estimate "
                           f"needs that many queries ({EARLY_STOPPING_CONFIDENCE:.0%} confidence, tolerance 0)")
    else:
        out[key] = float(a[n - t])
    out["unreported"] = unreported
    return out


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


#: the reason of a measurement taken on a board whose CPU is emulated ({emulator}: its cpu_emulated)
EMULATED_CPU_REASON = "CPU emulated by {emulator}"


def emulation_reason(cpu_emulated: str) -> str | None:
    """The INVALID reason for a board whose CPU is emulated (``cpu_emulated``: the inventory's
    host var, e.g. ``qemu-user``), or None for a native CPU (``""``)."""
    return EMULATED_CPU_REASON.format(emulator=cpu_emulated) if cpu_emulated else None


def decide_validity(n: int, duration_s: float, summary: dict | None, cfg: MeasurementConfig,
                    start: tuple[str | None, float | None] = (None, None),
                    cooldown: dict | None = None, items: tuple[int, int] | None = None,
                    hit_max_duration: bool = False, cpu_emulated: str = "") -> tuple[bool, list[str], list[str]]:
    """VALID or INVALID with reasons.

    Args:
        n: measured queries.
        duration_s: measured duration (s).
        summary: merged telemetry summary of the measured queries (None: no telemetry).
        cfg: the protocol settings.
        start: (channel, °C) of the start temperature.
        cooldown: the result of wait_for_cooldown, if one ran.
        items: (distinct items measured, items given) when every item had to run once.
        hit_max_duration: the run was stopped by ``cfg.max_duration_s``.
        cpu_emulated: the board's CPU emulator (inventory ``cpu_emulated``, e.g. ``qemu-user``),
            "" for a native CPU; set, the measurement is INVALID (``emulation_reason``).

    Returns:
        (valid, reasons, notes): reasons make it INVALID; notes are caveats (e.g. unchecked).
    """
    reasons, notes = [], []
    if emulation_reason(cpu_emulated):
        reasons.append(emulation_reason(cpu_emulated))
    if hit_max_duration:
        reasons.append(f"max_duration_s {cfg.max_duration_s:g} s reached before the minimums were met "
                       f"(the board is too slow for them, or raise max_duration_s)")
    if n < cfg.min_queries:
        reasons.append(f"too few samples: n={n} < min_queries {cfg.min_queries}")
    if items is not None and items[0] < items[1]:
        reasons.append(f"not every item ran: {items[0]} of {items[1]}")
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
    """A finished measurement: queries, latency (``latency_stats``), merged telemetry, verdict;
    ``hit_max_duration`` when max_duration_s stopped it before its minimums."""

    config: MeasurementConfig
    queries: list[Query] = field(default_factory=list)
    warmup: list[Query] = field(default_factory=list)
    duration_s: float = 0.0
    latency: dict = field(default_factory=dict)
    summary: dict | None = None
    start: tuple = (None, None)
    cooldown: dict | None = None
    hit_max_duration: bool = False
    valid: bool = True
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cpu_emulated: str = ""

    @property
    def verdict(self) -> str:
        """"VALID" or "INVALID"."""
        return "VALID" if self.valid else "INVALID"

    @property
    def invalid_only_by_emulation(self) -> bool:
        """INVALID for no reason but the board's emulated CPU: every other rule was met, so its
        latencies are real figures of an emulator, not of a board (suites report such a latency
        test as not judged, fleet.runner.emulation.judge_measurement)."""
        return not self.valid and self.reasons == [emulation_reason(self.cpu_emulated)]

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
                "cpu_emulated": self.cpu_emulated or None,
                "duration_s": self.duration_s, "hit_max_duration": self.hit_max_duration,
                "latency": dict(self.latency),
                "start_temp": {"channel": self.start[0], "temp_c": self.start[1]},
                "cooldown": self.cooldown, "config": asdict(self.config)}


class Protocol:
    """Runs a measurement (see the module docstring).

    Args:
        config: the settings.
        clock: monotonic seconds (injectable).
        sleep: sleep(seconds) (injectable).
        latency_of: a result's latency in ms (default: the agent-side ``total_ms``).
        cpu_emulated: the board's CPU emulator (inventory ``cpu_emulated``, e.g. ``qemu-user``);
            set, every measurement is INVALID with reason "CPU emulated by <it>".
    """

    def __init__(self, config: MeasurementConfig, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 latency_of: Callable[[dict], float] = lambda r: float(r["total_ms"]),
                 cpu_emulated: str = ""):
        self.config = config
        self.cpu_emulated = cpu_emulated
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
        m = Measurement(config=c, cpu_emulated=self.cpu_emulated)
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
        n_items = len(items) if cover_all else 0
        t_start = self.clock()
        k = 0
        while True:
            item = items[k % len(items)]
            t = self.clock()
            r = query(item)
            m.queries.append(Query(k, item, r, self.latency_of(r), t - t_start))
            k += 1
            elapsed = self.clock() - t_start
            # the minimums first: a query that meets them at the bound still counts
            if k >= c.min_queries and k >= n_items and elapsed >= c.min_duration_s:
                break
            if c.max_duration_s is not None and elapsed >= c.max_duration_s:
                m.hit_max_duration = True
                break
        m.duration_s = self.clock() - t_start
        m.latency = latency_stats([q.latency_ms for q in m.queries])
        sums = [(q.result.get("telemetry") or {}).get("summary") for q in m.queries]
        m.summary = merge([s for s in sums if s]) if any(sums) else None
        first = next((s for s in sums if s), None)
        zone = c.cooldown_zone
        m.start = start_temperature(first, zone)
        covered = (min(len(m.queries), len(items)), len(items)) if cover_all else None
        m.valid, m.reasons, m.notes = decide_validity(len(m.queries), m.duration_s, m.summary, c, m.start,
                                                      m.cooldown, covered, m.hit_max_duration, self.cpu_emulated)
        return m
