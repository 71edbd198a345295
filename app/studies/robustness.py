"""Tuning robustness: how an optimizer's result depends on its tuning budget (Dodge et al.
2019, "Show your work"; DeepOBS and HYPAOBP report the same kind of curve).

For one optimizer and task, take the N stage-1 trials' scores (each trial's best validation
accuracy, the tuning criterion). The expected best score of k trials drawn from them **with
replacement**, k = 1..N, has a closed form, which is exactly the mean of the bootstrap over
those trials (no resampling noise)::

    E[max of k] = sum_i v_(i) * ((i / N)^k - ((i - 1) / N)^k)      (v_(1) <= ... <= v_(N))

E[1] is the mean trial, and the curve rises towards the best trial as k grows. The spread
E[N] - E[1] is how much the result owes to the tuning budget; a gap between two optimizers
smaller than that spread could be tuning luck.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bamsprod.app.studies.plan import ordered


def expected_max(values: Sequence[float], k: int) -> float:
    """E[max of ``k`` draws with replacement from ``values``] (closed form)."""
    v = sorted(values)
    n = len(v)
    if n == 0 or k < 1:
        raise ValueError("need at least one value and k >= 1")
    return sum(x * ((i / n) ** k - ((i - 1) / n) ** k) for i, x in enumerate(v, 1))


def curve(values: Sequence[float]) -> list[float]:
    """E[max of k], k = 1..N."""
    return [expected_max(values, k) for k in range(1, len(values) + 1)]


def task_robustness(trials: Mapping[str, Sequence[float | None]]) -> dict[str, Any]:
    """Per tuned optimizer (``trials``: optimizer -> its stage-1 scores, None for a trial with
    no validation accuracy, left out): N, the curve, E[1], E[N] and their spread in points;
    and :func:`luck` comparing the winner's spread with its lead over the runner-up."""
    rows: dict[str, Any] = {}
    for opt in ordered(list(trials)):
        scores = [float(s) for s in trials[opt] if s is not None and math.isfinite(s)]
        if not scores:
            continue
        c = curve(scores)
        rows[opt] = {"n": len(scores), "curve": c, "e1": c[0], "en": c[-1],
                     "spread_points": 100 * (c[-1] - c[0])}
    return {"rows": rows, "luck": luck(rows)}


def luck(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The winner at its full budget (highest E[N]), the runner-up, the gap between them and
    the winner's spread, in points; ``luck``: the gap is smaller than the spread, so a smaller
    tuning budget could change the order; ``leader_at_1``: who leads with one trial each."""
    if len(rows) < 2:
        return None
    ranked = sorted(rows, key=lambda o: rows[o]["en"], reverse=True)
    win, second = ranked[0], ranked[1]
    gap = 100 * (rows[win]["en"] - rows[second]["en"])
    spread = rows[win]["spread_points"]
    return {"winner": win, "second": second, "gap_points": gap, "spread_points": spread,
            "n": rows[win]["n"], "luck": gap < spread,
            "leader_at_1": max(rows, key=lambda o: rows[o]["e1"])}
