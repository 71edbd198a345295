"""The study and its estimated cost as markdown: what ``study run --dry-run`` prints and the
report repeats at its end."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bamsprod.app.studies.cost import GPU_PROCESS_START, RUN_OVERHEAD
from bamsprod.app.studies.fmt import fmt_num, fmt_seconds, name, table


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
