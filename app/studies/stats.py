"""A study's numbers from its ``GET /api/compare`` answers (no HTTP, no torch).

- :func:`run_records`: one record per run from a compare answer: final and best test
  accuracy, time to the target in epochs and seconds, whether that time is censored (reached
  at the run's first evaluation) and the run's environment;
- :func:`task_rows` and :func:`claim_results`: per optimizer and per claim, the paired measures
  of :mod:`app.studies.paired` against the baselines, with verdicts;
- :func:`plateau`, :func:`map_cells`, :func:`study_profiles`;
- :func:`analyse`: all of it, from the records a report stores, so a saved report re-renders
  from its JSON alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import accumulate
from typing import Any

from bamsprod.app.studies import profiles, robustness
from bamsprod.app.studies.environment import device_of, env_key, summary
from bamsprod.app.studies.paired import interval, ok, paired_gain, paired_speedup, verdict
from bamsprod.app.studies.plan import ordered

# A plateau: the best mean validation accuracy rose less than this over the last third of the
# budget (at least one epoch).
PLATEAU_POINTS = 0.5
# Compare's per-run flag: the target was reached at the run's first evaluation.
FIRST_EVAL_KEY = "reached_at_first_eval"


# ------------------------------------------------------------------------- per-run values


def run_records(answer: Mapping[str, Any], runs: Mapping[int, Mapping[str, Any]],
                test_metric: str = "test_acc") -> list[dict[str, Any]]:
    """One record per run of a compare answer given ``include=runs``: its final and best
    ``test_metric`` within the budget, its horizon (last epoch and training seconds within the
    budget), its time to the answer's target in epochs and seconds (compare's own per-run
    values where it gives them, interpolated between evaluations; else the first epoch at or
    above the target) and ``first``: reached at its first evaluation (the true crossing may
    be earlier). ``runs``: the runs as ``GET /api/runs`` lists them (state, environment)."""
    target, budget, metric = answer.get("target"), answer.get("budget"), answer["metric"]
    out = []
    for entry in answer.get("runs", []):
        s = entry.get("series") or {}
        epochs = list(s.get("epoch") or [])
        keep = [i for i, e in enumerate(epochs) if budget is None or e <= budget]
        elapsed = list(accumulate(float(v or 0.0) for v in s.get("seconds") or []))
        tests = [s.get(test_metric, [None] * len(epochs))[i] for i in keep]
        finite = [v for v in tests if ok(v)]
        run = runs.get(entry["id"], {})
        record: dict[str, Any] = {
            "id": entry["id"], "optimizer": entry.get("optimizer"), "seed": entry.get("seed"),
            "state": run.get("state", entry.get("state")),
            "hparams": (run.get("config") or {}).get("hparams", {}),
            "final": float(tests[-1]) if tests and ok(tests[-1]) else None,
            "best": max(finite) if finite else None,
            "horizon_epochs": float(epochs[keep[-1]]) if keep else None,
            "horizon_seconds": elapsed[keep[-1]] if keep and len(elapsed) > keep[-1] else None,
            "environment": env_key(run) if run else None,
        }
        if "to_target" in entry:
            record["to_target"] = entry.get("to_target")
            record["to_target_seconds"] = entry.get("to_target_seconds")
            record["first"] = bool(entry.get(FIRST_EVAL_KEY)) and entry.get("to_target") is not None
        else:
            values = s.get(metric) or []
            hit = next((i for i in keep if target is not None and i < len(values)
                        and ok(values[i]) and values[i] >= target), None)
            record["to_target"] = float(epochs[hit]) if hit is not None else None
            record["to_target_seconds"] = (elapsed[hit] if hit is not None
                                           and hit < len(elapsed) else None)
            record["first"] = hit == 0
        out.append(record)
    return out


def _time_stat(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    times = [r.get(key) for r in records]
    reached = [float(t) for t in times if t is not None]
    st = interval(reached)
    median = profiles.median_time(times)
    return {"mean": st["mean"], "std": st["std"], "reached": len(reached), "n": len(records),
            "first": sum(1 for r in records if r.get("first") and r.get(key) is not None),
            "median": median if math.isfinite(median) else None}


def _acc_stat(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    st = interval([r.get(key) for r in records])
    return {"mean": st["mean"], "std": st["std"], "n": st["n"]}


def _envs(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({r["environment"] for r in records if r.get("environment")})


def _seconds_speedup(subject: Sequence[Mapping[str, Any]],
                     baseline: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    envs = _envs([*subject, *baseline])
    if len(envs) > 1:
        return {"mean": None, "n": 0, "paired": True, "mixed": envs}
    return paired_speedup(subject, baseline, "seconds")


# --------------------------------------------------------------------------------- rows


def by_optimizer(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r["optimizer"]), []).append(r)
    return out


def task_rows(task: Mapping[str, Any], baselines: Mapping[str, Sequence[str]]
              ) -> list[dict[str, Any]]:
    """One row per optimizer of a task: accuracies, times to target, and the paired measures
    against each baseline (``speed``: speed-ups in epochs and seconds; ``gain``: points)."""
    runs = by_optimizer(task.get("runs", []))
    mixed = len(_envs(task.get("runs", []))) > 1
    chosen = {tu["optimizer"]: tu.get("chosen") or {} for tu in task.get("tuning", [])}
    rows = []
    for opt in ordered(list(runs)):
        mine = runs[opt]
        row: dict[str, Any] = {
            "optimizer": opt, "n": len(mine), "lr": chosen.get(opt, {}).get("lr"),
            "final": _acc_stat(mine, "final"), "best": _acc_stat(mine, "best"),
            "to_target": _time_stat(mine, "to_target"),
            "to_target_seconds": _time_stat(mine, "to_target_seconds"),
            "seconds_mixed": mixed,
            "speedup_epochs": {}, "speedup_seconds": {}, "gain": {},
        }
        for b in baselines.get("speed", []):
            if b in runs:
                row["speedup_epochs"][b] = paired_speedup(mine, runs[b], "epochs")
                row["speedup_seconds"][b] = _seconds_speedup(mine, runs[b])
        for b in baselines.get("gain", []):
            if b in runs:
                row["gain"][b] = paired_gain(mine, runs[b])
        rows.append(row)
    return rows


def claim_results(task: Mapping[str, Any], claims: Sequence[Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Each claim on one task: its interval and verdict."""
    runs = by_optimizer(task.get("runs", []))
    out = []
    for c in claims:
        subject, base = runs.get(c["subject"], []), runs.get(c["baseline"], [])
        if c["measure"] == "gain":
            ci = paired_gain(subject, base)
        elif c["measure"] == "speedup_seconds":
            ci = _seconds_speedup(subject, base)
        else:
            ci = paired_speedup(subject, base, "epochs")
        out.append({**c, "ci": ci, **verdict(ci, c["claimed"], c["null"])})
    return out


def plateau(group: Mapping[str, Any] | None, budget: int | None) -> dict[str, Any]:
    """Did the baseline's mean validation accuracy plateau? The rise of its best-so-far over
    the last third of the budget (at least one epoch), in points, against
    :data:`PLATEAU_POINTS`."""
    series = (group or {}).get("series") or {}
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


def group_of(answer: Mapping[str, Any] | None, optimizer: str) -> Mapping[str, Any] | None:
    """The group of ``optimizer`` in a compare answer grouped by optimizer."""
    for g in (answer or {}).get("groups", []):
        if (g.get("fields") or {}).get("optimizer") == optimizer:
            return g
    return None


# ---------------------------------------------------------------------------------- map


def map_cells(sens: Mapping[str, Any], task: Mapping[str, Any],
              claims: Sequence[Mapping[str, Any]], speed_base: str,
              gain_base: str | None) -> list[dict[str, Any]]:
    """One cell per (kappa, gamma) of the map: final accuracy, time to the task's target, and
    paired against the task's tuned baselines (seed k with seed k): the speed-up over
    ``speed_base`` and the gain over ``gain_base``; ``meets``: both means reach the first
    speed-up and accuracy claims of the map's optimizer (None without such claims)."""
    base = by_optimizer(task.get("runs", []))
    speed_claim = next((c for c in claims if c["subject"] == sens["optimizer"]
                        and c["measure"] == "speedup_epochs"), None)
    gain_claim = next((c for c in claims if c["subject"] == sens["optimizer"]
                       and c["measure"] == "gain"), None)
    cells: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in sens.get("runs", []):
        h = r.get("hparams") or {}
        cells.setdefault((h.get("kappa"), h.get("gamma")), []).append(r)
    out = []
    for (kappa, gamma), mine in cells.items():
        speed = paired_speedup(mine, base.get(speed_base, []), "epochs")
        gain = paired_gain(mine, base.get(gain_base, [])) if gain_base else None
        meets = None
        if speed_claim or gain_claim:
            meets = ((not speed_claim or (speed is not None and ok(speed.get("mean"))
                                          and speed["mean"] >= speed_claim["claimed"]))
                     and (not gain_claim or (gain is not None and ok(gain.get("mean"))
                                             and gain["mean"] >= gain_claim["claimed"])))
        out.append({"kappa": kappa, "gamma": gamma, "n": len(mine),
                    "final": _acc_stat(mine, "final"),
                    "to_target": _time_stat(mine, "to_target"),
                    "speedup_epochs": speed, "gain": gain, "meets": meets})
    return out


# ----------------------------------------------------------------------------- analysis


def study_profiles(tasks: Sequence[Mapping[str, Any]], optimizers: Sequence[str]
                   ) -> dict[str, Any]:
    """Performance profiles in epochs and in seconds over the tasks' stage-2 runs; a task whose
    runs span several environments is left out of the seconds profile."""
    epochs: dict[str, dict[str, float]] = {}
    seconds: dict[str, dict[str, float]] = {}
    left_out: dict[str, str] = {}
    for t in tasks:
        runs = by_optimizer(t.get("runs", []))
        epochs[t["key"]] = {o: profiles.median_time(r.get("to_target") for r in runs.get(o, []))
                            for o in optimizers}
        envs = _envs(t.get("runs", []))
        if len(envs) > 1:
            left_out[t["key"]] = f"its runs span {len(envs)} environments"
            continue
        seconds[t["key"]] = {o: profiles.median_time(r.get("to_target_seconds")
                                                     for r in runs.get(o, []))
                             for o in optimizers}
    return {"epochs": profiles.profile(epochs, optimizers),
            "seconds": profiles.profile(seconds, optimizers, left_out)}


def analyse(report: dict[str, Any]) -> dict[str, Any]:
    """Fill in what is derived from the stored records: each task's rows, claims, plateau and
    robustness, the map's cells, the profiles and the environments (so a saved report
    re-renders from its JSON alone)."""
    study = report["study"]
    claims = study.get("claims", [])
    names = [s["optimizer"] for s in study["searches"]]
    target_base = study["target"]["baseline"]
    baselines = {
        "speed": list(dict.fromkeys([target_base, *(c["baseline"] for c in claims
                                                    if c["kind"] == "speed")])),
        "gain": list(dict.fromkeys(c["baseline"] for c in claims if c["kind"] == "gain")),
    }
    report["baselines"] = baselines
    every: list[str] = []
    for task in report["tasks"]:
        task["rows"] = task_rows(task, baselines)
        task["claims"] = claim_results(task, claims)
        main = (task.get("compare") or {}).get("main")
        task["plateau"] = plateau(group_of(main, target_base), task.get("budget"))
        task["robustness"] = robustness.task_robustness(task.get("trials") or {})
        task["environments"] = _envs(task.get("runs", []))
        every += [r["environment"] for r in task.get("runs", []) if r.get("environment")]
    sens = report.get("sensitivity")
    if sens:
        task = next((t for t in report["tasks"] if t["key"] == sens["task"]), {})
        gain = baselines["gain"][0] if baselines["gain"] else None
        sens["cells"] = map_cells(sens, task, claims, target_base, gain)
        every += [r["environment"] for r in sens.get("runs", []) if r.get("environment")]
    report["profiles"] = study_profiles(report["tasks"], ordered(names))
    report["environments"] = summary(every)
    return report


def slim_compare(result: Mapping[str, Any], keep_series: bool = False) -> dict[str, Any]:
    """A compare result without per-run series and evaluation points (and group series unless
    ``keep_series``)."""
    out = {k: v for k, v in result.items() if k != "runs"}
    out["runs"] = [{k: v for k, v in r.items() if k not in ("series", "evals")}
                   for r in result.get("runs", [])]
    if not keep_series:
        out["groups"] = [{k: v for k, v in g.items() if k != "series"}
                         for g in result.get("groups", [])]
    return out


def compute_time(runs: Sequence[Mapping[str, Any]],
                 epoch_seconds: Mapping[int, float]) -> dict[str, Any]:
    """Run seconds (started to finished, summed) per device and in all, and the epochs' own
    seconds (from the stored metrics) summed."""
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
