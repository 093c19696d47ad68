"""Regressions judged against a baseline and its noise, not against fixed thresholds.

For each (board, test, metric) of a run, the baseline is the same metric of the same test on the
same board in the previous ``n`` runs of the same suite (results whose outcome is ``error`` —
infrastructure — are left out: their numbers say nothing about the software). ``test`` carries its
parameters (``test_retrieval_quality[cisi]`` and ``[cranfield]`` have baselines of their own). The
noise band is

    median ± max(k · MAD, floor)      MAD = 1.4826 · median(|x − median|)

1.4826 (= 1/Φ⁻¹(3/4)) makes the MAD a consistent estimator of the standard deviation for normally
distributed data, so k = 3 is the familiar "3 sigma" but robust to outliers. The floor
(``max(rel_floor · |median|, abs_floor)``) keeps a zero-noise baseline (e.g. a deterministic WER)
from flagging a negligible change. A value outside the band is flagged with its direction, using the
metric's own ``direction`` ("lower" or "higher" is better): ``regression`` or ``improvement``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

#: normal-consistency constant for the MAD (1 / Φ⁻¹(0.75))
MAD_SCALE = 1.4826
DEFAULT_K = 3.0
DEFAULT_RUNS = 10
DEFAULT_MIN_RUNS = 3
DEFAULT_REL_FLOOR = 0.05
DEFAULT_ABS_FLOOR = 1e-9


@dataclass
class Verdict:
    """One metric of one board in one run, compared with its baseline.

    ``status``: ``ok`` (inside the band), ``regression`` / ``improvement`` (outside, worse / better
    by the metric's direction), ``insufficient`` (fewer than ``min_runs`` earlier values) or
    ``no-direction`` (the metric has no lower/higher direction; never flagged).
    ``low``/``high`` are the band's edges in the metric's unit; ``delta`` = value − median.
    """

    board: str
    test: str
    metric: str
    unit: str
    direction: str
    value: float
    status: str
    n: int = 0
    median: float | None = None
    mad: float | None = None
    low: float | None = None
    high: float | None = None
    delta: float | None = None
    delta_pct: float | None = None
    baseline_runs: list = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.status in ("regression", "improvement")

    def as_dict(self) -> dict:
        return asdict(self)


def band(values: list[float], k: float = DEFAULT_K, rel_floor: float = DEFAULT_REL_FLOOR,
         abs_floor: float = DEFAULT_ABS_FLOOR) -> tuple[float, float, float, float]:
    """(median, scaled MAD, low, high) of ``values`` (non-empty), in the values' unit.

    Raises:
        ValueError: when ``values`` is empty.
    """
    if not values:
        raise ValueError("a baseline needs at least one value")
    med = statistics.median(values)
    mad = MAD_SCALE * statistics.median(abs(v - med) for v in values)
    half = max(k * mad, rel_floor * abs(med), abs_floor)
    return med, mad, med - half, med + half


def judge(value: float, direction: str, values: list[float], *, k: float = DEFAULT_K,
          min_runs: int = DEFAULT_MIN_RUNS, rel_floor: float = DEFAULT_REL_FLOOR,
          abs_floor: float = DEFAULT_ABS_FLOOR) -> dict:
    """Compare ``value`` with the baseline ``values`` (oldest first or any order).

    Returns the fields of a :class:`Verdict` that depend only on the numbers: status, n, median,
    mad, low, high, delta, delta_pct.
    """
    out: dict = {"n": len(values)}
    if len(values) < max(1, min_runs):
        return {**out, "status": "insufficient"}
    med, mad, low, high = band(values, k, rel_floor, abs_floor)
    delta = value - med
    out.update(median=med, mad=mad, low=low, high=high, delta=delta,
               delta_pct=(100.0 * delta / abs(med)) if med else None)
    if direction not in ("lower", "higher"):
        return {**out, "status": "no-direction"}
    if low <= value <= high:
        return {**out, "status": "ok"}
    worse = value > high if direction == "lower" else value < low
    return {**out, "status": "regression" if worse else "improvement"}


def previous_runs(store, run_id: str, n: int = DEFAULT_RUNS) -> list[dict]:
    """The ``n`` runs of the same suite that started before ``run_id``, newest first."""
    run = store.run(run_id)
    if run is None:
        return []
    return store.previous_runs(run["suite"], run["started"], run_id, n)


def baseline_values(store, run_ids: list[str]) -> dict[tuple[str, str, str], list[tuple[str, float]]]:
    """{(board, test, metric): [(run_id, value), ...]} over ``run_ids`` (outcome ``error`` left out)."""
    out: dict = {}
    if not run_ids:
        return out
    for row in store.metric_values(run_ids):
        out.setdefault((row[1], row[2], row[3]), []).append((row[0], float(row[4])))
    return out


def regressions(store, run_id: str, *, runs: int = DEFAULT_RUNS, k: float = DEFAULT_K,
                min_runs: int = DEFAULT_MIN_RUNS, rel_floor: float = DEFAULT_REL_FLOOR,
                abs_floor: float = DEFAULT_ABS_FLOOR) -> list[Verdict]:
    """Every metric of ``run_id`` judged against the previous ``runs`` runs of its suite.

    Returns one :class:`Verdict` per (board, test, metric) with a value, sorted by board, test, metric.
    Results with outcome ``error`` are not judged (an infrastructure error is not a regression).
    """
    base = baseline_values(store, [r["id"] for r in previous_runs(store, run_id, runs)])
    out = []
    for r in store.results(run_id):
        if r.outcome == "error":
            continue
        for m in r.metrics:
            if m.value is None:
                continue
            hist = base.get((r.board, r.test, m.name), [])
            j = judge(float(m.value), m.direction or "", [v for _, v in hist], k=k, min_runs=min_runs,
                      rel_floor=rel_floor, abs_floor=abs_floor)
            out.append(Verdict(board=r.board, test=r.test, metric=m.name, unit=m.unit or "",
                               direction=m.direction or "", value=float(m.value),
                               baseline_runs=[rid for rid, _ in hist], **j))
    out.sort(key=lambda v: (v.board, v.test, v.metric))
    return out


def series(store, suite: str, metric: str, limit: int = 50, test: str | None = None) -> dict[str, list[dict]]:
    """A metric over the last ``limit`` runs of ``suite``, one series per board and test (the Trends
    view): {label: [{run, started, value, unit, direction, test}]} oldest first. The label is the
    board name when one test records the metric on that board, else ``"<board> · <test>"`` (e.g. a
    test parametrised over two data sets gives two series per board: never mixed into one)."""
    by_key: dict = {}
    for row in store.metric_series(suite, metric, limit=limit, test=test):
        by_key.setdefault((row.pop("board"), row["test"]), []).append(row)
    tests_of: dict = {}
    for board, t in by_key:
        tests_of.setdefault(board, set()).add(t)
    return {(board if len(tests_of[board]) == 1 else f"{board} · {t}"): rows for (board, t), rows in by_key.items()}
