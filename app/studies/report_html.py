"""``reproduction.html``: the markdown report's tables plus Plotly charts (plotly.js inlined
once from the installed package, no CDN: the page opens offline).

Per task: test accuracy, validation accuracy and quantization error per epoch, mean ± std band
per optimizer (the stage-2 runs); the kappa x gamma map as a heat map of final test accuracy.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from bamsprod.app.studies.plan import OPTIMIZER_ORDER
from bamsprod.app.studies.report_md import (
    RESULTS_HEAD,
    fmt_num,
    header_lines,
    map_markdown,
    name,
    plan_markdown,
    results_rows,
    table,
    verdict_rows,
)
from bamsprod.app.studies.stats import VERDICT_RULE, groups_by_optimizer, ok

COLORS = {
    "bamsprod": "#d62728", "adam": "#1f77b4", "amsgrad": "#17becf", "adabound": "#8c564b",
    "amsbound": "#9467bd", "bop": "#2ca02c", "sgd": "#7f7f7f",
}
PANELS = (("test_acc", "test accuracy (%)", 100.0), ("val_acc", "validation accuracy (%)", 100.0),
          ("quant_error", "quantization error (mean over layers)", 1.0))

HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def _band(fig: Any, col: int, xs: list[Any], mean: list[Any], std: list[Any], opt: str,
          show: bool) -> None:
    import plotly.graph_objects as go

    color = COLORS.get(opt, "#333333")
    pts = [(x, m, s if ok(s) else 0.0) for x, m, s in zip(xs, mean, std, strict=False) if ok(m)]
    if not pts:
        return
    px, pm, ps = ([p[i] for p in pts] for i in range(3))
    if any(ps):
        upper = [m + s for m, s in zip(pm, ps, strict=True)]
        lower = [m - s for m, s in zip(pm, ps, strict=True)]
        fig.add_trace(go.Scatter(x=px + px[::-1], y=upper + lower[::-1], fill="toself",
                                 fillcolor=color, opacity=0.18, line={"width": 0},
                                 hoverinfo="skip", showlegend=False, legendgroup=opt),
                      row=1, col=col)
    fig.add_trace(go.Scatter(x=px, y=pm, mode="lines+markers", name=name(opt),
                             line={"color": color}, legendgroup=opt, showlegend=show),
                  row=1, col=col)


def task_figure(task: Mapping[str, Any]) -> Any:
    """Test and validation accuracy and quantization error per epoch, mean ± std band."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[1] for p in PANELS])
    groups = groups_by_optimizer(task["compare"]["adam"])
    order = [o for o in OPTIMIZER_ORDER if o in groups] + [o for o in groups
                                                           if o not in OPTIMIZER_ORDER]
    for opt in order:
        s = groups[opt].get("series")
        if not s:
            continue
        for col, (metric, _, scale) in enumerate(PANELS, 1):
            mean = [scale * v if ok(v) else None for v in s["mean"].get(metric, [])]
            std = [scale * v if ok(v) else None for v in s["std"].get(metric, [])]
            _band(fig, col, s["epoch"], mean, std, opt, col == 1)
    if ok(task.get("target")):
        fig.add_hline(y=100 * task["target"], line_dash="dot", line_color="#555", row=1, col=1,
                      annotation_text="target", annotation_position="bottom right")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=task["title"], height=400, margin={"t": 70, "b": 40},
                      template="plotly_white")
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
    fig.update_layout(title=f"BAMSProd final test accuracy on {sens['task']}: κ × γ",
                      xaxis_title="γ", yaxis_title="κ", xaxis_type="category",
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


def html_report(report: Mapping[str, Any]) -> str:
    """The page: header, verdicts, per task the charts and tables, the map, plan and cost."""
    plan = report["plan"]
    title = f"BAMSProd reproduction: plan {plan['name']}"
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<ul>", _markdown_html(header_lines(report)),
             "</ul>"]
    if report.get("note"):
        parts.append(f"<p>{html.escape(report['note'])}</p>")
    parts += ["<h2>Verdicts</h2>",
              _table_html(table(("task", "claim", "paper", "measured [95% CI]", "verdict"),
                                verdict_rows(report["tasks"]))),
              f"<p>Rule: {html.escape(VERDICT_RULE)}</p>"]
    first = True
    for t in report["tasks"]:
        parts.append(f"<h2>{html.escape(t['title'])}</h2>")
        parts.append(task_figure(t).to_html(full_html=False, include_plotlyjs=first))
        first = False
        parts.append(_table_html(table(RESULTS_HEAD, results_rows(t))))
    sens = report.get("sensitivity")
    if sens:
        parts.append("<h2>BAMSProd sensitivity: κ × γ</h2>")
        parts.append(map_figure(sens).to_html(full_html=False, include_plotlyjs=first))
        parts.append(_markdown_html(map_markdown(sens)))
    parts += ["<h2>Plan and cost</h2>", _markdown_html(plan_markdown(plan, report["cost"])),
              "<h2>Plan as data</h2><pre>" + html.escape(json.dumps(plan, indent=1)) + "</pre>",
              "</body></html>"]
    return "\n".join(parts)
