"""The study report as HTML: the markdown report's tables plus Plotly charts.

plotly.js is not inlined (it is 4.6 MB): the page loads ``plotly.min.js`` from its own folder,
where :func:`write_plotly_js` puts a copy from the installed plotly package, so the page opens
offline and stays small. Charts: per task, test and validation accuracy and quantization error
per epoch (mean ± std band per optimizer); the performance profiles; the tuning curves; the
kappa x gamma map as a heat map.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bamsprod.app.studies.fmt import fmt_num, name, table
from bamsprod.app.studies.listing import plan_markdown
from bamsprod.app.studies.paired import VERDICT_RULE, ok
from bamsprod.app.studies.plan import ordered
from bamsprod.app.studies.report_md import (
    environment_lines,
    header_lines,
    map_markdown,
    profile_lines,
    results_head,
    results_rows,
    robustness_lines,
    verdict_rows,
)

PLOTLY_JS = "plotly.min.js"
COLORS = {
    "bamsprod": "#d62728", "adam": "#1f77b4", "amsgrad": "#17becf", "adabound": "#8c564b",
    "amsbound": "#9467bd", "bop": "#2ca02c", "sgd": "#7f7f7f",
}
EXTRA_COLORS = ("#e377c2", "#bcbd22", "#ff7f0e", "#393b79", "#637939")
PANELS = (("test_acc", "test accuracy (%)", 100.0), ("val_acc", "validation accuracy (%)", 100.0),
          ("quant_error", "quantization error (mean over layers)", 1.0))

HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def color(opt: str) -> str:
    if opt in COLORS:
        return COLORS[opt]
    return EXTRA_COLORS[sum(map(ord, opt)) % len(EXTRA_COLORS)]


def write_plotly_js(folder: Path) -> Path:
    """plotly.js from the installed plotly package, beside the report."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLY_JS
    path.write_text(get_plotlyjs())
    return path


def _band(fig: Any, col: int, xs: list[Any], mean: list[Any], std: list[Any], opt: str,
          show: bool) -> None:
    import plotly.graph_objects as go

    c = color(opt)
    pts = [(x, m, s if ok(s) else 0.0) for x, m, s in zip(xs, mean, std, strict=False) if ok(m)]
    if not pts:
        return
    px, pm, ps = ([p[i] for p in pts] for i in range(3))
    if any(ps):
        upper = [m + s for m, s in zip(pm, ps, strict=True)]
        lower = [m - s for m, s in zip(pm, ps, strict=True)]
        fig.add_trace(go.Scatter(x=px + px[::-1], y=upper + lower[::-1], fill="toself",
                                 fillcolor=c, opacity=0.18, line={"width": 0},
                                 hoverinfo="skip", showlegend=False, legendgroup=opt),
                      row=1, col=col)
    fig.add_trace(go.Scatter(x=px, y=pm, mode="lines+markers", name=name(opt),
                             line={"color": c}, legendgroup=opt, showlegend=show),
                  row=1, col=col)


def task_figure(task: Mapping[str, Any]) -> Any:
    """Test and validation accuracy and quantization error per epoch, mean ± std band."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[1] for p in PANELS])
    groups = {(g.get("fields") or {}).get("optimizer"): g
              for g in ((task.get("compare") or {}).get("main") or {}).get("groups", [])}
    for opt in ordered([o for o in groups if o]):
        s = groups[opt].get("series")
        if not s:
            continue
        for col, (metric, _, scale) in enumerate(PANELS, 1):
            mean = [scale * v if ok(v) else None for v in s["mean"].get(metric, [])]
            std = [scale * v if ok(v) else None for v in s["std"].get(metric, [])]
            _band(fig, col, s["epoch"], mean, std, opt, col == 1)
    if ok(task.get("target")):
        col = 2 if task.get("metric") == "val_acc" else 1
        fig.add_hline(y=100 * task["target"], line_dash="dot", line_color="#555", row=1, col=col,
                      annotation_text="target", annotation_position="bottom right")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=task["title"], height=400, margin={"t": 70, "b": 40},
                      template="plotly_white")
    return fig


def profile_figure(profiles: Mapping[str, Any]) -> Any:
    """rho(tau) per optimizer, in epochs and in seconds, as step lines."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = [k for k in ("epochs", "seconds") if (profiles.get(k) or {}).get("n_tasks")]
    fig = make_subplots(rows=1, cols=max(1, len(kinds)),
                        subplot_titles=[f"time to target in {k}" for k in kinds])
    for col, kind in enumerate(kinds, 1):
        p = profiles[kind]
        for opt, st in p["steps"].items():
            fig.add_trace(go.Scatter(
                x=st["tau"], y=st["rho"], mode="lines", line_shape="hv", legendgroup=opt,
                name=f"{name(opt)} ({p['scores'][opt]:.2f})", showlegend=col == 1,
                line={"color": color(opt)}), row=1, col=col)
    fig.update_xaxes(title_text="τ (times the fastest)", range=[1, 4])
    fig.update_yaxes(title_text="ρ(τ): fraction of tasks", range=[-0.02, 1.02])
    fig.update_layout(title="Performance profiles (legend: score)", height=380,
                      template="plotly_white")
    return fig


def robustness_figure(tasks: list[Mapping[str, Any]]) -> Any | None:
    """Expected best validation accuracy against the number of tuning trials, per task."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = [t for t in tasks if ((t.get("robustness") or {}).get("rows"))]
    if not shown:
        return None
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[t["key"] for t in shown])
    seen: set[str] = set()
    for col, t in enumerate(shown, 1):
        for opt, row in t["robustness"]["rows"].items():
            fig.add_trace(go.Scatter(
                x=list(range(1, row["n"] + 1)), y=[100 * v for v in row["curve"]],
                mode="lines+markers", name=name(opt), legendgroup=opt,
                showlegend=opt not in seen, line={"color": color(opt)}), row=1, col=col)
            seen.add(opt)
    fig.update_xaxes(title_text="tuning trials k", dtick=1)
    fig.update_yaxes(title_text="E[best val acc] (%)")
    fig.update_layout(title="Tuning robustness", height=360, template="plotly_white")
    return fig


def map_figure(sens: Mapping[str, Any]) -> Any:
    """Final test accuracy (%) over kappa (rows) x gamma (columns)."""
    import plotly.graph_objects as go

    cells = {(c["kappa"], c["gamma"]): c for c in sens.get("cells", [])}

    def acc(k: Any, g: Any) -> float | None:
        mean = (cells.get((k, g)) or {}).get("final", {}).get("mean")
        return 100 * mean if ok(mean) else None

    z = [[acc(k, g) for g in sens["gammas"]] for k in sens["kappas"]]
    fig = go.Figure(go.Heatmap(
        z=z, x=[fmt_num(g) for g in sens["gammas"]], y=[fmt_num(k) for k in sens["kappas"]],
        text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
        texttemplate="%{text}", colorscale="Viridis", colorbar={"title": "final acc %"}))
    fig.update_layout(title=f"{name(sens['optimizer'])} final test accuracy on {sens['task']}: "
                            "κ × γ", xaxis_title="γ", yaxis_title="κ", xaxis_type="category",
                      yaxis_type="category", height=380, template="plotly_white")
    return fig


def _table_html(lines: list[str]) -> str:
    """Markdown pipe-table lines as an HTML table (cells escaped)."""
    lines = [ln for ln in lines if ln.startswith("|")]
    if len(lines) < 2:
        return ""

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip().replace("**", "")) for c in line.strip().strip("|")
                .split(" | ")]

    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(ln)) + "</tr>"
                   for ln in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_html(lines: list[str]) -> str:
    """Markdown lines (paragraphs, bullets, pipe tables) as escaped HTML, tables as tables."""
    parts: list[str] = []
    block: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            parts.append(_table_html(block))
            block = []
        if line.startswith("- "):
            parts.append(f"<li>{html.escape(line[2:].replace('**', ''))}</li>")
        elif line:
            parts.append(f"<p>{html.escape(line.replace('**', '').replace('`', ''))}</p>")
    return "\n".join(parts)


def _plot(fig: Any) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False)


def html_report(report: Mapping[str, Any]) -> str:
    """The page: header, verdicts, profiles, per task the charts and tables, robustness, the
    map, plan and cost."""
    study, bases = report["study"], report["baselines"]
    title = f"Study {study['name']}"
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style>",
             f"<script src='{PLOTLY_JS}'></script></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<ul>", _markdown_html(header_lines(report)),
             "</ul>"]
    if report.get("note"):
        parts.append(f"<p>{html.escape(report['note'])}</p>")
    if study.get("claims"):
        parts += ["<h2>Verdicts</h2>",
                  _table_html(table(("task", "claim", "claimed", "measured [95% CI]",
                                     "verdict"), verdict_rows(report["tasks"]))),
                  f"<p>Rule: {html.escape(VERDICT_RULE)}</p>"]
    parts += ["<h2>Performance profiles</h2>", _plot(profile_figure(report["profiles"])),
              _markdown_html(profile_lines(report))]
    rob = robustness_figure(report["tasks"])
    if rob is not None:
        parts += ["<h2>Tuning robustness</h2>", _plot(rob)]
        for t in report["tasks"]:
            parts += [f"<h3>{html.escape(t['title'])}</h3>",
                      _markdown_html(robustness_lines(t))]
    for t in report["tasks"]:
        parts.append(f"<h2>{html.escape(t['title'])}</h2>")
        parts.append(_plot(task_figure(t)))
        parts.append(_table_html(table(results_head(bases), results_rows(t, bases))))
    sens = report.get("sensitivity")
    if sens:
        parts.append("<h2>Sensitivity: κ × γ</h2>")
        parts.append(_plot(map_figure(sens)))
        parts.append(_markdown_html(map_markdown(sens, bases)))
    parts += ["<h2>Environment</h2>", "<ul>", _markdown_html(environment_lines(report)), "</ul>",
              "<h2>Plan and cost</h2>", _markdown_html(plan_markdown(study, report["cost"])),
              "<h2>Study as data</h2><pre>"
              + html.escape(json.dumps(study, indent=1)) + "</pre>",
              "</body></html>"]
    return "\n".join(parts)
