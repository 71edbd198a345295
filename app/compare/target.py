"""Time to target: when a run first reached a target accuracy, in epochs and training seconds,
interpolated between the two evaluations that straddle it (docs/compare.md states the rule).

A run's evaluations are points (epoch, training seconds, value) in order:

- the first point at or above the target, after one below it: the crossing is interpolated
  linearly between the two, in epochs and in seconds with the same fraction of the way;
- a point exactly at the target: that point;
- the run's first point already at or above it: that point, flagged ``at_first``, since the
  true crossing may be earlier (nothing is extrapolated before the first evaluation);
- never at or above it (within the budget): None.

Points with a missing or non-finite value are skipped. For ``val_acc`` the points are the run's
evaluation points (``evals_per_epoch`` per epoch) when it has them; otherwise, and for the
other metrics, its epochs (an older run has one evaluation per epoch, at its end), with the
epochs' training seconds summed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

__all__ = ["Reach", "crossing", "reach", "run_reach"]


@dataclass(frozen=True)
class Reach:
    """When a run first reached the target: ``epochs`` (fractional) and ``seconds`` of
    training (None if never); ``at_first``: at its first evaluation, so perhaps earlier;
    ``source``: the points it was read from (``evals`` or ``epochs``)."""

    epochs: float | None
    seconds: float | None
    at_first: bool = False
    source: Literal["evals", "epochs"] = "epochs"


def _usable(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def crossing(ys: Sequence[Any], target: float) -> tuple[int, int, float] | None:
    """``(i, j, t)``: the target is first reached at point ``j``, a fraction ``t`` in (0, 1] of
    the way from point ``i`` (the last usable one before it); ``i == j`` and ``t == 1`` when
    ``j`` is the first usable point. None when no point reaches it."""
    prev = None
    for j, y in enumerate(ys):
        if not _usable(y):
            continue
        if y >= target:
            if prev is None:
                return j, j, 1.0
            y0 = ys[prev]
            return prev, j, 1.0 if y == target else (target - y0) / (y - y0)
        prev = j
    return None


def _between(xs: Sequence[Any], i: int, j: int, t: float) -> float | None:
    """``xs`` a fraction ``t`` of the way from ``xs[i]`` to ``xs[j]``; exactly ``xs[j]`` at
    ``t == 1``; None when either is missing."""
    if not (_usable(xs[i]) and _usable(xs[j])):
        return None
    if t == 1.0:
        return float(xs[j])
    return float(xs[i]) + t * (float(xs[j]) - float(xs[i]))


def reach(
    epochs: Sequence[float],
    seconds: Sequence[Any],
    ys: Sequence[Any],
    target: float,
    budget: float | None = None,
    source: Literal["evals", "epochs"] = "epochs",
) -> Reach:
    """The first crossing of ``target`` by points ``(epochs[k], seconds[k], ys[k])`` in order,
    only those at or before epoch ``budget`` (see the module docstring for the rule)."""
    n = len(epochs) if budget is None else sum(1 for e in epochs if e <= budget)
    found = crossing(ys[:n], target)
    if found is None:
        return Reach(None, None, source=source)
    i, j, t = found
    at_first = i == j
    return Reach(_between(epochs, i, j, t), _between(seconds, i, j, t), at_first, source)


def run_reach(
    series: Mapping[str, Sequence[Any]],
    evals: Mapping[str, Sequence[Any]] | None,
    metric: str,
    target: float | None,
    budget: int | None = None,
) -> Reach:
    """A run's time to ``target`` on ``metric``: from its evaluation points (``evals``, as
    ``store.eval_columns`` gives them) for ``val_acc`` when it has any, else from its epoch
    ``series`` (``epoch``, ``seconds``, the metric, in epoch order)."""
    if metric == "val_acc" and evals and any(_usable(v) for v in evals.get("val_acc", ())):
        if target is None:
            return Reach(None, None, source="evals")
        return reach(evals["epoch"], evals["train_seconds"], evals["val_acc"], target, budget,
                     "evals")
    if target is None:
        return Reach(None, None)
    elapsed = list(accumulate(float(v or 0.0) for v in series["seconds"]))
    return reach(series["epoch"], elapsed, series[metric], target, budget)
