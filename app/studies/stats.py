"""The reproduction's statistics, from ``GET /api/compare`` answers (no HTTP, no torch).

Every per-group number comes from the API (``app.compare``); this module adds what a verdict
needs on top of it:

- :func:`interval`: a t-interval over seeds around a paired statistic (the mean of per-seed
  ratios or differences that compare returns with its standard error);
- :func:`verdict`: holds / does not hold / inconclusive, by the rule in :data:`VERDICT_RULE`;
- :func:`task_rows` and :func:`claims`: one row per optimizer, and BAMSProd's three measures
  (speed-up in epochs and in seconds to the target vs Adam, final accuracy minus Bop's);
- :func:`plateau`: whether Adam's validation accuracy stopped rising within the budget;
- :func:`map_cells`: the kappa x gamma map against Adam and Bop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bamsprod.app.studies.plan import OPTIMIZER_ORDER, PAPER_GAIN_POINTS, PAPER_SPEEDUP

LEVEL = 0.95
# A plateau: the best mean validation accuracy rose less than this over the last third of the
# budget (at least one epoch).
PLATEAU_POINTS = 0.5
VERDICT_RULE = (
    "95% t-interval over seeds of the paired per-seed values (seed k of BAMSProd with seed k of "
    "the baseline). Holds: the interval lies above no effect (1× or 0 points) and not wholly "
    "below the paper's value. Does not hold: the interval lies wholly below the paper's value "
    "(even if above no effect). Inconclusive: anything else, including fewer than 2 paired "
    "seeds."
)


def ok(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------- t-intervals


def _t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(df // 2 - 1):
            term *= c2 * (2 * k + 1) / (2 * k + 2)
            total += term
        return s * total
    total = theta
    if df > 1:
        term = math.cos(theta)
        acc = term
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            acc += term
        total += s * acc
    return 2 * total / math.pi


def t_quantile(level: float, df: int) -> float:
    """The two-sided ``level`` quantile of Student's t: P(|T| <= q) = level."""
    if df < 1 or not 0 < level < 1:
        raise ValueError("need df >= 1 and 0 < level < 1")
    lo, hi = 0.0, 1.0
    while _t_within(hi, df) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_within(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def interval(st: Mapping[str, Any] | None, level: float = LEVEL,
             scale: float = 1.0) -> dict[str, Any] | None:
    """``st`` (mean, std, n, se: a compare ``Stat``) with a t-interval over its ``n`` values
    (``lo``/``hi`` None for n < 2), all times ``scale``; None without a mean."""
    if not st or not ok(st.get("mean")):
        return None
    n = int(st.get("n") or 0)
    out = {"mean": scale * st["mean"], "std": None, "n": n, "se": None, "lo": None, "hi": None,
           "level": level, "paired": bool(st.get("paired", True))}
    if ok(st.get("std")):
        out["std"] = scale * st["std"]
    if n >= 2 and ok(st.get("se")):
        out["se"] = scale * st["se"]
        half = t_quantile(level, n - 1) * out["se"]
        out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def verdict(ci: Mapping[str, Any] | None, claimed: float, null: float) -> dict[str, str]:
    """Holds / does not hold / inconclusive for a claim of ``claimed`` against no effect
    ``null``, from a paired interval (see :data:`VERDICT_RULE`)."""
    if not ci or not ci.get("paired") or not ok(ci.get("lo")) or not ok(ci.get("hi")):
        n = (ci or {}).get("n", 0)
        return {"verdict": "inconclusive",
                "why": f"no interval: {n} paired seed{'' if n == 1 else 's'} (2 needed)"}
    lo, hi = ci["lo"], ci["hi"]
    if hi < claimed:
        side = "above no effect, " if lo > null else ""
        return {"verdict": "does not hold",
                "why": f"the interval lies {side}wholly below the paper's {claimed:g}"}
    if lo > null:
        where = "above" if lo > claimed else "around"
        return {"verdict": "holds",
                "why": f"the interval excludes no effect ({null:g}) and lies {where} the "
                       f"paper's {claimed:g}"}
    return {"verdict": "inconclusive",
            "why": f"the interval holds both no effect ({null:g}) and the paper's {claimed:g}"}


# --------------------------------------------------------------------------------- rows


def _group_optimizer(group: Mapping[str, Any]) -> str:
    opt = (group.get("fields") or {}).get("optimizer")
    if opt is None:  # key "optimizer=adam"
        opt = str(group.get("key", "")).partition("=")[2]
    return str(opt)


def groups_by_optimizer(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A compare result's groups keyed by optimizer name."""
    return {_group_optimizer(g): g for g in result.get("groups", [])}


def _speedup(group: Mapping[str, Any], ratio_key: str) -> dict[str, Any] | None:
    """The paired per-seed speed-up with its interval, else the ratio of means (no interval)."""
    paired = interval(group.get("speedup_paired"))
    if paired is not None:
        return paired
    value = group.get(ratio_key)
    if not ok(value):
        return None
    return {"mean": value, "std": None, "n": 0, "se": None, "lo": None, "hi": None,
            "level": LEVEL, "paired": False}


def task_rows(compares: Mapping[str, Mapping[str, Any]],
              order: Sequence[str] = OPTIMIZER_ORDER) -> list[dict[str, Any]]:
    """One row per optimizer from three compare results of the stage-2 runs: ``adam``
    (baseline Adam, x=epoch), ``adam_time`` (the same target, x=time) and ``bop``."""
    by = {k: groups_by_optimizer(v) for k, v in compares.items()}
    main = by["adam"]
    names = [o for o in order if o in main] + [o for o in main if o not in order]
    rows = []
    for opt in names:
        g = main[opt]
        timed = by.get("adam_time", {}).get(opt)
        bop = by.get("bop", {}).get(opt)
        diff = bop.get("final_diff") if bop else None
        rows.append({
            "optimizer": opt,
            "n": g["n"],
            "final": dict(g["final"]),
            "best": dict(g["best"]),
            "to_target": {**{k: g["to_target"][k] for k in ("mean", "std", "reached")},
                          "n": g["n"]},
            "to_target_seconds": {**{k: g["to_target_seconds"][k]
                                     for k in ("mean", "std", "reached")}, "n": g["n"]},
            "speedup_epochs": _speedup(g, "speedup"),
            "speedup_seconds": _speedup(timed, "speedup") if timed else None,
            "diff_vs_bop": (interval(diff, scale=100) if diff and diff.get("paired")
                            else None),
        })
    return rows


CLAIMS = (
    ("speedup_epochs", "speed-up vs Adam, epochs to target", PAPER_SPEEDUP, 1.0),
    ("speedup_seconds", "speed-up vs Adam, seconds to target", PAPER_SPEEDUP, 1.0),
    ("diff_vs_bop", "final test accuracy − Bop (points)", PAPER_GAIN_POINTS, 0.0),
)


def claims(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """BAMSProd's three measures with their intervals and verdicts (one entry per claim)."""
    bams = next((r for r in rows if r["optimizer"] == "bamsprod"), None)
    out = []
    for key, label, claimed, null in CLAIMS:
        ci = bams.get(key) if bams else None
        out.append({"key": key, "label": label, "claimed": claimed, "null": null, "ci": ci,
                    **verdict(ci, claimed, null)})
    return out


def plateau(adam_group: Mapping[str, Any] | None, budget: int | None) -> dict[str, Any]:
    """Did Adam's mean validation accuracy plateau? The rise of its best-so-far over the last
    third of the budget (at least one epoch), in points, against :data:`PLATEAU_POINTS`."""
    series = (adam_group or {}).get("series") or {}
    pts = [(e, v) for e, v in zip(series.get("epoch", []),
                                  (series.get("mean") or {}).get("val_acc", []), strict=False)
           if ok(v) and (budget is None or e <= budget)]
    if len(pts) < 2:
        return {"plateaued": None, "rise_points": None, "last_epochs": None,
                "why": "fewer than 2 epochs of validation accuracy: cannot tell"}
    k = max(1, math.ceil(len(pts) / 3))
    before = max(v for _, v in pts[:-k])
    rise = 100 * (max(v for _, v in pts) - before)
    flat = rise < PLATEAU_POINTS
    return {"plateaued": flat, "rise_points": rise, "last_epochs": k,
            "why": f"best mean val acc rose {rise:+.2f} points over the last {k} epoch(s) "
                   f"({'<' if flat else '>='} {PLATEAU_POINTS} points)"}


# ---------------------------------------------------------------------------------- map


def map_cells(by_adam: Mapping[str, Any], by_bop: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One cell per BAMSProd (kappa, gamma) group of two compares grouped by
    ``optimizer,hparams.kappa,hparams.gamma`` (baseline Adam, and Bop at Adam's target)."""
    bop_groups = {g["key"]: g for g in by_bop.get("groups", [])}
    cells = []
    for g in by_adam.get("groups", []):
        f = g.get("fields") or {}
        if f.get("optimizer") != "bamsprod":
            continue
        diff = (bop_groups.get(g["key"]) or {}).get("final_diff")
        speed = _speedup(g, "speedup")
        gain = interval(diff, scale=100) if diff else None
        meets = (bool(speed) and ok(speed["mean"]) and speed["mean"] >= PAPER_SPEEDUP
                 and bool(gain) and gain["mean"] >= PAPER_GAIN_POINTS)
        cells.append({
            "kappa": f.get("hparams.kappa"), "gamma": f.get("hparams.gamma"), "n": g["n"],
            "final": dict(g["final"]),
            "to_target": {**{k: g["to_target"][k] for k in ("mean", "std", "reached")},
                          "n": g["n"]},
            "speedup_epochs": speed, "diff_vs_bop": gain, "meets_paper": meets,
        })
    return cells


def analyse(report: dict[str, Any]) -> dict[str, Any]:
    """Fill in what is derived from the stored compare answers: each task's rows, claims and
    plateau, and the map's cells (so a saved report re-renders from its JSON alone)."""
    for task in report["tasks"]:
        compares = task.get("compare") or {}
        task["rows"] = task_rows(compares) if "adam" in compares else []
        task["claims"] = claims(task["rows"])
        adam = groups_by_optimizer(compares["adam"]).get("adam") if "adam" in compares else None
        task["plateau"] = plateau(adam, task.get("budget"))
    sens = report.get("sensitivity")
    if sens:
        compares = sens.get("compare") or {}
        sens["cells"] = map_cells(compares.get("adam") or {}, compares.get("bop") or {})
    return report


def slim_compare(result: Mapping[str, Any], keep_series: bool = False) -> dict[str, Any]:
    """A compare result without per-run series (and group series unless ``keep_series``)."""
    out = {k: v for k, v in result.items() if k != "runs"}
    out["runs"] = [{k: v for k, v in r.items() if k != "series"} for r in result.get("runs", [])]
    if not keep_series:
        out["groups"] = [{k: v for k, v in g.items() if k != "series"}
                         for g in result.get("groups", [])]
    return out


def device_of(run: Mapping[str, Any]) -> str:
    """The device a run trained on: its stored device without the optimizer path
    (``cuda (NVIDIA H100 80GB HBM3) · compiled`` -> ``cuda (NVIDIA H100 80GB HBM3)``)."""
    return str(run.get("device") or "?").split(" · ")[0]


def compute_time(runs: Sequence[Mapping[str, Any]],
                 epoch_seconds: Mapping[int, float]) -> dict[str, Any]:
    """Run seconds (started to finished, summed) per device and in all, and the epochs' own
    seconds (training and evaluation, from the stored metrics) summed."""
    from datetime import datetime

    by_device: dict[str, float] = {}
    for r in runs:
        if r.get("started_at") and r.get("finished_at"):
            start = datetime.fromisoformat(str(r["started_at"]))
            end = datetime.fromisoformat(str(r["finished_at"]))
            dev = device_of(r)
            by_device[dev] = by_device.get(dev, 0.0) + (end - start).total_seconds()
    return {"runs": len(runs), "run_seconds": sum(by_device.values()),
            "run_seconds_by_device": by_device,
            "epoch_seconds": float(sum(epoch_seconds.values()))}
