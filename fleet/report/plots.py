"""Plots as inline SVG strings (matplotlib, Agg backend, no network, no JavaScript).

Every function returns the ``<svg …>…</svg>`` element only (no XML prologue), ready to be placed
in an HTML page; text stays text (``svg.fonttype = none``) so pages stay small and searchable.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fleet.results import regress

# text.parse_math off: titles and legends carry board/test/metric names from the store, and a `$`
# in one would be parsed as mathtext (a ValueError for anything that is not valid TeX).
plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "text.parse_math": False})


def to_svg(fig) -> str:
    """Render ``fig`` as an inline SVG element and close it."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def latency_histogram(per_board: dict[str, list[float]], title: str = "per-item latency") -> str | None:
    """Histogram of per-item latencies in ms, one series per board; None when there is no data."""
    data = {b: v for b, v in per_board.items() if v}
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    allv = [x for v in data.values() for x in v]
    bins = min(30, max(5, len(allv) // 3))
    ax.hist(list(data.values()), bins=bins, label=list(data), alpha=0.8)
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("items")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_svg(fig)


def _channels(trace: dict, kind: str) -> list[dict]:
    return [c for c in trace.get("channels") or [] if c.get("kind") == kind]


def telemetry_plot(traces: list[dict], title: str = "telemetry") -> str | None:
    """Temperature (°C) and power (W) over time for a test's per-request traces.

    ``traces``: the store's ``[{"label", "trace": {"t0", "t", "channels", "values"}}]``. Time is
    seconds since the first trace's ``t0``; each request (measurement window) is shaded; samples
    where a ``throttle`` channel is non-zero are marked with red lines. None without traces.
    """
    traces = [t for t in traces if (t.get("trace") or {}).get("t")]
    if not traces:
        return None
    t_first = min(t["trace"].get("t0") or 0.0 for t in traces)
    series: dict[tuple[str, str, str], tuple[list, list]] = {}
    windows, throttles = [], []
    for t in traces:
        tr = t["trace"]
        off = (tr.get("t0") or 0.0) - t_first
        ts = [off + x for x in tr["t"]]
        windows.append((ts[0], ts[-1]))
        vals = tr.get("values") or {}
        for kind in ("temperature", "power"):
            for c in _channels(tr, kind):
                xs, ys = series.setdefault((kind, c["name"], c.get("unit", "")), ([], []))
                for x, y in zip(ts, vals.get(c["name"]) or []):
                    if y is not None:
                        xs.append(x)
                        ys.append(y)
        for c in _channels(tr, "throttle"):
            throttles += [x for x, y in zip(ts, vals.get(c["name"]) or []) if y]
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 4.2), sharex=True)
    for ax, kind, ylabel in ((axes[0], "temperature", "temperature [°C]"), (axes[1], "power", "power [W]")):
        for i, (a, b) in enumerate(windows):
            ax.axvspan(a, b, color="tab:blue", alpha=0.08, lw=0, label="measurement window" if i == 0 else None)
        for x in sorted(set(throttles)):
            ax.axvline(x, color="red", lw=0.8, alpha=0.7)
        for (k, name, _unit), (xs, ys) in series.items():
            if k == kind:
                ax.plot(xs, ys, lw=1.0, marker=".", ms=2, label=name)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    if throttles:
        axes[0].plot([], [], color="red", label="throttle event")
        axes[0].legend(fontsize=7, loc="upper left")
    axes[1].set_xlabel("time since first request [s]")
    axes[0].set_title(title)
    return to_svg(fig)


def trend_plot(per_board: dict[str, list[dict]], metric: str, unit: str = "", runs: int = regress.DEFAULT_RUNS,
               k: float = regress.DEFAULT_K) -> str | None:
    """A metric over runs per board (``regress.series`` output) with each board's baseline band for
    its latest value (median ± k·MAD of the ``runs`` before it) and flagged points marked
    (▲ regression in red, ▼ improvement in green). None without data."""
    if not any(per_board.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    for board, pts in per_board.items():
        ys = [p["value"] for p in pts]
        xs = list(range(len(ys)))
        line, = ax.plot(xs, ys, marker="o", ms=3, lw=1, label=board)
        direction = pts[-1].get("direction") if pts else ""
        for i in range(len(ys)):
            j = regress.judge(ys[i], direction or "", ys[max(0, i - runs):i], k=k)
            if j["status"] == "regression":
                ax.plot([i], [ys[i]], marker="^", color="red", ms=9, ls="none")
            elif j["status"] == "improvement":
                ax.plot([i], [ys[i]], marker="v", color="green", ms=9, ls="none")
            if i == len(ys) - 1 and j.get("low") is not None:
                ax.fill_between([max(0, i - runs), i], j["low"], j["high"], color=line.get_color(), alpha=0.12)
    ax.set_xlabel("run (oldest → newest)")
    ax.set_ylabel(f"{metric} [{unit}]" if unit else metric)
    ax.set_title(f"{metric}: baseline band = median ± {k:g}·MAD of the previous {runs} runs")
    ax.legend(fontsize=7)
    return to_svg(fig)
