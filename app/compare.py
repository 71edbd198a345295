"""Comparison math, pure Python (no database, no web): grouping, mean/std/n per epoch, and the
paper's two measures (see "Measuring the paper's two claims" in the spec).

Inputs are plain dicts so the functions are easy to test on hand-made series:
a run is ``{"id", "name", "seed", "config" (RunConfig JSON), "config_hash", "metrics"}`` where
``metrics`` is a list of per-epoch dicts (``epoch``, ``test_acc``, ..., ``seconds``), or, on the
API's hot path, ``"columns"`` instead: one list per metric in epoch order (no per-row dicts).

- Groups default to "same config hash" (seeds pooled); ``group_by`` names config fields
  (``optimizer``, ``hparams.kappa``, ...).
- The budget is the smallest last epoch over groups, so every group is measured on the same
  number of epochs.
- Target (default): 99% of the best per-epoch mean accuracy the baseline group reaches within
  the budget. Epochs (or seconds, with ``x="time"``) to target are per run; speed-up is baseline
  / group, as a ratio of means and, where seeds pair up, mean ± std of per-seed ratios.
- Final accuracy difference vs baseline: per-seed differences when seeds pair up, otherwise
  the difference of means with the Welch standard error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any

from core.metric_schema import METRIC_NAMES, TARGET_METRICS

SERIES_METRICS = METRIC_NAMES
DEFAULT_TARGET_FRACTION = 0.99
# Config fields that never define a group by default (they do not change the result).
_NOT_GROUPING = {"seed", "name", "tags", "device", "data_dir", "schema_version", "compile"}


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2), count and standard error."""

    mean: float | None
    std: float | None
    n: int
    se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def stat(values: Iterable[Any]) -> Stat:
    """Mean/std/n of the finite values (None and NaN are left out)."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    mean = sum(xs) / n
    if n < 2:
        return Stat(mean, None, 1)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Stat(mean, std, n, std / math.sqrt(n))


# ----------------------------------------------------------------------------------- grouping


def get_field(config: Mapping[str, Any], dotted: str) -> Any:
    """``get_field(cfg, "hparams.kappa")``; None when absent."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hparams": {"kappa": 1}}`` -> ``{"hparams.kappa": 1}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def group_key(config: Mapping[str, Any], group_by: Sequence[str] | None, config_hash: str) -> str:
    """The group a run belongs to: its config hash, or ``field=value,...`` over ``group_by``."""
    if not group_by:
        return config_hash
    return ",".join(f"{f}={fmt_value(get_field(config, f))}" for f in group_by)


def varying_fields(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted config fields whose values differ between configs (seed, name etc. left out)."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    out = []
    for k in keys:
        if k.split(".")[0] in _NOT_GROUPING:
            continue
        if len({repr(f.get(k)) for f in flat}) > 1:
            out.append(k)
    return out


def group_label(config: Mapping[str, Any], fields: Sequence[str]) -> str:
    """A readable label from the fields that tell groups apart."""
    if not fields:
        return str(config.get("optimizer", "all"))
    return ", ".join(f"{f}={fmt_value(get_field(config, f))}" for f in fields)


def group_runs(
    runs: Sequence[Mapping[str, Any]], group_by: Sequence[str] | None = None
) -> dict[str, list[Mapping[str, Any]]]:
    """Runs by group key, groups and runs in first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        key = group_key(run["config"], group_by, run["config_hash"])
        groups.setdefault(key, []).append(run)
    return groups


# ------------------------------------------------------------------------------------ series


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


def _mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample std (None for n < 2) of the finite values: ``stat`` without the object."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return None, None
    mean = sum(xs) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))


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
        "x": [_mean_std(s["x"][i] for s, i in m)[0] for m in members],
        "n": [len(m) for m in members],
        "mean": {},
        "std": {},
    }
    for name in metrics:
        pairs = [_mean_std([s[name][i] for s, i in m]) for m in members]
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
    vals = _finite(_within(s, metric, budget))
    return max(vals) if vals else None


def final_value(
    s: Mapping[str, Sequence[Any]], metric: str, budget: int | None = None
) -> float | None:
    """The metric at the run's last epoch within the budget."""
    vals = _within(s, metric, budget)
    if not vals or vals[-1] is None or not math.isfinite(vals[-1]):
        return None
    return float(vals[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _by_seed(pairs: Sequence[tuple[int | None, float | None]]) -> dict[int, float | None] | None:
    """Seed -> value, or None when seeds are missing or repeat (then nothing can be paired)."""
    seeds = [s for s, _ in pairs]
    if any(s is None for s in seeds) or len(set(seeds)) != len(seeds):
        return None
    return {int(s): v for s, v in pairs}  # type: ignore[arg-type]


def paired_or_welch(
    group: Sequence[tuple[int | None, float | None]],
    baseline: Sequence[tuple[int | None, float | None]],
) -> dict[str, Any]:
    """Difference group - baseline from (seed, value) pairs: per-seed differences over shared
    seeds when seeds pair up, otherwise the difference of means with the Welch standard error
    (``std`` is then the spread of one draw from each group)."""
    g_seed, b_seed = _by_seed(group), _by_seed(baseline)
    if g_seed is not None and b_seed is not None:
        shared = [
            s for s in g_seed if s in b_seed and g_seed[s] is not None and b_seed[s] is not None
        ]
        if shared:
            st = stat(g_seed[s] - b_seed[s] for s in shared)  # type: ignore[operator]
            return {**st.to_dict(), "paired": True}
    g, b = stat(v for _, v in group), stat(v for _, v in baseline)
    if g.mean is None or b.mean is None:
        return {"mean": None, "std": None, "n": 0, "se": None, "paired": False}
    both = g.std is not None and b.std is not None
    se = math.sqrt(g.std**2 / g.n + b.std**2 / b.n) if both else None  # type: ignore[operator]
    std = math.sqrt(g.std**2 + b.std**2) if both else None  # type: ignore[operator]
    return {"mean": g.mean - b.mean, "std": std, "n": min(g.n, b.n), "se": se, "paired": False}


def paired_ratios(
    baseline: Sequence[tuple[int | None, float | None]],
    group: Sequence[tuple[int | None, float | None]],
) -> Stat | None:
    """Per-seed ratios baseline / group over shared seeds; None when seeds do not pair up."""
    b_seed, g_seed = _by_seed(baseline), _by_seed(group)
    if b_seed is None or g_seed is None:
        return None
    st = stat(_ratio(b_seed[s], g_seed[s]) for s in g_seed if s in b_seed)
    return st if st.n else None


def pick_baseline(
    groups: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str | None
) -> str | None:
    """The baseline group key: an exact key, else the first group whose runs all use that
    optimizer; by default the first Adam group, else the first group. None if nothing matches."""
    if not groups:
        return None
    if baseline:
        if baseline in groups:
            return baseline
        for key, runs in groups.items():
            if all(r["config"].get("optimizer") == baseline for r in runs):
                return key
        return None
    for key, runs in groups.items():
        if all(r["config"].get("optimizer") == "adam" for r in runs):
            return key
    return next(iter(groups))


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
    best/final accuracy, epochs (or seconds) to target, speed-up and final accuracy difference
    against the baseline group; per-run series with ``include_runs`` (else each run's
    ``series`` is None). A run gives its epochs as ``metrics`` (per-epoch dicts) or as
    ``columns`` (``store.metric_columns``). Raises ``ValueError`` for an unknown baseline."""
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
        best = max(_finite(curve), default=None)
        target = DEFAULT_TARGET_FRACTION * best if best is not None else None
        target_source = f"{DEFAULT_TARGET_FRACTION:g} x best baseline mean {metric}"

    def per_seed(g: Sequence[Mapping[str, Any]], fn) -> list[tuple[int | None, float | None]]:
        return [(r.get("seed"), fn(series[r["id"]])) for r in g]

    def reach(s: Mapping[str, Sequence[Any]]) -> float | None:
        if target is None:
            return None
        return first_reach(s["x"], s[metric], target, s["epoch"], budget)

    def reach_seconds(s: Mapping[str, Sequence[Any]]) -> float | None:
        """Wall seconds of training until the target: the stored epoch times, summed."""
        if target is None:
            return None
        elapsed = list(accumulate(float(v or 0.0) for v in s["seconds"]))
        return first_reach(elapsed, s[metric], target, s["epoch"], budget)

    measured: dict[str, dict[str, Any]] = {}
    for key, g in groups.items():
        measured[key] = {
            "final": per_seed(g, lambda s: final_value(s, metric, budget)),
            "best": per_seed(g, lambda s: best_value(s, metric, budget)),
            "reach": per_seed(g, reach),
            "reach_s": per_seed(g, reach_seconds),
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
            "to_target": {**to_target.to_dict(), "reached": to_target.n},
            # seconds compare runs on the same device only (the page says so)
            "to_target_seconds": {**to_target_s.to_dict(), "reached": to_target_s.n},
            "speedup": None,
            "speedup_seconds": None,
            "speedup_paired": None,
            "final_diff": None,
        }
        if base is not None:
            base_to = stat(v for _, v in base["reach"])
            item["speedup"] = _ratio(base_to.mean, to_target.mean)
            base_s = stat(v for _, v in base["reach_s"])
            item["speedup_seconds"] = _ratio(base_s.mean, to_target_s.mean)
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
                "series": _public_series(series[r["id"]]) if include_runs else None,
            }
            for r in runs
        ],
        "groups": out_groups,
    }


def _public_series(s: Mapping[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in ("epoch", "x", *SERIES_METRICS)}


SUMMARY_COLUMNS = (
    "group",
    "label",
    "n",
    "best_mean",
    "best_std",
    "final_mean",
    "final_std",
    "to_target_mean",
    "to_target_std",
    "reached",
    "to_target_seconds_mean",
    "to_target_seconds_std",
    "speedup",
    "speedup_seconds",
    "speedup_paired_mean",
    "speedup_paired_std",
    "final_diff_mean",
    "final_diff_std",
    "final_diff_se",
    "final_diff_n",
    "final_diff_paired",
)


def summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per group (for CSV)."""
    rows = []
    for g in result["groups"]:
        sp = g["speedup_paired"] or {}
        fd = g["final_diff"] or {}
        rows.append(
            {
                "group": g["key"],
                "label": g["label"],
                "n": g["n"],
                "best_mean": g["best"]["mean"],
                "best_std": g["best"]["std"],
                "final_mean": g["final"]["mean"],
                "final_std": g["final"]["std"],
                "to_target_mean": g["to_target"]["mean"],
                "to_target_std": g["to_target"]["std"],
                "reached": g["to_target"]["reached"],
                "to_target_seconds_mean": g["to_target_seconds"]["mean"],
                "to_target_seconds_std": g["to_target_seconds"]["std"],
                "speedup": g["speedup"],
                "speedup_seconds": g["speedup_seconds"],
                "speedup_paired_mean": sp.get("mean"),
                "speedup_paired_std": sp.get("std"),
                "final_diff_mean": fd.get("mean"),
                "final_diff_std": fd.get("std"),
                "final_diff_se": fd.get("se"),
                "final_diff_n": fd.get("n"),
                "final_diff_paired": fd.get("paired"),
            }
        )
    return rows


def series_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form group series, one row per (group, epoch) (for CSV)."""
    rows = []
    for g in result["groups"]:
        s = g["series"]
        for i, epoch in enumerate(s["epoch"]):
            row: dict[str, Any] = {
                "group": g["key"],
                "epoch": epoch,
                "x": s["x"][i],
                "n": s["n"][i],
            }
            for m in SERIES_METRICS:
                row[f"{m}_mean"] = s["mean"][m][i]
                row[f"{m}_std"] = s["std"][m][i]
            rows.append(row)
    return rows


def runs_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form per-run series, one row per (run, epoch) (for CSV)."""
    rows = []
    for r in result["runs"]:
        s = r["series"] or {"epoch": []}
        for i, epoch in enumerate(s["epoch"]):
            row: dict[str, Any] = {
                "run_id": r["id"],
                "group": r["group"],
                "seed": r["seed"],
                "epoch": epoch,
                "x": s["x"][i],
            }
            for m in SERIES_METRICS:
                row[m] = s[m][i]
            rows.append(row)
    return rows
