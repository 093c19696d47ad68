"""Summaries of telemetry traces, and their merge across requests (used by the agent for each
``run`` and by the controller for a whole measurement). Stdlib only.

A trace (``Sampler.trace()``; device_agent.protocol documents it on the wire)::

    {"t0": 1732230000.12,            # wall clock (s since the epoch) of the first sample
     "rate_hz": 10.0,                # requested sampling rate
     "decimated": 1,                 # every k-th sample kept on the wire (1 = all)
     "channels": [{"name": "linux.temp.cpu-thermal", "unit": "°C", "kind": "temperature",
                   "source": "linux", "emulated": false}, ...],
     "t": [0.0, 0.1, ...],           # s since t0
     "values": {"linux.temp.cpu-thermal": [48.3, 48.5, ...], ...},   # null = not read / failed
     "errors": {"rk3588.npu_load.core2": {"message": "...", "count": 3}}}

A summary (units in the key names)::

    {"samples": 23, "duration_s": 2.2, "inferences": 1,
     "temperature": {ch: {"max_c", "mean_c", "start_c", "end_c", "n", "emulated"}},
     "power": {ch: {"mean_w", "energy_j", "energy_per_inference_j", "covered_s", "note", "emulated"}},
     "throttle": {"events", "throttled", "frequency_capped", "undervoltage", "soft_temp_limit",
                  "channels": [ch, ...]},
     "frequency": {ch: {"min", "max", "mean", "unit", "drops", "n"}},
     "errors": {ch: {"message", "count"}}}

Energy is ∫P dt by the trapezoid rule over consecutive samples that both have a value (J);
``mean_w`` is that energy over the covered time, and energy per inference is energy / inferences.
Throttle events are rising edges of any "now" bit of a throttle channel (get_throttled layout),
plus one when a sticky "since boot" bit appears without a now-bit seen (it happened between
samples), plus each fall of a ``frequency_max`` channel below its value at the window's start
(a cpufreq cooling device capped the clock). A frequency drop is a fall of a ``frequency``
channel below ``drop_ratio`` (0.9) of its running maximum: informational, since DVFS governors
lower idle clocks by design.
"""

from __future__ import annotations

from .base import STICKY_SHIFT, THROTTLE_BITS

DROP_RATIO = 0.9
_NOW_MASK = 0xF


def integrate_energy_j(t: list[float], p: list[float | None]) -> tuple[float, float]:
    """∫P dt (J) by the trapezoid rule over consecutive samples that both have a power value.

    Args:
        t: sample times (s), non-decreasing.
        p: power (W) per sample, None where not read.

    Returns:
        (energy in J, covered time in s).
    """
    e = covered = 0.0
    for i in range(1, len(t)):
        a, b = p[i - 1], p[i]
        if a is None or b is None:
            continue
        dt = t[i] - t[i - 1]
        e += 0.5 * (a + b) * dt
        covered += dt
    return e, covered


def _present(vals):
    return [v for v in vals if v is not None]


def _throttle(values: list[float | None]) -> tuple[int, int]:
    """(flags during the window as a now-bit mask, events) of one throttle channel."""
    seq = [int(v) for v in values if v is not None]
    if not seq:
        return 0, 0
    seen_now, events, prev_active = 0, 0, False
    for v in seq:
        now = v & _NOW_MASK
        seen_now |= now
        if now and not prev_active:
            events += 1
        prev_active = bool(now)
    new_sticky = ((seq[-1] >> STICKY_SHIFT) & ~(seq[0] >> STICKY_SHIFT)) & _NOW_MASK
    if new_sticky & ~seen_now:
        events += 1
    return seen_now | new_sticky, events


def summarize(trace: dict, inferences: int = 1, drop_ratio: float = DROP_RATIO) -> dict:
    """Summary of one trace (see the module docstring for the shape).

    Args:
        trace: the full-resolution trace.
        inferences: inferences the trace covers (energy per inference = energy / inferences).
        drop_ratio: a frequency below this share of its running maximum counts as a drop.

    Raises:
        ValueError: inferences < 1.
    """
    if inferences < 1:
        raise ValueError(f"inferences must be >= 1, got {inferences}")
    t = trace.get("t") or []
    values = trace.get("values") or {}
    out: dict = {"samples": len(t), "duration_s": (t[-1] - t[0]) if len(t) > 1 else 0.0,
                 "inferences": inferences, "temperature": {}, "power": {},
                 "throttle": {"events": 0, "channels": [], **{n: False for n in THROTTLE_BITS.values()}},
                 "frequency": {}, "errors": dict(trace.get("errors") or {})}
    flags = 0
    for ch in trace.get("channels", []):
        name, kind = ch["name"], ch["kind"]
        vals = values.get(name, [])
        got = _present(vals)
        if kind == "temperature" and got:
            out["temperature"][name] = {"max_c": max(got), "mean_c": sum(got) / len(got), "start_c": got[0],
                                        "end_c": got[-1], "n": len(got), "emulated": ch.get("emulated", False)}
        elif kind == "power" and got:
            e, covered = integrate_energy_j(t, vals)
            mean = e / covered if covered > 0 else sum(got) / len(got)
            if covered <= 0:  # one reading only: assume it held over the window
                e = mean * out["duration_s"]
                covered = out["duration_s"]
            out["power"][name] = {"mean_w": mean, "energy_j": e, "energy_per_inference_j": e / inferences,
                                  "covered_s": covered, "note": ch.get("note", ""),
                                  "emulated": ch.get("emulated", False)}
        elif kind == "throttle":
            out["throttle"]["channels"].append(name)
            f, ev = _throttle(vals)
            flags |= f
            out["throttle"]["events"] += ev
        elif kind == "frequency_max" and got:
            caps = sum(1 for a, b in zip(got, got[1:]) if b < a and b < got[0])
            if caps:
                flags |= 1 << 1  # frequency_capped
                out["throttle"]["events"] += caps
            out["throttle"]["channels"].append(name)
        elif kind == "frequency" and got:
            drops, top, below = 0, got[0], False
            for v in got:
                top = max(top, v)
                now_below = v < drop_ratio * top
                if now_below and not below:
                    drops += 1
                below = now_below
            out["frequency"][name] = {"min": min(got), "max": max(got), "mean": sum(got) / len(got),
                                      "unit": ch.get("unit", ""), "drops": drops, "n": len(got)}
    for bit, flag in THROTTLE_BITS.items():
        out["throttle"][flag] = bool(flags >> bit & 1)
    return out


def merge(summaries: list[dict]) -> dict:
    """One summary over several windows (e.g. every measured request of a suite): sums of samples,
    duration, inferences, energy, events and drops; max of maxima; sample-weighted means; the
    first window's start and the last window's end temperature; flags OR-ed; error counts added.
    ``mean_w`` is total energy over total covered time; energy per inference is total energy over
    total inferences."""
    out: dict = {"samples": 0, "duration_s": 0.0, "inferences": 0, "temperature": {}, "power": {},
                 "throttle": {"events": 0, "channels": [], **{n: False for n in THROTTLE_BITS.values()}},
                 "frequency": {}, "errors": {}}
    for s in summaries:
        if not s:
            continue
        out["samples"] += s.get("samples", 0)
        out["duration_s"] += s.get("duration_s", 0.0)
        out["inferences"] += s.get("inferences", 0)
        for ch, v in s.get("temperature", {}).items():
            m = out["temperature"].get(ch)
            if m is None:
                out["temperature"][ch] = dict(v)
                continue
            n = m["n"] + v["n"]
            m.update(max_c=max(m["max_c"], v["max_c"]), mean_c=(m["mean_c"] * m["n"] + v["mean_c"] * v["n"]) / n,
                     end_c=v["end_c"], n=n)
        for ch, v in s.get("power", {}).items():
            m = out["power"].setdefault(ch, {"energy_j": 0.0, "covered_s": 0.0, "note": v.get("note", ""),
                                             "emulated": v.get("emulated", False)})
            m["energy_j"] += v["energy_j"]
            m["covered_s"] += v["covered_s"]
        th = s.get("throttle", {})
        out["throttle"]["events"] += th.get("events", 0)
        for flag in THROTTLE_BITS.values():
            out["throttle"][flag] = out["throttle"][flag] or bool(th.get(flag))
        for ch in th.get("channels", []):
            if ch not in out["throttle"]["channels"]:
                out["throttle"]["channels"].append(ch)
        for ch, v in s.get("frequency", {}).items():
            m = out["frequency"].get(ch)
            if m is None:
                out["frequency"][ch] = dict(v)
                continue
            n = m["n"] + v["n"]
            m.update(min=min(m["min"], v["min"]), max=max(m["max"], v["max"]),
                     mean=(m["mean"] * m["n"] + v["mean"] * v["n"]) / n, drops=m["drops"] + v["drops"], n=n)
        for ch, v in s.get("errors", {}).items():
            m = out["errors"].setdefault(ch, {"message": v.get("message", ""), "count": 0})
            m["count"] += v.get("count", 1)
            m["message"] = v.get("message", m["message"])
    inf = max(out["inferences"], 1)
    for m in out["power"].values():
        m["mean_w"] = m["energy_j"] / m["covered_s"] if m["covered_s"] > 0 else 0.0
        m["energy_per_inference_j"] = m["energy_j"] / inf
    return out
