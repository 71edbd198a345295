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
from bamsprod.app.compare.target import run_reach
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
    Raises ``ValueError`` for an unknown baseline."""
    if metric not in TARGET_METRICS:
        raise ValueError(f"metric must be one of {', '.join(TARGET_METRICS)}")
    if x not in ("epoch", "time"):
        raise ValueError("x must be 'epoch' or 'time'")
    groups = group_runs(runs, group_by)
    base_key = pick_baseline(groups, baseline)
    if baseline and base_key is None:
        raise ValueError(f"baseline {baseline!r} matches no group")
    fields = list(group_by) if group_by else varying_fields([r["config"] for r in runs])
    series = {
        r["id"]: columns_series(r["columns"], x) if "columns" in r else run_series(r["metrics"], x)
        for r in runs
    }

    ends = [
        max((e for r in g for e in series[r["id"]]["epoch"]), default=0) for g in groups.values()
    ]
    ends = [e for e in ends if e > 0]
    budget = min(ends) if ends else None

    aggregates = {k: aggregate([series[r["id"]] for r in g]) for k, g in groups.items()}
    target_source = "given"
    if target is None and base_key is not None:
        agg = aggregates[base_key]
        curve = [
            v
            for e, v in zip(agg["epoch"], agg["mean"][metric], strict=True)
            if budget is None or e <= budget
        ]
        best = max(finite(curve), default=None)
        target = DEFAULT_TARGET_FRACTION * best if best is not None else None
        target_source = f"{DEFAULT_TARGET_FRACTION:g} x best baseline mean {metric}"

    def per_seed(g: Sequence[Mapping[str, Any]], fn) -> list[tuple[int | None, float | None]]:
        return [(r.get("seed"), fn(series[r["id"]])) for r in g]

    # Time to target per run, interpolated between evaluations (app.compare.target).
    reached = {
        r["id"]: run_reach(series[r["id"]], r.get("evals"), metric, target, budget) for r in runs
    }

    def per_run(g: Sequence[Mapping[str, Any]], unit: str) -> list[tuple[int | None, Any]]:
        return [(r.get("seed"), getattr(reached[r["id"]], unit)) for r in g]

    measured: dict[str, dict[str, Any]] = {}
    for key, g in groups.items():
        measured[key] = {
            "final": per_seed(g, lambda s: final_value(s, metric, budget)),
            "best": per_seed(g, lambda s: best_value(s, metric, budget)),
            "reach": per_run(g, "epochs" if x == "epoch" else "seconds"),
            "reach_s": per_run(g, "seconds"),
        }

    out_groups = []
    base = measured.get(base_key) if base_key is not None else None
    for key, g in groups.items():
        m = measured[key]
        to_target = stat(v for _, v in m["reach"])
        to_target_s = stat(v for _, v in m["reach_s"])
        item: dict[str, Any] = {
            "key": key,
            "label": group_label(g[0]["config"], fields),
            "config_hash": g[0]["config_hash"] if not group_by else None,
            "fields": {f: get_field(g[0]["config"], f) for f in fields},
            "n": len(g),
            "run_ids": [r["id"] for r in g],
            "seeds": [r.get("seed") for r in g],
            "series": aggregates[key],
            "best": stat(v for _, v in m["best"]).to_dict(),
            "final": stat(v for _, v in m["final"]).to_dict(),
            "to_target": {**to_target.to_dict(), "reached": to_target.n,
                          "at_first_eval": sum(reached[r["id"]].at_first for r in g)},
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
        out_groups.append(item)

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
            {
                "id": r["id"],
                "name": r.get("name", ""),
                "state": r.get("state"),
                "seed": r.get("seed"),
                "optimizer": r["config"].get("optimizer"),
                "config_hash": r["config_hash"],
                "group": group_key(r["config"], group_by, r["config_hash"]),
                "to_target": reached[r["id"]].epochs,
                "to_target_seconds": reached[r["id"]].seconds,
                "reached_at_first_eval": reached[r["id"]].at_first,
                "to_target_from": reached[r["id"]].source,
                "series": _public_series(series[r["id"]]) if include_runs else None,
                "evals": (r.get("evals") or None) if include_runs else None,
            }
            for r in runs
        ],
        "groups": out_groups,
    }


def _public_series(s: Mapping[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("epoch", "x", *SERIES_METRICS)}
