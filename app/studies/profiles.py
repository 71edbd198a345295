"""Performance profiles across a study's tasks (AlgoPerf's rho(tau); Dolan & More 2002).

For each task, an optimizer's time to the task's target is the **median over its seeds** of
the per-run times, a run that never reached the target counting as infinity (so the median is
infinite when half or more of the seeds never reached it). Its ratio is that time over the
fastest optimizer's on the task (infinite when it never reached it, or when nobody did).

    rho(tau) = |{tasks: ratio <= tau}| / n_tasks

counts every task of the profile in ``n_tasks``, solved or not. The score is the area under
rho over tau in [1, 4] divided by 3, so 1 means fastest on every task and 0 means never within
4x of the fastest. rho is a step function, so the area is computed exactly: a task with ratio
r contributes ``max(0, 4 - r)`` (r >= 1), and the score is their sum over ``3 n_tasks``.
(AlgoPerf's scorer samples rho at 100 points and integrates with the trapezoid rule, which
only approximates this.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

TAU_MAX = 4.0


def median_time(times: Iterable[float | None]) -> float:
    """The median of per-run times, None (never reached) counting as infinity; infinity
    without runs."""
    xs = [math.inf if t is None else float(t) for t in times]
    return float(np.median(xs)) if xs else math.inf


def ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per task, each optimizer's time over the task's fastest (inf: not reached)."""
    out: dict[str, dict[str, float]] = {}
    for task, by_opt in times.items():
        best = min(by_opt.values(), default=math.inf)
        out[task] = {o: (t / best if math.isfinite(t) and best > 0 else
                         (1.0 if t == best == 0 else math.inf))
                     for o, t in by_opt.items()}
    return out


def rho(task_ratios: Sequence[float], tau: float, n_tasks: int) -> float:
    """The fraction of ``n_tasks`` solved within ``tau`` times the fastest."""
    return sum(1 for r in task_ratios if r <= tau) / n_tasks if n_tasks else 0.0


def score(task_ratios: Sequence[float], n_tasks: int, tau_max: float = TAU_MAX) -> float:
    """Area under rho over [1, tau_max] divided by (tau_max - 1), exactly."""
    if not n_tasks:
        return 0.0
    area = sum(max(0.0, tau_max - max(r, 1.0)) for r in task_ratios if math.isfinite(r))
    return area / ((tau_max - 1.0) * n_tasks)


def steps(task_ratios: Sequence[float], n_tasks: int, tau_max: float = TAU_MAX
          ) -> tuple[list[float], list[float]]:
    """rho as a step function on [1, tau_max]: the taus where it changes (and both ends) and
    its value from each on (for a chart drawn with ``line_shape="hv"``)."""
    taus = sorted({1.0, tau_max, *(r for r in task_ratios if 1.0 <= r <= tau_max)})
    return taus, [rho(task_ratios, t, n_tasks) for t in taus]


def profile(times: Mapping[str, Mapping[str, float]], optimizers: Sequence[str],
            left_out: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The profile of ``times`` (task -> optimizer -> median time, inf when not reached): per
    task the ratios, per optimizer the score and rho's steps. ``left_out``: tasks not in the
    profile and why (e.g. seconds from several environments)."""
    r = ratios(times)
    n = len(times)
    out: dict[str, Any] = {"n_tasks": n, "tasks": list(times), "times": _json(times),
                           "ratios": _json(r), "left_out": dict(left_out or {}),
                           "scores": {}, "steps": {}, "solved": {}}
    for opt in optimizers:
        mine = [r[t].get(opt, math.inf) for t in r]
        out["scores"][opt] = score(mine, n)
        taus, values = steps(mine, n)
        out["steps"][opt] = {"tau": taus, "rho": values}
        out["solved"][opt] = sum(1 for x in mine if math.isfinite(x))
    return out


def _json(table: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """Infinity as None, so the JSON stays standard."""
    return {t: {o: (v if math.isfinite(v) else None) for o, v in row.items()}
            for t, row in table.items()}
