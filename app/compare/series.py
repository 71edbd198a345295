"""A run's columnar series (by epoch or cumulative training seconds), their per-epoch
aggregate, and reading a series: best and final value within a budget (time to a target is
``app.compare.target``'s)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

import numpy as np

from bamsprod.app.compare.stats import finite
from bamsprod.core.metric_schema import METRIC_NAMES

SERIES_METRICS = METRIC_NAMES


def run_series(metrics: Sequence[Mapping[str, Any]], x: str = "epoch") -> dict[str, list[Any]]:
    """Columnar series of one run, sorted by epoch; ``x`` is the epoch or cumulative seconds."""
    rows = sorted(metrics, key=lambda m: m["epoch"])
    out: dict[str, list[Any]] = {"epoch": [int(m["epoch"]) for m in rows]}
    elapsed, xs = 0.0, []
    for m in rows:
        elapsed += float(m.get("seconds") or 0.0)
        xs.append(elapsed if x == "time" else int(m["epoch"]))
    out["x"] = xs
    for name in SERIES_METRICS:
        out[name] = [m.get(name) for m in rows]
    return out


def columns_series(columns: Mapping[str, Sequence[Any]], x: str = "epoch") -> dict[str, Any]:
    """A run's series from columns already in epoch order (``epoch``, ``seconds``, metrics, as
    ``store.metric_columns`` returns them): ``x`` added, no per-row work beyond the sum."""
    out: dict[str, Any] = dict(columns)
    if x == "time":
        out["x"] = list(accumulate(float(v or 0.0) for v in columns["seconds"]))
    else:
        out["x"] = columns["epoch"]
    for name in SERIES_METRICS:
        out.setdefault(name, [None] * len(columns["epoch"]))
    return out


def aggregate(
    series: Sequence[Mapping[str, Sequence[Any]]], metrics: Sequence[str] = SERIES_METRICS
) -> dict[str, Any]:
    """Per-epoch mean/std/n over runs' columnar series (epochs a run lacks are left out).

    Vectorised: one runs x epochs grid per metric (NaN where a run lacks the epoch or its value
    is missing or not finite), summed down the runs in run order, as a Python loop would."""
    epochs = sorted({int(e) for s in series for e in s["epoch"]})
    column = {e: j for j, e in enumerate(epochs)}
    rows = np.repeat(np.arange(len(series)), [len(s["epoch"]) for s in series])
    cols = np.fromiter((column[int(e)] for s in series for e in s["epoch"]), np.intp,
                       count=len(rows))
    shape = (len(series), len(epochs))
    present = np.zeros(shape, dtype=bool)
    present[rows, cols] = True

    def column_stats(name: str) -> tuple[list[float | None], list[float | None]]:
        grid = np.full(shape, np.nan)
        grid[rows, cols] = np.fromiter(
            (np.nan if v is None else v for s in series for v in s[name]), float,
            count=len(rows))
        finite = np.isfinite(grid)
        k = finite.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(finite, grid, 0.0).sum(axis=0) / k
            var = (np.where(finite, grid - mean, 0.0) ** 2).sum(axis=0) / (k - 1)
        means = [float(m) if n else None for m, n in zip(mean, k, strict=True)]
        stds = [math.sqrt(float(v)) if n > 1 else None for v, n in zip(var, k, strict=True)]
        return means, stds

    out: dict[str, Any] = {"epoch": epochs, "x": column_stats("x")[0],
                           "n": present.sum(axis=0).tolist(), "mean": {}, "std": {}}
    for name in metrics:
        out["mean"][name], out["std"][name] = column_stats(name)
    return out


def _within(s: Mapping[str, Sequence[Any]], metric: str, budget: int | None) -> list[Any]:
    return [v for e, v in zip(s["epoch"], s[metric], strict=True) if budget is None or e <= budget]


def best_value(
    s: Mapping[str, Sequence[Any]], metric: str, budget: int | None = None
) -> float | None:
    vals = finite(_within(s, metric, budget))
    return max(vals) if vals else None


def final_value(
    s: Mapping[str, Sequence[Any]], metric: str, budget: int | None = None
) -> float | None:
    """The metric at the run's last epoch within the budget."""
    vals = _within(s, metric, budget)
    if not vals or vals[-1] is None or not math.isfinite(vals[-1]):
        return None
    return float(vals[-1])
