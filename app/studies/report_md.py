"""The study report as markdown, from the report dict.

The report dict is what ``bamsprod study run`` writes as JSON (see :mod:`app.studies.runner`);
accuracies in it are fractions, accuracy gains are in points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bamsprod.app.studies.claims import LABELS
from bamsprod.app.studies.fmt import (
    fmt_choice,
    fmt_ci,
    fmt_mean,
    fmt_num,
    fmt_pm,
    fmt_reach,
    fmt_seconds,
    name,
    table,
)
from bamsprod.app.studies.listing import plan_markdown, target_text
from bamsprod.app.studies.paired import MIN_PAIRS, VERDICT_RULE, ok
from bamsprod.app.studies.stats import PLATEAU_POINTS

# -------------------------------------------------------------------------------- report


def _claim_label(c: Mapping[str, Any]) -> str:
    return f"{name(c['subject'])}: " + LABELS[c["measure"]].format(b=name(c["baseline"]))


def _claimed(c: Mapping[str, Any]) -> str:
    return f"≥ {c['claimed']:g}×" if c["kind"] == "speed" else f"≥ {c['claimed']:+g}"


def verdict_rows(tasks: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for t in tasks:
        for c in t["claims"]:
            speed = c["kind"] == "speed"
            rows.append((t["title"], _claim_label(c), _claimed(c),
                         fmt_ci(c["ci"], sign=not speed, suffix="×" if speed else ""),
                         f"**{c['verdict']}**: {c['why']}"))
    return rows


def _claim_summary(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for i, claim in enumerate(tasks[0]["claims"] if tasks else []):
        got = [t["claims"][i]["verdict"] for t in tasks]
        counts = ", ".join(f"{v} on {got.count(v)}" for v in
                           ("holds", "does not hold", "inconclusive") if got.count(v))
        lines.append(f"- {_claim_label(claim)}: {counts} of {len(tasks)} task(s).")
    return lines


def _tuning_rows(task: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for tu in task.get("tuning", []):
        searched = "; ".join(f"{k.removeprefix('hparams.')}: "
                             f"{', '.join(fmt_num(v) for v in vs)}"
                             for k, vs in tu["searched"].items())
        states = ", ".join(f"{k} {v}" for k, v in sorted(tu.get("stage1_states", {}).items()))
        value = f"{100 * tu['value']:.2f}" if ok(tu.get("value")) else "n/a"
        choice = fmt_choice(tu.get("chosen"))
        grid = tu["searched"].get("lr", [])
        if len(grid) > 2 and (tu.get("chosen") or {}).get("lr") in (min(grid), max(grid)):
            choice += " (grid edge)"
        if not tu.get("tuned", True):
            value, choice = "—", choice + " (fixed)"
        stage1 = f"{len(tu['stage1_run_ids'])} ({states})" if tu["stage1_run_ids"] else "0"
        rows.append((name(tu["optimizer"]), searched, choice, value, stage1,
                     len(tu["stage2_run_ids"])))
    return rows


def results_head(baselines: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    head = ["optimizer", "lr", "final test acc (%)", "best test acc (%)",
            "epochs to target (reached)", "seconds to target (reached)"]
    for b in baselines.get("speed", []):
        head += [f"speed-up vs {name(b)}, epochs [95% CI]",
                 f"speed-up vs {name(b)}, seconds [95% CI]"]
    head += [f"final − {name(b)}, points [95% CI]" for b in baselines.get("gain", [])]
    return tuple(head)


def results_rows(task: Mapping[str, Any], baselines: Mapping[str, Sequence[str]]
                 ) -> list[tuple[Any, ...]]:
    rows = []
    for r in task["rows"]:
        seconds = ("not pooled" if r.get("seconds_mixed")
                   else fmt_reach(r["to_target_seconds"], digits=1, suffix=" s"))
        row = [name(r["optimizer"]), fmt_num(r["lr"]) if r.get("lr") is not None else "?",
               fmt_pm(r["final"], 100), fmt_pm(r["best"], 100), fmt_reach(r["to_target"]),
               seconds]
        me = r["optimizer"]
        for b in baselines.get("speed", []):
            row += (["—", "—"] if b == me else
                    [fmt_ci(r["speedup_epochs"].get(b), suffix="×"),
                     fmt_ci(r["speedup_seconds"].get(b), suffix="×")])
        row += ["—" if b == me else fmt_ci(r["gain"].get(b), sign=True)
                for b in baselines.get("gain", [])]
        rows.append(tuple(row))
    return rows


def robustness_lines(task: Mapping[str, Any]) -> list[str]:
    rob = task.get("robustness") or {}
    rows = rob.get("rows") or {}
    if not rows:
        return ["No tuned optimizer with stage-1 trials: no tuning curve."]

    def at(row: Mapping[str, Any], k: int) -> str:
        return f"{100 * row['curve'][k - 1]:.2f}"

    body = []
    for opt, row in rows.items():
        n = row["n"]
        mid = max(1, math.ceil(n / 2))
        body.append((name(opt), n, at(row, 1), f"{at(row, mid)} (k={mid})", at(row, n),
                     f"{row['spread_points']:+.2f}"))
    return [*table(("optimizer", "trials N", "E[best], k=1", "E[best], k≈N/2", "E[best], k=N",
                    "k=N − k=1 (points)"), body), "", luck_text(rob.get("luck"))]


def luck_text(luck: Mapping[str, Any] | None) -> str:
    """One sentence: how much of the winner's lead the tuning budget could account for."""
    if not luck:
        return "Fewer than two tuned optimizers: nothing to compare."
    win, second = name(luck["winner"]), name(luck["second"])
    verdict = ("the lead is smaller than what the tuning budget moves, so it may be tuning luck"
               if luck["luck"] else "the lead is larger than what the tuning budget moves")
    flip = (f"; with one trial each, {name(luck['leader_at_1'])} would lead"
            if luck["leader_at_1"] != luck["winner"] else "")
    return (f"{win} leads {second} by {luck['gap_points']:.2f} points of expected best "
            f"validation accuracy at full budget (N = {luck['n']} trials); its own expected "
            f"best rises {luck['spread_points']:.2f} points from 1 to N trials: "
            f"{verdict}{flip}.")


def map_markdown(sens: Mapping[str, Any], baselines: Mapping[str, Sequence[str]]) -> list[str]:
    """The kappa x gamma map: final accuracy (and − the gain baseline) and epochs to target
    (and speed-up), kappa down, gamma across."""
    cells = {(c["kappa"], c["gamma"]): c for c in sens.get("cells", [])}
    kappas, gammas = sens["kappas"], sens["gammas"]
    speed_b = baselines["speed"][0] if baselines.get("speed") else None
    gain_b = baselines["gain"][0] if baselines.get("gain") else None

    def grid(fmt: Callable[[Mapping[str, Any]], str]) -> list[str]:
        head = ("κ \\ γ", *(fmt_num(g) for g in gammas))
        rows = [(fmt_num(k), *(fmt(cells[(k, g)]) if (k, g) in cells else "—" for g in gammas))
                for k in kappas]
        return table(head, rows)

    target = sens.get("target")
    met = [f"κ {fmt_num(c['kappa'])}, γ {fmt_num(c['gamma'])}" for c in cells.values()
           if c.get("meets")]
    gain_text = f" (final − {name(gain_b)}, points)" if gain_b else ""
    out = [
        f"{name(sens['optimizer'])} at lr {fmt_num(sens['lr'])} on `{sens['task']}`, seed(s) "
        f"{', '.join(str(s) for s in sens['seeds'])}; target "
        + (f"{100 * target:.2f}%" if ok(target) else "n/a")
        + f" (the task's). Speed-up{' and gain' if gain_b else ''} pair each cell's seeds with "
        "the tuned baselines' runs of the same seed.", "",
        f"Final test accuracy, %{gain_text}:", "",
        *grid(lambda c: fmt_pm(c["final"], 100)
              + (f" ({fmt_mean(c['gain'], sign=True)})" if gain_b else "")),
        "", f"Epochs to target (speed-up vs {name(speed_b) if speed_b else '?'}):", "",
        *grid(lambda c: f"{fmt_reach(c['to_target'])} "
                        f"({fmt_mean(c['speedup_epochs'], suffix='×')})"),
    ]
    if any(c.get("meets") is not None for c in cells.values()):
        out += ["", "Cells where the point estimates reach the claimed values (means over the "
                f"map's seeds, not a test): {'; '.join(met) if met else 'none'}."]
    return out


def environment_lines(report: Mapping[str, Any]) -> list[str]:
    envs = report.get("environments") or []
    if not envs:
        return ["- environment: unknown"]
    head = "environment" if len(envs) == 1 else f"environments ({len(envs)}: seconds are " \
                                               "compared only within one)"
    return [f"- {head}: " + "; ".join(f"**{e['environment']}** ({e['runs']} stage-2 and map "
                                      "runs)" for e in envs)]


def header_lines(report: Mapping[str, Any]) -> list[str]:
    m, comp, cost = report.get("machine", {}), report.get("compute") or {}, report["cost"]
    by_dev = ", ".join(f"{d} {fmt_seconds(s)}" for d, s in
                       sorted((comp.get("run_seconds_by_device") or {}).items()))
    workers = cost.get("cpu_workers", 1)
    return [
        f"- date: {report['created']}",
        *environment_lines(report),
        f"- service: {report.get('service', {}).get('mode')} (workers: "
        f"{', '.join(report.get('worker_hosts') or []) or 'unknown'})",
        f"- this machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('memory_gib', '?')} GiB; torch {m.get('torch', '?')}",
        f"- compute: **{fmt_seconds(comp.get('run_seconds'))}** summed over "
        f"{comp.get('runs', '?')} runs, started to finished ({by_dev or 'n/a'}); the epochs "
        f"themselves {fmt_seconds(comp.get('epoch_seconds'))}; wall time "
        f"**{fmt_seconds(report.get('wall_seconds'))}**",
        f"- estimated beforehand: {cost['runs']} runs, {cost['epochs']} epochs; GPU "
        f"{fmt_seconds(cost['gpu_wall_seconds'])} ({cost['gpu_pack']} per card), CPU "
        f"{fmt_seconds(cost.get('cpu_wall_seconds', cost['cpu_seconds']))} ({workers} worker "
        f"process{'' if workers == 1 else 'es'})",
    ]


def profile_lines(report: Mapping[str, Any]) -> list[str]:
    prof = report.get("profiles") or {}
    ep, sec = prof.get("epochs") or {}, prof.get("seconds") or {}
    if not ep.get("n_tasks"):
        return ["No task: no profile."]
    opts = list(ep.get("scores", {}))

    def solved(p: Mapping[str, Any], o: str) -> str:
        return f"{p.get('solved', {}).get(o, 0)}/{p.get('n_tasks', 0)}"

    out = [f"Per task, each optimizer's time to the target is the median over its seeds (a run "
           "that never reached it counts as ∞), divided by the fastest optimizer's on that "
           f"task; ρ(τ) is the fraction of the {ep['n_tasks']} task(s) within τ times the "
           "fastest, and the score is the area under ρ over τ ∈ [1, 4] divided by 3, computed "
           "exactly (ρ is a step function): 1 is fastest everywhere, 0 never within 4×.", ""]
    out += table(("optimizer", "score, epochs", "tasks reached, epochs", "score, seconds",
                  "tasks reached, seconds"),
                 [(name(o), f"{ep['scores'][o]:.3f}", solved(ep, o),
                   f"{sec['scores'][o]:.3f}" if sec.get("n_tasks") else "n/a", solved(sec, o))
                  for o in opts])
    out += ["", "Ratios to the fastest, epochs (— : never reached):", ""]
    out += table(("task", *(name(o) for o in opts)),
                 [(t, *(f"{r:.2f}" if ok(r := ep["ratios"][t].get(o)) else "—" for o in opts))
                  for t in ep["tasks"]])
    for task, why in (sec.get("left_out") or {}).items():
        out += ["", f"Left out of the seconds profile: `{task}` ({why})."]
    return out


def markdown_report(report: Mapping[str, Any]) -> str:
    """The report: header, verdicts, profiles, each task's tuning, robustness and results,
    the map, the plan and its cost."""
    study, tasks, bases = report["study"], report["tasks"], report["baselines"]
    purpose = f": {study['purpose']}" if study.get("purpose") else ""
    out = [f"# Study `{study['name']}`{purpose}", "", *header_lines(report), ""]
    if report.get("note"):
        out += [report["note"], ""]
    out += ["## Verdicts", ""]
    if study.get("claims"):
        out += [*table(("task", "claim", "claimed", "measured [95% CI]", "verdict"),
                       verdict_rows(tasks)),
                "", f"Rule: {VERDICT_RULE}", "", *_claim_summary(tasks), ""]
    else:
        out += ["The study states no claims.", ""]
    out += [f"The target: {target_text(study)}. Time to target is interpolated between the two "
            "evaluations that straddle it (runs with one evaluation an epoch: between epochs); "
            "a run that reaches it at its first evaluation is censored (the crossing may be "
            "earlier) and one that never reaches it within the budget is ∞. Speed-up = the "
            f"baseline's time / the subject's, seed by seed; a verdict needs {MIN_PAIRS} "
            "measured pairs. Seconds are training seconds and compare runs of one environment "
            "only.", "",
            "## Performance profiles", "", *profile_lines(report), ""]
    for t in tasks:
        target, pl = t.get("target"), t.get("plateau") or {}
        states = ", ".join(f"{k} {v}" for k, v in sorted(t.get("states", {}).items()))
        flat = {True: "plateaued", False: "**still rising**", None: "unknown"}[pl.get("plateaued")]
        metric = t.get("metric") or study["target"]["metric"]
        envs = t.get("environments") or []
        out += [f"## {t['title']}", "",
                (f"Target {100 * target:.2f}% `{metric}`" if ok(target) else "Target n/a")
                + f", budget {t.get('budget')} epochs; all runs: {states}.",
                f"{name(study['target']['baseline'])}'s validation accuracy: {flat} "
                f"({pl.get('why', 'n/a')}; rule: under {PLATEAU_POINTS} points over the last "
                "third of the budget)."]
        if len(envs) > 1:
            out.append(f"Its runs span {len(envs)} environments ({'; '.join(envs)}): seconds "
                       "are not pooled.")
        out += ["", "Tuning (stage 1 on seed 0; the value is the chosen run's best val acc, %; "
                "\"grid edge\": the best rate was the lowest or highest tried):", "",
                *table(("optimizer", "searched", "chosen", "val acc", "stage-1 runs",
                        "stage-2 runs"), _tuning_rows(t)),
                "", "Tuning robustness (expected best validation accuracy, %, of k stage-1 "
                "trials drawn with replacement, exact closed form):", "",
                *robustness_lines(t),
                "", "Stage 2 (the chosen setting on every seed):", "",
                *table(results_head(bases), results_rows(t, bases)), ""]
    if report.get("sensitivity"):
        out += ["## Sensitivity: κ × γ", "", *map_markdown(report["sensitivity"], bases), ""]
    out += ["## Plan and cost", "", *plan_markdown(study, report["cost"]), "",
            "Every run's stored config is in the JSON beside this file and in the service "
            "(`GET /api/runs/{id}`).", ""]
    return "\n".join(out)
