"""Telemetry as people and spreadsheets see it: the headline figures of a merged summary, and
traces as CSV."""

from __future__ import annotations

import csv
import re
from pathlib import Path

#: power channels by preference for the headline energy figure: a board's own power sensor,
#: then the Pi's PMIC (SoC only), then the Hailo module, then the emulated model
_POWER_ORDER = ("rk3588.power.", "pi5.power_soc", "hailo.power", "emulated.power")


def primary_power(summary: dict | None) -> tuple[str | None, dict | None]:
    """(channel, entry) of the power channel the headline energy figure uses, or (None, None).
    Hardware channels come before emulated ones; the others stay in the summary."""
    power = (summary or {}).get("power") or {}
    for prefix in _POWER_ORDER:
        for ch in sorted(power):
            if ch.startswith(prefix):
                return ch, power[ch]
    if power:
        ch = sorted(power)[0]
        return ch, power[ch]
    return None, None


def headline(summary: dict | None) -> dict:
    """Flat figures of a merged summary: temp_max_c, temp_mean_c (of the hottest channel) and
    its channel, power_mean_w, energy_per_inference_j and power channel (with its note),
    throttle_events, freq_drops, emulated (any figure from a model)."""
    s = summary or {}
    out: dict = {}
    temps = s.get("temperature") or {}
    if temps:
        ch = max(temps, key=lambda k: temps[k]["max_c"])
        out.update(temp_channel=ch, temp_max_c=temps[ch]["max_c"], temp_mean_c=temps[ch]["mean_c"],
                   temp_emulated=bool(temps[ch].get("emulated")))
    ch, p = primary_power(s)
    if p:
        out.update(power_channel=ch, power_mean_w=p["mean_w"], energy_per_inference_j=p["energy_per_inference_j"],
                   power_note=p.get("note", ""), power_emulated=bool(p.get("emulated")))
    th = s.get("throttle") or {}
    out["throttle_events"] = th.get("events", 0)
    out["throttle_checked"] = bool(th.get("channels"))
    out["freq_drops"] = sum(v.get("drops", 0) for v in (s.get("frequency") or {}).values())
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))[:80]


def trace_to_csv(trace: dict, path: str | Path) -> Path:
    """Write one trace as CSV: ``t_s`` then one column per channel titled ``name [unit]``
    (empty cells where a channel was not read). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chans = trace.get("channels") or []
    values = trace.get("values") or {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s"] + [f"{c['name']} [{c['unit']}]" for c in chans])
        for i, t in enumerate(trace.get("t") or []):
            row = [t]
            for c in chans:
                vs = values.get(c["name"]) or []
                v = vs[i] if i < len(vs) else None
                row.append("" if v is None else v)
            w.writerow(row)
    return path


def export_csv(store, run_id: str, out_dir: str | Path) -> list[Path]:
    """Every trace of a run as ``<out>/<run>/<board>/<test>/<seq>_<label>.csv``, plus
    ``<out>/<run>/summary.csv`` (one row per result with telemetry: board, test, verdict, n and
    the percentiles, empty where n is too small for one, and the headline figures). Returns the
    files written."""
    base = Path(out_dir) / _safe(run_id)
    files: list[Path] = []
    rows = []
    for r in store.results(run_id):
        tel = store.telemetry(r.id, traces=True)
        for t in tel["traces"]:
            if t.get("trace"):
                files.append(trace_to_csv(t["trace"], base / _safe(r.board) / _safe(r.test)
                                          / f"{t['seq']:04d}_{_safe(t['label'] or '')}.csv"))
        agg = tel["aggregate"]
        if agg is not None:
            meas = agg.get("measurement") or {}
            lat = meas.get("latency") or {}
            rows.append({"board": r.board, "test": r.test, "outcome": r.outcome,
                         "verdict": meas.get("verdict", ""), "reasons": " | ".join(meas.get("reasons", [])),
                         "n": lat.get("n", ""), "p50_ms": lat.get("p50_ms", ""), "p90_ms": lat.get("p90_ms", ""),
                         "p90_early_stopping_ms": lat.get("p90_early_stopping_ms", ""),
                         "p99_ms": lat.get("p99_ms", ""),  # empty: too few samples (latency.unreported)
                         **headline(agg.get("summary"))})
    if rows:
        base.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with (base / "summary.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        files.append(base / "summary.csv")
    return files
