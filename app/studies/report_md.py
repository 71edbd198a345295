"""The study report as markdown, and the plan listing of ``--dry-run``, from the report dict.

The report dict is what ``bamsprod study run`` writes as JSON (see :mod:`app.studies.runner`);
accuracies in it are fractions, accuracy gains are in points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bamsprod.app.studies.claims import LABELS
from bamsprod.app.studies.cost import GPU_PROCESS_START, RUN_OVERHEAD
from bamsprod.app.studies.stats import MIN_PAIRS, PLATEAU_POINTS, VERDICT_RULE, ok

NAMES = {
    "bamsprod": "BAMSProd", "adam": "Adam", "amsgrad": "AMSGrad", "adabound": "AdaBound",
    "amsbound": "AMSBound", "bop": "Bop", "sgd": "SGD-momentum",
}


def name(opt: str) -> str:
    return NAMES.get(opt, opt)


# ----------------------------------------------------------------------------- formatting


def fmt_pm(stat: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2,
           sign: bool = False, suffix: str = "") -> str:
    """``mean ± std`` (std left out when undefined); ``n/a`` when there is no mean."""
    if not stat or not ok(stat.get("mean")):
        return "n/a"
    text = format(stat["mean"] * scale, f"{'+' if sign else ''}.{digits}f") + suffix
    if ok(stat.get("std")):
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def fmt_ci(ci: Mapping[str, Any] | None, digits: int = 2, sign: bool = False,
           suffix: str = "") -> str:
    """``mean [lo, hi] (n=k)``, the 95% t-interval over measured paired seeds, with censored
    pairs counted; ``n/a`` without a value."""
    if not ci:
        return "n/a"
    if ci.get("mixed"):
        return f"not pooled ({len(ci['mixed'])} environments)"
    if not ok(ci.get("mean")):
        return "n/a" + _left_out(ci)
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(ci["mean"], spec) + suffix
    if not ci.get("paired", True):
        return text + " (unpaired)"
    if ok(ci.get("lo")) and ok(ci.get("hi")):
        text += f" [{format(ci['lo'], spec)}, {format(ci['hi'], spec)}]"
    return text + f" (n={ci.get('n')})" + _left_out(ci)


def _left_out(ci: Mapping[str, Any]) -> str:
    parts = []
    if ci.get("censored"):
        parts.append(f"{len(ci['censored'])} censored")
    if ci.get("neither"):
        parts.append(f"{len(ci['neither'])} neither reached")
    return f" ({', '.join(parts)})" if parts else ""


def fmt_mean(st: Mapping[str, Any] | None, sign: bool = False, suffix: str = "") -> str:
    """The mean alone (2 decimals), ``n/a`` without one."""
    if not st or not ok(st.get("mean")):
        return "n/a"
    return format(st["mean"], f"{'+' if sign else ''}.2f") + suffix


def fmt_reach(to: Mapping[str, Any], digits: int = 2, suffix: str = "") -> str:
    reached, n = to.get("reached", 0), to.get("n", 0)
    if not reached:
        return f"not reached (0/{n})"
    first = f", {to['first']} at first eval" if to.get("first") else ""
    return f"{fmt_pm(to, digits=digits, suffix=suffix)} ({reached}/{n}{first})"


def fmt_num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def fmt_seconds(s: Any) -> str:
    if not ok(s):
        return "n/a"
    s = float(s)
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def fmt_choice(chosen: Mapping[str, Any] | None) -> str:
    if not chosen:
        return "none (no stage-1 run succeeded)"
    return ", ".join(f"{k.removeprefix('hparams.')} {fmt_num(v)}" for k, v in chosen.items())


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


# ---------------------------------------------------------------------------------- plan


def target_text(study: Mapping[str, Any]) -> str:
    t = study["target"]
    return (f"{fmt_num(t['fraction'])} × the best per-evaluation mean `{t['metric']}` of the "
            f"tuned {name(t['baseline'])}'s stage-2 runs within the budget (a task's own "
            "`target` where it gives one)")


def plan_markdown(study: Mapping[str, Any], cost: Mapping[str, Any]) -> list[str]:
    """The study (tasks, optimizers, target, claims, map, what was cut) and its cost."""
    purpose = f": {study['purpose']}" if study.get("purpose") else ""
    out = [f"Study `{study['name']}`{purpose}.", ""]
    if study.get("source"):
        out += [f"From `{study['source']}`.", ""]
    out += [f"Tasks (stage 2 on seeds {', '.join(str(s) for s in study['seeds'])}; "
            "batch and validation split per task, no schedule):", ""]
    out += table(
        ("task", "model", "model_args", "data set", "train / test examples", "val split",
         "evals / epoch", "stage-1 epochs", "epochs (stage 2)"),
        [(t["key"], t["model"], f"`{json.dumps(t['model_args'], sort_keys=True)}`", t["dataset"],
          f"{t['train_subset'] or 'all'} / {t['test_subset'] or 'all'}", fmt_num(t["val_split"]),
          t.get("evals_per_epoch", 1), t["stage1_epochs"], t["epochs"])
         for t in study["tasks"]])
    out += ["", "Optimizers (a tuned one: one tuned sweep per task, stage 1 on seed 0, the best "
            "setting by validation accuracy on every seed; a fixed one: its setting on every "
            "seed):", ""]
    out += table(
        ("optimizer", "tuned", "lr grid", "also searched", "fixed", "why"),
        [(name(s["optimizer"]), "yes" if s["tuned"] else "no",
          ", ".join(fmt_num(x) for x in s["grid"]),
          "; ".join(f"{k} ∈ {{{', '.join(fmt_num(v) for v in vs)}}}"
                    for k, vs in s["hparams"].items()) or "—",
          ", ".join(f"{k} {fmt_num(v)}" for k, v in s["fixed"].items()) or "—",
          s.get("source") or "—")
         for s in study["searches"]])
    out += ["", f"Target: {target_text(study)}.", ""]
    if study.get("claims"):
        out += ["Claims:", ""] + [
            f"- \"{c['text']}\": {name(c['subject'])} vs {name(c['baseline'])}, "
            f"{c['measure']} ≥ {fmt_num(c['claimed'])} (no effect: {fmt_num(c['null'])})"
            for c in study["claims"]] + [""]
    m = study.get("sensitivity")
    if m:
        out += [f"Sensitivity map: {name(m['optimizer'])} on `{m['task']}`, κ ∈ "
                f"{{{', '.join(fmt_num(k) for k in m['kappas'])}}} × γ ∈ "
                f"{{{', '.join(fmt_num(g) for g in m['gammas'])}}} at lr {fmt_num(m['lr'])}, "
                f"seed(s) {', '.join(str(s) for s in m['seeds'])}.", ""]
    out += ["Cost (estimated before running; stage 1 at full length):", ""]
    rows = [(p["part"], f"{p['runs']} ({p['stage1_runs']} + {p['stage2_runs']})", p["epochs"],
             f"{p['gpu_epoch_seconds']:.2f}{'' if p['gpu_measured'] else '*'}",
             f"{p['gpu_run_seconds']:.0f}",
             f"{p['cpu_epoch_seconds']:.2f}{'' if p['cpu_measured'] else '*'}",
             fmt_seconds(p["cpu_seconds"])) for p in cost["parts"]]
    rows.append(("**total**", f"**{cost['runs']}**", f"**{cost['epochs']}**", "",
                 f"**{cost['gpu_run_seconds']:.0f}**", "",
                 f"**{fmt_seconds(cost['cpu_seconds'])}**"))
    out += table(("part", "runs (stage 1 + 2)", "epochs", "GPU s/epoch", "GPU run-seconds",
                  "CPU s/epoch", "CPU run time"), rows)
    workers, threads = cost.get("cpu_workers", 1), cost.get("cpu_threads", 1)
    gpu = (f"- GPU: about **{fmt_seconds(cost['gpu_wall_seconds'])}** of one H100/H200-class "
           f"card with {cost['gpu_pack']} runs sharing it (run-seconds / {cost['gpu_pack']}; "
           f"run-seconds include {RUN_OVERHEAD['gpu']:g} s per run and "
           f"{GPU_PROCESS_START:g} s per worker process).")
    cpu = (f"- CPU: about **{fmt_seconds(cost.get('cpu_wall_seconds', cost['cpu_seconds']))}** "
           f"wall time with {workers} worker process{'' if workers == 1 else 'es'} of "
           f"{threads or 'default'} torch thread{'' if threads == 1 else 's'} on this project's "
           f"2-core machine ({fmt_seconds(cost['cpu_seconds'])} of run time; "
           f"{RUN_OVERHEAD['cpu']:g} s per run"
           + ("" if workers == 1 else f"; {workers} processes at "
              f"{cost['assumptions']['cpu_parallel_efficiency']:.0%} each") + ").")
    out += [""] + ([cpu, gpu] if cost.get("device") == "cpu" else [gpu, cpu])
    out += ["- Per-epoch times are measured references scaled by examples seen, plus "
            "evaluations beyond one an epoch (see `app/studies/cost.py`); * marks a config "
            "without its own reference, which takes its model's full-width one."]
    if study.get("cuts"):
        out += ["", "Cut to fit:", ""] + [f"- {c}" for c in study["cuts"]]
    return out


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
