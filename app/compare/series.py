"""A run's columnar series (by epoch or cumulative seconds), their per-epoch aggregate, and
reading a series: first reach of a target, best and final value within a budget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

from app.compare.stats import finite, mean_std
from core.metric_schema import METRIC_NAMES

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
    """Per-epoch mean/std/n over runs' columnar series (epochs a run lacks are left out)."""
    by_epoch: dict[int, list[tuple[Mapping[str, Sequence[Any]], int]]] = {}
    for s in series:
        for i, epoch in enumerate(s["epoch"]):
            by_epoch.setdefault(int(epoch), []).append((s, i))
    epochs = sorted(by_epoch)
    members = [by_epoch[e] for e in epochs]
    out: dict[str, Any] = {
        "epoch": epochs,
        "x": [mean_std(s["x"][i] for s, i in m)[0] for m in members],
        "n": [len(m) for m in members],
        "mean": {},
        "std": {},
    }
    for name in metrics:
        pairs = [mean_std([s[name][i] for s, i in m]) for m in members]
        out["mean"][name] = [p[0] for p in pairs]
        out["std"][name] = [p[1] for p in pairs]
    return out


def first_reach(
    xs: Sequence[float],
    ys: Sequence[Any],
    target: float,
    epochs: Sequence[int] | None = None,
    budget: int | None = None,
) -> float | None:
    """The first ``x`` where ``y >= target`` (within ``budget`` epochs); None if never."""
    for i, (xv, yv) in enumerate(zip(xs, ys, strict=True)):
        if budget is not None and epochs is not None and epochs[i] > budget:
            break
        if yv is not None and math.isfinite(yv) and yv >= target:
            return float(xv)
    return None


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
