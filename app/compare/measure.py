"""``compare``: everything the compare page shows, from runs given as plain dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bamsprod.app.compare.grouping import (
    get_field,
    group_key,
    group_label,
    group_runs,
    pick_baseline,
    varying_fields,
)
from bamsprod.app.compare.series import (
    SERIES_METRICS,
    aggregate,
    best_value,
    columns_series,
    final_value,
    run_series,
)
from bamsprod.app.compare.stats import finite, paired_or_welch, paired_ratios, ratio, stat
from bamsprod.app.compare.target import Reach, run_reach
from bamsprod.core.metric_schema import TARGET_METRICS

DEFAULT_TARGET_FRACTION = 0.99


def compare(
    runs: Sequence[Mapping[str, Any]],
    *,
    group_by: Sequence[str] | None = None,
    baseline: str | None = None,
    target: float | None = None,
    metric: str = "test_acc",
    x: str = "epoch",
    include_runs: bool = True,
) -> dict[str, Any]:
    """Everything the compare page shows: per-group mean/std/n per epoch, and per group
    best/final accuracy, epochs (or seconds, with ``x="time"``) to target, speed-up and final
    accuracy difference against the baseline group; per run its time to target in epochs and
    in seconds (``app.compare.target``), and its series and evaluation points with
    ``include_runs`` (else None). A run gives its epochs as ``metrics`` (per-epoch dicts) or as
    ``columns`` (``store.metric_columns``), and may give ``evals`` (``store.eval_columns``).
    Raises ``ValueError`` for an unknown metric, x or baseline.

    The steps: group the runs and pick the baseline group; read each run's series; the
    common epoch budget (``_budget``); each group's mean curves; the target (given, or
    ``_default_target`` from the baseline's curve); each run's time to target; each group's
    per-seed numbers (``_measure``) and its summary against the baseline (``_group_summary``);
    each run's summary (``_run_summary``)."""
    if metric not in TARGET_METRICS:
        raise ValueError(f"metric must be one of {', '.join(TARGET_METRICS)}")
    if x not in ("epoch", "time"):
        raise ValueError("x must be 'epoch' or 'time'")
    groups = group_runs(runs, group_by)
    base_key = pick_baseline(groups, baseline)
    if baseline and base_key is None:
        raise ValueError(f"baseline {baseline!r} matches no group")
    fields = list(group_by) if group_by else varying_fields([r["config"] for r in runs])
    series = {r["id"]: _series(r, x) for r in runs}
    budget = _budget(groups, series)
    aggregates = {k: aggregate([series[r["id"]] for r in g]) for k, g in groups.items()}

    target_source: str | None = "given"
    if target is None and base_key is not None:
        target, target_source = _default_target(aggregates[base_key], metric, budget)

    # Time to target per run, interpolated between evaluations (app.compare.target).
    reached = {
        r["id"]: run_reach(series[r["id"]], r.get("evals"), metric, target, budget) for r in runs
    }
    measured = {
        key: _measure(g, series, reached, metric=metric, x=x, budget=budget)
        for key, g in groups.items()
    }
    base = measured.get(base_key) if base_key is not None else None
    out_groups = [
        _group_summary(key, g, measured[key], base, reached=reached, series=aggregates[key],
                       fields=fields, grouped=bool(group_by))
        for key, g in groups.items()
    ]
    return {
        "metric": metric,
        "x": x,
        "group_by": list(group_by) if group_by else None,
        "fields": fields,
        "baseline": base_key,
        "target": target,
        "target_source": target_source if target is not None else None,
        "budget": budget,
        "runs": [
            _run_summary(r, series[r["id"]], reached[r["id"]], group_by=group_by,
                         include_runs=include_runs)
            for r in runs
        ],
        "groups": out_groups,
    }


def _series(run: Mapping[str, Any], x: str) -> dict[str, Any]:
    """A run's per-epoch series, from its ``columns`` or its ``metrics``."""
    return columns_series(run["columns"], x) if "columns" in run else run_series(run["metrics"], x)


def _budget(
    groups: Mapping[str, Sequence[Mapping[str, Any]]], series: Mapping[int, Mapping[str, Any]]
) -> int | None:
    """The epochs every group reached: the least of the groups' last epochs (groups with no
    epoch yet left out); None when no group has one."""
    ends = [
        max((e for r in g for e in series[r["id"]]["epoch"]), default=0) for g in groups.values()
    ]
    ends = [e for e in ends if e > 0]
    return min(ends) if ends else None


def _default_target(
    baseline: Mapping[str, Any], metric: str, budget: int | None
) -> tuple[float | None, str]:
    """``DEFAULT_TARGET_FRACTION`` of the baseline group's best mean ``metric`` within the
    budget (None when it has no finite value), and the words saying so."""
    curve = [
        v
        for e, v in zip(baseline["epoch"], baseline["mean"][metric], strict=True)
        if budget is None or e <= budget
    ]
    best = max(finite(curve), default=None)
    target = DEFAULT_TARGET_FRACTION * best if best is not None else None
    return target, f"{DEFAULT_TARGET_FRACTION:g} x best baseline mean {metric}"


def _measure(
    group: Sequence[Mapping[str, Any]],
    series: Mapping[int, Mapping[str, Any]],
    reached: Mapping[int, Reach],
    *,
    metric: str,
    x: str,
    budget: int | None,
) -> dict[str, list[tuple[int | None, Any]]]:
    """One group's numbers as ``(seed, value)`` pairs, one per run: ``final`` and ``best``
    ``metric`` within the budget, ``reach`` (time to target in the unit of ``x``) and
    ``reach_s`` (in seconds)."""
    unit = "epochs" if x == "epoch" else "seconds"
    return {
        "final": [(r.get("seed"), final_value(series[r["id"]], metric, budget)) for r in group],
        "best": [(r.get("seed"), best_value(series[r["id"]], metric, budget)) for r in group],
        "reach": [(r.get("seed"), getattr(reached[r["id"]], unit)) for r in group],
        "reach_s": [(r.get("seed"), reached[r["id"]].seconds) for r in group],
    }


def _group_summary(
    key: str,
    group: Sequence[Mapping[str, Any]],
    m: Mapping[str, list[tuple[int | None, Any]]],
    base: Mapping[str, list[tuple[int | None, Any]]] | None,
    *,
    reached: Mapping[int, Reach],
    series: dict[str, Any],
    fields: Sequence[str],
    grouped: bool,
) -> dict[str, Any]:
    """One group as the page shows it: who is in it, its mean curves (``series``), its
    best/final/time-to-target statistics, and against the baseline's numbers ``base`` (if
    any) its speed-ups and final difference."""
    first = group[0]
    to_target = stat(v for _, v in m["reach"])
    to_target_s = stat(v for _, v in m["reach_s"])
    item: dict[str, Any] = {
        "key": key,
        "label": group_label(first["config"], fields),
        "config_hash": first["config_hash"] if not grouped else None,
        "fields": {f: get_field(first["config"], f) for f in fields},
        "n": len(group),
        "run_ids": [r["id"] for r in group],
        "seeds": [r.get("seed") for r in group],
        "series": series,
        "best": stat(v for _, v in m["best"]).to_dict(),
        "final": stat(v for _, v in m["final"]).to_dict(),
        "to_target": {**to_target.to_dict(), "reached": to_target.n,
                      "at_first_eval": sum(reached[r["id"]].at_first for r in group)},
        # seconds compare runs on the same device only (the page says so)
        "to_target_seconds": {**to_target_s.to_dict(), "reached": to_target_s.n},
        "speedup": None,
        "speedup_seconds": None,
        "speedup_paired": None,
        "final_diff": None,
    }
    if base is not None:
        base_to = stat(v for _, v in base["reach"])
        item["speedup"] = ratio(base_to.mean, to_target.mean)
        base_s = stat(v for _, v in base["reach_s"])
        item["speedup_seconds"] = ratio(base_s.mean, to_target_s.mean)
        paired = paired_ratios(base["reach"], m["reach"])
        item["speedup_paired"] = paired.to_dict() if paired else None
        item["final_diff"] = paired_or_welch(m["final"], base["final"])
    return item


def _run_summary(
    run: Mapping[str, Any],
    series: Mapping[str, Any],
    reach: Reach,
    *,
    group_by: Sequence[str] | None,
    include_runs: bool,
) -> dict[str, Any]:
    """One run as the page's run table shows it; its series and evaluation points only with
    ``include_runs``."""
    return {
        "id": run["id"],
        "name": run.get("name", ""),
        "state": run.get("state"),
        "seed": run.get("seed"),
        "optimizer": run["config"].get("optimizer"),
        "config_hash": run["config_hash"],
        "group": group_key(run["config"], group_by, run["config_hash"]),
        "to_target": reach.epochs,
        "to_target_seconds": reach.seconds,
        "reached_at_first_eval": reach.at_first,
        "to_target_from": reach.source,
        "series": _public_series(series) if include_runs else None,
        "evals": (run.get("evals") or None) if include_runs else None,
    }


def _public_series(s: Mapping[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("epoch", "x", *SERIES_METRICS)}
