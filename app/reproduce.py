"""The paper reproduction: what to run, and the report built from ``GET /api/compare`` results.

Pure functions (no HTTP, no torch), so the builders are tested on hand-made compare data; the
``bamsprod reproduce`` command (``app.commands.reproduce_cmds``) submits the plan, follows it
and feeds the API's answers in here.

- :func:`make_plan`: tasks (model x data set x budget) x optimizer recipes x seeds.
- :func:`sweep_bodies`: the ``POST /api/sweeps`` bodies for one task: a single sweep with a grid
  over optimizers when every recipe is the optimizer's default learning rate and
  hyperparameters (the grid is a Cartesian product, so it cannot set a learning rate per
  optimizer), else one sweep per optimizer.
- :func:`task_rows`: one row per optimizer from three compare results of the same runs
  (baseline Adam, AMSGrad and Bop, all at Adam's target), the numbers the table shows.
- :func:`markdown_report` / :func:`html_report`: ``reproduction.md`` and ``reproduction.html``
  (Plotly, plotly.js inlined from the installed package, no CDN) from the report dict that is
  also written as ``reproduction.json``.

What is measured follows "Measuring the paper's two claims" in the spec: epochs to the target
(default 99% of the best per-epoch mean test accuracy Adam reaches in the budget), speed-up =
baseline epochs / optimizer epochs, and final test accuracy minus Bop's, mean +- std over seeds.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from core.spec import DEFAULT_LR, OPTIMIZERS

PAPER_SPEEDUP = 1.2
PAPER_GAIN_POINTS = 3.7
# The order of rows and colours in every table and chart.
OPTIMIZER_ORDER = ("bamsprod", "adam", "amsgrad", "amsbound", "bop", "sgd")
BASELINES = ("adam", "amsgrad", "bop")
TAG = "reproduce"
COLORS = {
    "bamsprod": "#d62728",
    "adam": "#1f77b4",
    "amsgrad": "#17becf",
    "amsbound": "#9467bd",
    "bop": "#2ca02c",
    "sgd": "#7f7f7f",
}
NAMES = {
    "bamsprod": "BAMSProd",
    "adam": "Adam",
    "amsgrad": "AMSGrad",
    "amsbound": "AMSBound",
    "bop": "Bop",
    "sgd": "SGD-momentum",
}


# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Recipe:
    """One optimizer's learning rate and hyperparameters, and where the values come from."""

    optimizer: str
    lr: float
    hparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def is_default(self) -> bool:
        """True when the service's defaults (``DEFAULT_LR``, the spec's hparams) give the same."""
        defaults = {k: h.default for k, h in OPTIMIZERS[self.optimizer].items()}
        same_hp = all(defaults.get(k) == v for k, v in self.hparams.items())
        return self.lr == DEFAULT_LR[self.optimizer] and same_hp


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "bamsprod", 1e-3, {"gamma": 1e-3, "kappa": 1.0},
        "the spec's defaults (Adam's lr 1e-3, AdaBound's gamma 1e-3, kappa 1)",
    ),
    Recipe(
        "adam", 1e-3, {},
        "Adam's default 1e-3; Adam on the latent weights is the BinaryNet recipe "
        "(Courbariaux/Hubara et al. 2016)",
    ),
    Recipe("amsgrad", 1e-3, {}, "as Adam (Reddi et al. 2018 keep Adam's settings)"),
    Recipe(
        "amsbound", 1e-3, {"final_lr": 0.1, "gamma": 1e-3},
        "Luo et al. 2019 defaults: lr 1e-3, final_lr 0.1, gamma 1e-3",
    ),
    Recipe(
        "bop", 1e-2, {"gamma": 1e-4, "threshold": 1e-8},
        "Helwegen et al. 2019 BinaryNet recipe: gamma 1e-4, tau 1e-8, Adam(0.01) for the "
        "real parameters (lr is that Adam's)",
    ),
    Recipe(
        "sgd", 1e-2, {"momentum": 0.9},
        "momentum 0.9, lr 0.01: the low end of the usual 0.01-0.1, see docs/reproduction.md",
    ),
)


@dataclass(frozen=True)
class Task:
    """One model x data set x budget; every optimizer and seed runs it unchanged."""

    key: str
    title: str
    model: str
    dataset: str
    model_args: dict[str, Any]
    train_subset: int | None
    test_subset: int | None
    epochs: int
    batch_size: int = 128

    def base_config(self) -> dict[str, Any]:
        """The run config fields the task fixes (no optimizer, seed or name)."""
        return {
            "model": self.model,
            "model_args": dict(self.model_args),
            "dataset": self.dataset,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "scheduler": "none",
            "device": "auto",
        }


FULL_TASKS: tuple[Task, ...] = (
    Task("mlp-mnist", "mlp on MNIST", "mlp", "mnist", {"width": 256, "depth": 2},
         20_000, 10_000, 10),
    Task("mlp-fashion", "mlp on Fashion-MNIST", "mlp", "fashion-mnist",
         {"width": 256, "depth": 2}, 20_000, 10_000, 10),
    Task("binarynet-fashion", "binarynet (width_mult 0.125) on Fashion-MNIST", "binarynet",
         "fashion-mnist", {"width_mult": 0.125}, 5_000, 2_000, 8),
)
QUICK_TASKS: tuple[Task, ...] = (
    Task("mlp-mnist", "mlp on MNIST", "mlp", "mnist", {"width": 64, "depth": 2}, 2_000, 1_000, 3),
    Task("mlp-fashion", "mlp on Fashion-MNIST", "mlp", "fashion-mnist",
         {"width": 64, "depth": 2}, 2_000, 1_000, 3),
    Task("binarynet-fashion", "binarynet (width_mult 0.0625) on Fashion-MNIST", "binarynet",
         "fashion-mnist", {"width_mult": 0.0625}, 500, 500, 2),
)


@dataclass(frozen=True)
class Plan:
    quick: bool
    tasks: tuple[Task, ...]
    recipes: tuple[Recipe, ...]
    seeds: tuple[int, ...]

    @property
    def n_runs(self) -> int:
        return len(self.tasks) * len(self.recipes) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "seeds": list(self.seeds),
            "tasks": [asdict(t) for t in self.tasks],
            "recipes": [asdict(r) for r in self.recipes],
        }


def make_plan(quick: bool = False, seeds: int | None = None, epochs: int | None = None) -> Plan:
    """Full (3 seeds) or quick (1 seed, small subsets) plan; ``epochs`` overrides every task's."""
    tasks = QUICK_TASKS if quick else FULL_TASKS
    if epochs is not None:
        tasks = tuple(replace(t, epochs=epochs) for t in tasks)
    n = seeds if seeds is not None else (1 if quick else 3)
    if n < 1:
        raise ValueError("seeds must be >= 1")
    return Plan(quick, tasks, RECIPES, tuple(range(n)))


def sweep_bodies(task: Task, recipes: Sequence[Recipe], seeds: Sequence[int],
                 tags: Sequence[str] = (TAG,)) -> list[dict[str, Any]]:
    """``POST /api/sweeps`` bodies for ``task``: one grid over optimizers when the defaults are
    the recipes, else one sweep per optimizer with its learning rate and hyperparameters."""
    base = {**task.base_config(), "tags": [*tags, task.key]}
    if all(r.is_default() for r in recipes):
        return [{
            "name": f"reproduce {task.key}",
            "base": base,
            "grid": {"optimizer": [r.optimizer for r in recipes]},
            "seeds": list(seeds),
        }]
    return [
        {
            "name": f"reproduce {task.key} {r.optimizer}",
            "base": {**base, "optimizer": r.optimizer, "lr": r.lr, "hparams": dict(r.hparams)},
            "grid": {},
            "seeds": list(seeds),
        }
        for r in recipes
    ]


def compare_params(run_ids: Sequence[int], sweep_ids: Sequence[int], baseline: str,
                   target: float | None = None) -> dict[str, Any]:
    """Query parameters for ``GET /api/compare`` over a task's runs, grouped by optimizer."""
    params: dict[str, Any] = {"group_by": "optimizer", "baseline": baseline}
    if len(sweep_ids) == 1:
        params["sweep"] = sweep_ids[0]
    else:
        params["runs"] = ",".join(str(i) for i in run_ids)
    if target is not None:
        params["target"] = target
    return params


# ------------------------------------------------------------------------------- measures


def _group_optimizer(group: Mapping[str, Any]) -> str:
    opt = (group.get("fields") or {}).get("optimizer")
    if opt is None:  # key "optimizer=adam"
        opt = str(group.get("key", "")).partition("=")[2]
    return str(opt)


def groups_by_optimizer(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A compare result's groups keyed by optimizer name."""
    return {_group_optimizer(g): g for g in result.get("groups", [])}


def _speedup(group: Mapping[str, Any]) -> dict[str, Any]:
    """Per-seed paired ratios when seeds pair up, else the ratio of mean epochs."""
    paired = group.get("speedup_paired")
    if paired and paired.get("mean") is not None:
        return {"mean": paired["mean"], "std": paired.get("std"), "n": paired["n"],
                "paired": True}
    value = group.get("speedup")
    return {"mean": value, "std": None, "n": 1 if value is not None else 0, "paired": False}


def task_rows(compares: Mapping[str, Mapping[str, Any]],
              order: Sequence[str] = OPTIMIZER_ORDER) -> list[dict[str, Any]]:
    """One row per optimizer from compare results keyed by baseline (``adam``, ``amsgrad``,
    ``bop``): final and best accuracy, epochs to target, speed-ups, difference against Bop."""
    by = {b: groups_by_optimizer(compares[b]) for b in compares}
    main = by["adam"]
    names = [o for o in order if o in main] + [o for o in main if o not in order]
    rows = []
    for opt in names:
        g = main[opt]
        to = g["to_target"]
        row: dict[str, Any] = {
            "optimizer": opt,
            "n": g["n"],
            "final": dict(g["final"]),
            "best": dict(g["best"]),
            "to_target": {"mean": to["mean"], "std": to["std"], "reached": to["reached"],
                          "n": g["n"]},
            "speedup_vs_adam": _speedup(g),
            "speedup_vs_amsgrad": None,
            "diff_vs_bop": None,
        }
        if "amsgrad" in by and opt in by["amsgrad"]:
            row["speedup_vs_amsgrad"] = _speedup(by["amsgrad"][opt])
        if "bop" in by and opt in by["bop"]:
            fd = by["bop"][opt].get("final_diff")
            row["diff_vs_bop"] = dict(fd) if fd else None
        rows.append(row)
    return rows


def claim_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """BAMSProd's measured speed-ups and accuracy gap next to the paper's numbers."""
    bams = next((r for r in rows if r["optimizer"] == "bamsprod"), None)
    out: dict[str, Any] = {"paper_speedup": PAPER_SPEEDUP, "paper_gain_points": PAPER_GAIN_POINTS,
                           "speedup_vs_adam": None, "speedup_vs_amsgrad": None,
                           "gain_vs_bop_points": None}
    if bams is None:
        return out
    out["speedup_vs_adam"] = bams["speedup_vs_adam"]
    out["speedup_vs_amsgrad"] = bams["speedup_vs_amsgrad"]
    diff = bams.get("diff_vs_bop")
    if diff and diff.get("mean") is not None:
        out["gain_vs_bop_points"] = {
            "mean": 100 * diff["mean"],
            "std": None if diff.get("std") is None else 100 * diff["std"],
            "n": diff.get("n"),
            "paired": diff.get("paired"),
        }
    return out


def slim_compare(result: Mapping[str, Any], keep_series: bool = False) -> dict[str, Any]:
    """A compare result without per-run series (and group series unless ``keep_series``)."""
    out = {k: v for k, v in result.items() if k != "runs"}
    out["runs"] = [{k: v for k, v in r.items() if k != "series"} for r in result.get("runs", [])]
    if not keep_series:
        out["groups"] = [{k: v for k, v in g.items() if k != "series"}
                         for g in result.get("groups", [])]
    return out


# ------------------------------------------------------------------------------- machine


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """This machine: cores, memory, CPU model, OS, Python and torch versions (torch is not
    imported: the version comes from the installed distribution)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _meminfo_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "bamsprod": _version("bamsprod"),
    }


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- formatting


def _ok(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def fmt_pm(stat: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2,
           sign: bool = False, suffix: str = "") -> str:
    """``mean ± std`` (std left out when undefined); ``n/a`` when there is no mean."""
    if not stat or not _ok(stat.get("mean")):
        return "n/a"
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(stat["mean"] * scale, spec) + suffix
    if _ok(stat.get("std")):
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def fmt_epochs(to: Mapping[str, Any]) -> str:
    reached, n = to.get("reached", 0), to.get("n", 0)
    if not reached:
        return f"not reached (0/{n})"
    return f"{fmt_pm(to, digits=1)} ({reached}/{n})"


def fmt_speedup(sp: Mapping[str, Any] | None) -> str:
    if not sp or not _ok(sp.get("mean")):
        return "n/a"
    text = fmt_pm(sp) + "×"
    return text if sp.get("paired") else f"{text} (ratio of means)"


def fmt_lr(lr: Any) -> str:
    return f"{lr:g}" if isinstance(lr, int | float) else str(lr)


def table_markdown(rows: Sequence[Mapping[str, Any]], lrs: Mapping[str, Any] | None = None
                   ) -> str:
    """The per-task table (accuracies in %, differences in points)."""
    lrs = lrs or {}
    head = ("| optimizer | lr | final test acc (%) | best test acc (%) | epochs to target "
            "(reached) | speed-up vs Adam | speed-up vs AMSGrad | final − Bop (points) |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        opt = r["optimizer"]
        lines.append(
            f"| {NAMES.get(opt, opt)} | {fmt_lr(lrs.get(opt, ''))} "
            f"| {fmt_pm(r['final'], 100)} | {fmt_pm(r['best'], 100)} "
            f"| {fmt_epochs(r['to_target'])} | {fmt_speedup(r['speedup_vs_adam'])} "
            f"| {fmt_speedup(r['speedup_vs_amsgrad'])} "
            f"| {fmt_pm(r['diff_vs_bop'], 100, sign=True)} |"
        )
    return "\n".join(lines)


def claims_markdown(tasks: Sequence[Mapping[str, Any]]) -> str:
    """One line per task: BAMSProd's speed-ups and gain over Bop, next to the paper's."""
    lines = [
        "| task | BAMSProd speed-up vs Adam | vs AMSGrad | BAMSProd − Bop final (points) |",
        "|---|---|---|---|",
        f"| paper (Liu et al. 2020) | ≈ {PAPER_SPEEDUP}× | — | ≈ +{PAPER_GAIN_POINTS} |",
    ]
    for t in tasks:
        c = t["claims"]
        lines.append(
            f"| {t['title']} | {fmt_speedup(c['speedup_vs_adam'])} "
            f"| {fmt_speedup(c['speedup_vs_amsgrad'])} "
            f"| {fmt_pm(c['gain_vs_bop_points'], sign=True)} |"
        )
    return "\n".join(lines)


def verdict_lines(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Plain sentences: what was measured, and which way it points relative to the paper."""
    out = []
    for t in tasks:
        c = t["claims"]
        sp = (c.get("speedup_vs_adam") or {}).get("mean")
        gain = (c.get("gain_vs_bop_points") or {}).get("mean")
        parts = []
        if _ok(sp):
            way = "faster than" if sp > 1.0 else "as fast as" if sp == 1.0 else "slower than"
            parts.append(f"BAMSProd reached the target {way} Adam ({sp:.2f}× vs the paper's "
                         f"{PAPER_SPEEDUP}×)")
        else:
            parts.append("no speed-up against Adam could be measured (the target was not "
                         "reached by both)")
        if _ok(gain):
            way = "above" if gain > 0 else "below" if gain < 0 else "level with"
            parts.append(f"ended {abs(gain):.2f} points {way} Bop (paper: +{PAPER_GAIN_POINTS})")
        else:
            parts.append("no accuracy difference against Bop could be measured")
        out.append(f"- **{t['title']}**: " + "; ".join(parts) + ".")
    return out


def _lrs(task: Mapping[str, Any]) -> dict[str, Any]:
    return {opt: cfg.get("lr") for opt, cfg in task.get("configs", {}).items()}


def _describe_machine(report: Mapping[str, Any]) -> str:
    m = report.get("machine", {})
    devices = ", ".join(report.get("devices") or []) or "unknown"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB "
            f"memory; torch {m.get('torch', '?')}; runs on device: {devices}")


def _fmt_seconds(s: Any) -> str:
    if not _ok(s):
        return "n/a"
    s = float(s)
    return f"{s / 60:.1f} min ({s:.0f} s)" if s >= 60 else f"{s:.1f} s"


def markdown_report(report: Mapping[str, Any]) -> str:
    """``reproduction.md``: header (date, machine, wall time, configs), the claims next to the
    paper's, and per task the table and its target."""
    plan = report["plan"]
    out = [
        f"# BAMSProd reproduction{' (quick)' if plan['quick'] else ''}",
        "",
        f"- date: {report['created']}",
        f"- machine: {_describe_machine(report)}",
        f"- wall time: {_fmt_seconds(report.get('wall_seconds'))} "
        f"({report.get('n_runs', '?')} runs, service: {report.get('service', {}).get('mode')})",
        f"- seeds: {', '.join(str(s) for s in plan['seeds'])}",
        f"- paper: Liu et al., arXiv 2009.13799 — about {PAPER_SPEEDUP}× faster convergence, "
        f"about +{PAPER_GAIN_POINTS} points over Bop",
        "",
    ]
    if report.get("note"):
        out += [report["note"], ""]
    out += [
        "## The paper's claims, as measured",
        "",
        claims_markdown(report["tasks"]),
        "",
        *verdict_lines(report["tasks"]),
        "",
        "Speed-up = the baseline's epochs to the target / the optimizer's, mean ± std of "
        "per-seed ratios (seeds that never reach the target are left out; \"ratio of means\" "
        "where seeds do not pair). The target is 99% of the best per-epoch mean test accuracy "
        "Adam reaches within the budget (the spec's default). Differences against Bop are "
        "per-seed differences of the final test accuracy, mean ± std.",
        "",
    ]
    for t in report["tasks"]:
        target = t.get("target")
        states = ", ".join(f"{k} {v}" for k, v in sorted(t.get("states", {}).items()))
        out += [
            f"## {t['title']}",
            "",
            f"Target: {100 * target:.2f}% test accuracy" if _ok(target) else "Target: n/a",
            f"(budget {t.get('budget')} epochs; runs: {states}; "
            f"sweeps {', '.join(str(s) for s in t.get('sweep_ids', []))}).",
            "",
            table_markdown(t["rows"], _lrs(t)),
            "",
        ]
    out += ["## Exact configs", "", "Tasks (every optimizer and seed runs these fields):", "",
            "| task | model | model_args | dataset | train / test subset | epochs | batch |",
            "|---|---|---|---|---|---|---|"]
    for t in plan["tasks"]:
        args = json.dumps(t["model_args"], sort_keys=True)
        out.append(f"| {t['key']} | {t['model']} | `{args}` | {t['dataset']} "
                   f"| {t['train_subset']} / {t['test_subset']} | {t['epochs']} "
                   f"| {t['batch_size']} |")
    out += ["", "Optimizers (hyperparameters as the service stored them):", "",
            "| optimizer | lr | hparams | source |", "|---|---|---|---|"]
    first = report["tasks"][0] if report["tasks"] else {}
    stored = first.get("configs", {})
    for r in plan["recipes"]:
        cfg = stored.get(r["optimizer"], {})
        hp = json.dumps(cfg.get("hparams", r["hparams"]), sort_keys=True)
        out.append(f"| {NAMES.get(r['optimizer'], r['optimizer'])} | {fmt_lr(r['lr'])} "
                   f"| `{hp}` | {r['source']} |")
    out += ["", "Every run's full config is in the JSON report beside this file "
            "(`tasks[].all_configs`) and in the service (`GET /api/runs/{id}`).", ""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- HTML


def _band(fig: Any, row: int, col: int, xs: list[Any], mean: list[Any], std: list[Any],
          opt: str, show: bool) -> None:
    import plotly.graph_objects as go

    color = COLORS.get(opt, "#333333")
    pts = [(x, m, s) for x, m, s in zip(xs, mean, std, strict=False) if _ok(m)]
    if not pts:
        return
    px = [p[0] for p in pts]
    pm = [p[1] for p in pts]
    ps = [p[2] if _ok(p[2]) else 0.0 for p in pts]
    if any(ps):
        upper = [m + s for m, s in zip(pm, ps, strict=True)]
        lower = [m - s for m, s in zip(pm, ps, strict=True)]
        fig.add_trace(
            go.Scatter(x=px + px[::-1], y=upper + lower[::-1], fill="toself", fillcolor=color,
                       opacity=0.18, line={"width": 0}, hoverinfo="skip", showlegend=False,
                       legendgroup=opt),
            row=row, col=col,
        )
    fig.add_trace(
        go.Scatter(x=px, y=pm, mode="lines+markers", name=NAMES.get(opt, opt),
                   line={"color": color}, legendgroup=opt, showlegend=show),
        row=row, col=col,
    )


def task_figure(task: Mapping[str, Any]) -> Any:
    """Test accuracy and quantization error per epoch, mean ± std band per optimizer."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy (%)",
                                                        "quantization error (mean over layers)"))
    groups = groups_by_optimizer(task["compare"]["adam"])
    order = [o for o in OPTIMIZER_ORDER if o in groups] + [o for o in groups
                                                           if o not in OPTIMIZER_ORDER]
    for opt in order:
        s = groups[opt].get("series")
        if not s:
            continue
        acc_m = [None if not _ok(v) else 100 * v for v in s["mean"]["test_acc"]]
        acc_s = [None if not _ok(v) else 100 * v for v in s["std"]["test_acc"]]
        _band(fig, 1, 1, s["epoch"], acc_m, acc_s, opt, True)
        _band(fig, 1, 2, s["epoch"], s["mean"]["quant_error"], s["std"]["quant_error"], opt,
              False)
    target = task.get("target")
    if _ok(target):
        fig.add_hline(y=100 * target, line_dash="dot", line_color="#555", row=1, col=1,
                      annotation_text="target", annotation_position="bottom right")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=task["title"], height=420, margin={"t": 70, "b": 40},
                      template="plotly_white")
    return fig


def _md_table_html(md: str) -> str:
    """A markdown pipe table as an HTML table (cells escaped)."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return ""
    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]
    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(ln)) + "</tr>"
                   for ln in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def html_report(report: Mapping[str, Any]) -> str:
    """``reproduction.html``: the header, the claims table and per task the charts and table;
    plotly.js is inlined once from the installed plotly package (works offline)."""
    plan = report["plan"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>BAMSProd reproduction{' (quick)' if plan['quick'] else ''}</title>",
        f"<style>{HTML_STYLE}</style></head><body>",
        f"<h1>BAMSProd reproduction{' (quick)' if plan['quick'] else ''}</h1>",
        "<ul>",
        f"<li>date: {html.escape(str(report['created']))}</li>",
        f"<li>machine: {html.escape(_describe_machine(report))}</li>",
        f"<li>wall time: {html.escape(_fmt_seconds(report.get('wall_seconds')))} "
        f"({report.get('n_runs', '?')} runs)</li>",
        f"<li>seeds: {', '.join(str(s) for s in plan['seeds'])}</li>",
        "</ul>",
    ]
    if report.get("note"):
        parts.append(f"<p>{html.escape(report['note'])}</p>")
    parts += ["<h2>The paper's claims, as measured</h2>",
              _md_table_html(claims_markdown(report["tasks"])), "<ul>"]
    parts += [f"<li>{html.escape(v[2:].replace('**', ''))}</li>"
              for v in verdict_lines(report["tasks"])]
    parts.append("</ul>")
    first = True
    for t in report["tasks"]:
        fig = task_figure(t)
        parts.append(f"<h2>{html.escape(t['title'])}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first))
        first = False
        target = t.get("target")
        if _ok(target):
            parts.append(f"<p>Target: {100 * target:.2f}% test accuracy "
                         f"(budget {t.get('budget')} epochs).</p>")
        parts.append(_md_table_html(table_markdown(t["rows"], _lrs(t))))
    parts.append("<h2>Configs</h2><pre>"
                 + html.escape(json.dumps(plan, indent=2)) + "</pre></body></html>")
    return "\n".join(parts)
