"""``reproduction.md`` and the plan listing of ``--dry-run``: markdown from the report dict.

The report dict is what ``bamsprod reproduce`` writes as ``reproduction.json`` (see
``app.commands.reproduce_cmds``); accuracies in it are fractions, differences against Bop
are in points.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bamsprod.app.studies.cost import GPU_PROCESS_START, RUN_OVERHEAD
from bamsprod.app.studies.plan import PAPER_GAIN_POINTS, PAPER_SPEEDUP
from bamsprod.app.studies.stats import PLATEAU_POINTS, VERDICT_RULE, ok

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
    """``mean [lo, hi] (n=k)``, the 95% t-interval over paired seeds; ``(ratio of means)``
    where seeds do not pair; ``n/a`` without a value."""
    if not ci or not ok(ci.get("mean")):
        return "n/a"
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(ci["mean"], spec) + suffix
    if not ci.get("paired"):
        return text + " (ratio of means)"
    if ok(ci.get("lo")) and ok(ci.get("hi")):
        text += f" [{format(ci['lo'], spec)}, {format(ci['hi'], spec)}]"
    return text + f" (n={ci.get('n')})"


def fmt_mean(st: Mapping[str, Any] | None, sign: bool = False, suffix: str = "") -> str:
    """The mean alone (2 decimals), ``n/a`` without one."""
    if not st or not ok(st.get("mean")):
        return "n/a"
    return format(st["mean"], f"{'+' if sign else ''}.2f") + suffix


def fmt_reach(to: Mapping[str, Any], digits: int = 1, suffix: str = "") -> str:
    reached, n = to.get("reached", 0), to.get("n", 0)
    if not reached:
        return f"not reached (0/{n})"
    return f"{fmt_pm(to, digits=digits, suffix=suffix)} ({reached}/{n})"


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


def plan_markdown(plan: Mapping[str, Any], cost: Mapping[str, Any]) -> list[str]:
    """The plan (tasks, searches, map, what was cut) and its cost, as markdown lines."""
    out = [f"Plan `{plan['name']}`: {plan['purpose']}.", "", "Tasks (stage 2 on seeds "
           f"{', '.join(str(s) for s in plan['seeds'])}; validation split 10%, batch 128, "
           "no schedule):", ""]
    out += table(
        ("task", "model", "model_args", "data set", "train / test examples", "stage-1 epochs",
         "epochs (stage 2)"),
        [(t["key"], t["model"], f"`{json.dumps(t['model_args'], sort_keys=True)}`", t["dataset"],
          f"{t['train_subset'] or 'all'} / {t['test_subset'] or 'all'}", t["stage1_epochs"],
          t["epochs"]) for t in plan["tasks"]])
    out += ["", f"Tuning (each optimizer its own tuned sweep per task; {plan['n_lr']} "
            "log-spaced learning rates; best by validation accuracy):", ""]
    out += table(
        ("optimizer", "lr grid", "also searched", "why"),
        [(name(s["optimizer"]), ", ".join(fmt_num(x) for x in s["grid"]),
          "; ".join(f"{k} ∈ {{{', '.join(fmt_num(v) for v in vs)}}}"
                    for k, vs in s["hparams"].items()) or "—", s["source"])
         for s in plan["searches"]])
    m = plan.get("sensitivity")
    if m:
        out += ["", f"Sensitivity map: BAMSProd on `{m['task']}`, κ ∈ "
                f"{{{', '.join(fmt_num(k) for k in m['kappas'])}}} × γ ∈ "
                f"{{{', '.join(fmt_num(g) for g in m['gammas'])}}} at lr {fmt_num(m['lr'])}, "
                f"seed(s) {', '.join(str(s) for s in m['seeds'])}."]
    out += ["", "Cost (estimated before running; stage 1 at full length):", ""]
    rows = [(p["part"], f"{p['runs']} ({p['stage1_runs']} + {p['stage2_runs']})", p["epochs"],
             f"{p['gpu_epoch_seconds']:.2f}{'' if p['gpu_measured'] else '*'}",
             f"{p['gpu_run_seconds']:.0f}",
             f"{p['cpu_epoch_seconds']:.2f}{'' if p['cpu_measured'] else '*'}",
             fmt_seconds(p["cpu_seconds"])) for p in cost["parts"]]
    rows.append(("**total**", f"**{cost['runs']}**", f"**{cost['epochs']}**", "",
                 f"**{cost['gpu_run_seconds']:.0f}**", "",
                 f"**{fmt_seconds(cost['cpu_seconds'])}**"))
    out += table(("part", "runs (stage 1 + 2)", "epochs", "GPU s/epoch", "GPU run-seconds",
                  "CPU s/epoch", "CPU time"), rows)
    out += ["", f"- GPU: about **{fmt_seconds(cost['gpu_wall_seconds'])}** of one "
            f"H100/H200-class card with {cost['gpu_pack']} runs sharing it (run-seconds / "
            f"{cost['gpu_pack']}; run-seconds include {RUN_OVERHEAD['gpu']:g} s per run and "
            f"{GPU_PROCESS_START:g} s per worker process).",
            f"- CPU: about **{fmt_seconds(cost['cpu_seconds'])}** with one worker and one torch "
            f"thread on this project's 2-core machine ({RUN_OVERHEAD['cpu']:g} s per run).",
            "- Per-epoch times are measured references scaled by examples seen (see "
            "`app/studies/cost.py`); * marks a config without its own reference, which takes "
            "its model's full-width one."]
    if plan.get("cuts"):
        out += ["", "Cut to fit:", ""] + [f"- {c}" for c in plan["cuts"]]
    return out


# -------------------------------------------------------------------------------- report


def verdict_rows(tasks: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for t in tasks:
        for c in t["claims"]:
            unit = "×" if c["key"].startswith("speedup") else ""
            paper = (f"≈ {c['claimed']:g}×" if unit else f"≈ +{c['claimed']:g}")
            rows.append((t["title"], c["label"], paper,
                         fmt_ci(c["ci"], sign=not unit, suffix=unit),
                         f"**{c['verdict']}**: {c['why']}"))
    return rows


def _claim_summary(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for i, claim in enumerate(tasks[0]["claims"] if tasks else []):
        got = [t["claims"][i]["verdict"] for t in tasks]
        counts = ", ".join(f"{v} on {got.count(v)}" for v in
                           ("holds", "does not hold", "inconclusive") if got.count(v))
        lines.append(f"- {claim['label']}: {counts} of {len(tasks)} task(s).")
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
        rows.append((name(tu["optimizer"]), searched, choice, value,
                     f"{len(tu['stage1_run_ids'])} ({states})", len(tu["stage2_run_ids"])))
    return rows


def results_rows(task: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    chosen = {tu["optimizer"]: tu.get("chosen") or {} for tu in task.get("tuning", [])}
    return [(name(r["optimizer"]), fmt_num(chosen.get(r["optimizer"], {}).get("lr", "?")),
             fmt_pm(r["final"], 100), fmt_pm(r["best"], 100), fmt_reach(r["to_target"]),
             fmt_reach(r["to_target_seconds"], suffix=" s"),
             fmt_ci(r["speedup_epochs"], suffix="×"), fmt_ci(r["speedup_seconds"], suffix="×"),
             fmt_ci(r["diff_vs_bop"], sign=True)) for r in task["rows"]]


RESULTS_HEAD = ("optimizer", "lr", "final test acc (%)", "best test acc (%)",
                "epochs to target (reached)", "seconds to target (reached)",
                "speed-up vs Adam, epochs [95% CI]", "speed-up vs Adam, seconds [95% CI]",
                "final − Bop, points [95% CI]")


def map_markdown(sens: Mapping[str, Any]) -> list[str]:
    """The kappa x gamma map: final accuracy (and − Bop) and epochs to target (and speed-up),
    kappa down, gamma across."""
    cells = {(c["kappa"], c["gamma"]): c for c in sens.get("cells", [])}
    kappas, gammas = sens["kappas"], sens["gammas"]

    def grid(fmt) -> list[str]:  # type: ignore[no-untyped-def]
        head = ("κ \\ γ", *(fmt_num(g) for g in gammas))
        rows = [(fmt_num(k), *(fmt(cells[(k, g)]) if (k, g) in cells else "—" for g in gammas))
                for k in kappas]
        return table(head, rows)

    target = sens.get("target")
    met = [f"κ {fmt_num(c['kappa'])}, γ {fmt_num(c['gamma'])}" for c in cells.values()
           if c["meets_paper"]]
    return [
        f"BAMSProd at lr {fmt_num(sens['lr'])} on `{sens['task']}`, seed(s) "
        f"{', '.join(str(s) for s in sens['seeds'])}; target "
        + (f"{100 * target:.2f}%" if ok(target) else "n/a")
        + " (the task's, from Adam's tuned runs). Speed-up and − Bop pair each cell's seeds "
        "with the tuned Adam's and Bop's runs of the same seed.", "",
        "Final test accuracy, % (final − Bop, points):", "",
        *grid(lambda c: f"{fmt_pm(c['final'], 100)} ({fmt_mean(c['diff_vs_bop'], sign=True)})"),
        "", "Epochs to target (speed-up vs Adam):", "",
        *grid(lambda c: f"{fmt_reach(c['to_target'])} "
                        f"({fmt_mean(c['speedup_epochs'], suffix='×')})"),
        "", "Cells where both point estimates reach the paper's numbers (speed-up ≥ "
        f"{PAPER_SPEEDUP}× and ≥ +{PAPER_GAIN_POINTS} points over Bop; means over the map's "
        f"seeds, not a test): {'; '.join(met) if met else 'none'}.",
    ]


def header_lines(report: Mapping[str, Any]) -> list[str]:
    m, comp, cost = report.get("machine", {}), report.get("compute") or {}, report["cost"]
    devices = ", ".join(report.get("devices") or []) or "unknown"
    by_dev = ", ".join(f"{d} {fmt_seconds(s)}" for d, s in
                       sorted((comp.get("run_seconds_by_device") or {}).items()))
    return [
        f"- date: {report['created']}",
        f"- device: runs trained on **{devices}** (workers: "
        f"{', '.join(report.get('workers') or []) or 'unknown'}; service: "
        f"{report.get('service', {}).get('mode')})",
        f"- this machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('memory_gib', '?')} GiB; torch {m.get('torch', '?')}",
        f"- compute: **{fmt_seconds(comp.get('run_seconds'))}** summed over "
        f"{comp.get('runs', '?')} runs, started to finished ({by_dev or 'n/a'}); the epochs "
        f"themselves {fmt_seconds(comp.get('epoch_seconds'))}; wall time "
        f"{fmt_seconds(report.get('wall_seconds'))}",
        f"- estimated beforehand: {cost['runs']} runs, {cost['epochs']} epochs; GPU "
        f"{fmt_seconds(cost['gpu_wall_seconds'])} ({cost['gpu_pack']} per card), CPU "
        f"{fmt_seconds(cost['cpu_seconds'])}",
        f"- paper: Liu et al., arXiv 2009.13799 — about {PAPER_SPEEDUP}× faster convergence, "
        f"about +{PAPER_GAIN_POINTS} points over Bop",
    ]


def markdown_report(report: Mapping[str, Any]) -> str:
    """``reproduction.md``: header, verdicts, each task's tuning and results, the map, the
    plan and its cost."""
    plan, tasks = report["plan"], report["tasks"]
    out = [f"# BAMSProd reproduction: plan `{plan['name']}`", "", *header_lines(report), ""]
    if report.get("note"):
        out += [report["note"], ""]
    out += ["## Verdicts", "", *table(("task", "claim", "paper", "measured [95% CI]",
                                       "verdict"), verdict_rows(tasks)),
            "", f"Rule: {VERDICT_RULE}", "", *_claim_summary(tasks), "",
            "The target is 99% of the best per-epoch mean test accuracy of the tuned Adam within "
            "the budget. Speed-up = Adam's epochs (or seconds) to the target / BAMSProd's, per "
            "seed; a seed where either never reaches it is left out of the pairs. Seconds "
            "compare runs on the same device only.", ""]
    for t in tasks:
        target, pl = t.get("target"), t.get("plateau") or {}
        states = ", ".join(f"{k} {v}" for k, v in sorted(t.get("states", {}).items()))
        flat = {True: "plateaued", False: "**still rising**", None: "unknown"}[pl.get("plateaued")]
        out += [f"## {t['title']}", "",
                (f"Target {100 * target:.2f}% test accuracy" if ok(target) else "Target n/a")
                + f", budget {t.get('budget')} epochs; all runs: {states}.",
                f"Adam's validation accuracy: {flat} ({pl.get('why', 'n/a')}; rule: under "
                f"{PLATEAU_POINTS} points over the last third of the budget).", "",
                "Tuning (stage 1 on seed 0; the value is the chosen run's best val acc, %; "
                "\"grid edge\": the best rate was the lowest or highest tried):", "",
                *table(("optimizer", "searched", "chosen", "val acc", "stage-1 runs",
                        "stage-2 runs"), _tuning_rows(t)),
                "", "Stage 2 (the chosen setting on every seed):", "",
                *table(RESULTS_HEAD, results_rows(t)), ""]
    if report.get("sensitivity"):
        out += ["## BAMSProd sensitivity: κ × γ", "", *map_markdown(report["sensitivity"]), ""]
    out += ["## Plan and cost", "", *plan_markdown(plan, report["cost"]), "",
            "Every run's stored config is in the JSON beside this file and in the service "
            "(`GET /api/runs/{id}`).", ""]
    return "\n".join(out)
