// The compare page's charts: one per chart spec the server sends (core/metric_schema.py, the
// run page's charts too), each group a mean ± std band, and with "runs" ticked each group's runs
// as ONE trace (their lines joined by gaps). Drawn with newPlot once, then Plotly.react with a
// fixed uirevision, so the user's zoom survives the live refreshes.

import * as chartHelpers from "./charts.js";
import { $, isNum, pageData } from "./common.js";
import { prunedIn, shortLabel } from "./compare_table.js";
import { state } from "./compare_state.js";

const SPECS = (pageData("compare-data") || {}).charts || [];
let firstRender = true;

/**
 * The compare page's charts, from the server's specs: each draws one metric, the compared one
 * (`compared`) in the chart that holds it, which comes first and carries the legend, else
 * the chart's first trace. A chart whose spec has a log y axis is always log; "log y" puts the
 * others but the compared metric's on a log axis.
 */
function compareCharts(compared) {
  const charts = SPECS.map((spec) => {
    const metrics = spec.traces.map(([m]) => m);
    const main = metrics.includes(compared);
    const metric = main ? compared : metrics[0];
    const log = (spec.yaxis || {}).type === "log";
    return {
      ...spec, metric, main, log, logy: !main && !log,
      heading: metrics.length > 1 ? `${spec.title} (${metric.replace(/_/g, " ")})` : spec.title,
    };
  });
  return [...charts.filter((c) => c.main), ...charts.filter((c) => !c.main)];
}

/** The charts for the compared metric, their boxes put in that order; "log y" names the
 * charts it turns. */
export function placeCharts(compared) {
  const charts = compareCharts(compared);
  $(".charts").append(...charts.map((c) => document.getElementById(c.id)));
  $("#logy-charts").textContent = `(${charts.filter((c) => c.logy).map((c) => c.title.toLowerCase()).join(", ")})`;
  return charts;
}

function chartData(chart, result) {
  const metric = chart.metric;
  const positive = !!(chart.log || (chart.logy && state.logy));
  let zeros = 0; // groups whose values are all 0: a log axis cannot draw them
  const traces = [];
  const rows = [];
  const groupIndex = new Map(result.groups.map((g, i) => [g.key, i]));
  if (state.indiv) {
    const lines = new Map(); // group key -> { x, y }: the group's runs joined by null gaps
    for (const r of result.runs) {
      if (!r.series || !r.series.x.length) continue;
      const line = lines.get(r.group) || { x: [], y: [], n: 0 };
      if (line.n++) { line.x.push(null); line.y.push(null); }
      line.x.push(...r.series.x);
      line.y.push(...chartHelpers.smooth(r.series[metric], state.smooth));
      lines.set(r.group, line);
    }
    for (const [key, line] of lines) {
      const i = groupIndex.get(key) ?? 0;
      traces.push({
        x: line.x, y: line.y, type: "scatter", mode: "lines", connectgaps: false,
        name: chartHelpers.escapeForPlotly(`${line.n} runs`), legendgroup: key, showlegend: false,
        opacity: 0.35, line: { width: 1, color: chartHelpers.color(i) }, hoverinfo: "skip",
      });
    }
  }
  result.groups.forEach((g, i) => {
    const s = g.series;
    const mean = chartHelpers.smooth(s.mean[metric], state.smooth);
    const sd = chartHelpers.smooth(s.std[metric], state.smooth);
    // A tuning trial stopped early (pruned) is marked: dashed, and said in the legend.
    const pruned = prunedIn(result, g);
    const mark = pruned ? (pruned === g.n ? " · pruned" : ` · ${pruned} pruned`) : "";
    const label = `${shortLabel(g)} (n=${g.n})${mark}`;
    const bands = chartHelpers.bandTraces({
      name: chartHelpers.escapeForPlotly(label), color: chartHelpers.color(i), xs: s.x, ys: mean, sd, ns: s.n, legendgroup: g.key, positive,
    });
    if (pruned === g.n) bands[2].line.dash = "dash";
    if (positive) {
      // On a log axis only the all-zero groups get a legend entry, saying why nothing shows.
      const zero = chartHelpers.allZero(mean);
      zeros += zero;
      const line = bands[2];
      line.showlegend = zero;
      if (zero) line.name = `${line.name}: ${chart.log ? chartHelpers.ZERO_NOTE : "all 0, not drawn on log axis"}`;
    }
    traces.push(...bands);
    for (let k = 0; k < s.epoch.length; k++) {
      const m = mean[k];
      const d = sd[k];
      rows.push([metric, g.key, g.label, s.epoch[k], s.x[k], s.n[k], m, d,
        isNum(m) ? m - (isNum(d) ? d : 0) : null, isNum(m) ? m + (isNum(d) ? d : 0) : null]);
    }
  });
  return { traces, rows, metric, zeros };
}

/** The other charts have no legend, unless an all-zero group needs its note. */
const sideLayout = (zeros) => (zeros ? {} : { showlegend: false, margin: { l: 66, r: 16, t: 34, b: 44 } });

export async function renderCharts(result) {
  const Plotly = await chartHelpers.plotly();
  if (firstRender) performance.mark("bamsprod:plotly");
  const xTitle = result.x === "time" ? "seconds" : "epoch";
  const maxEpoch = Math.max(1, ...result.groups.map((g) => g.series.epoch[g.series.epoch.length - 1] || 1));
  const jobs = [];
  const plotted = [];
  for (const chart of placeCharts(result.metric)) {
    const { traces, rows, zeros } = chartData(chart, result);
    plotted.push(...rows);
    const ylog = chart.log || (chart.logy && state.logy);
    const ticks = result.x === "epoch" && !state.logx ? chartHelpers.epochTicks(maxEpoch) : {};
    const layout = chartHelpers.layout(chart.heading, xTitle, chart.y, {
      xaxis: { type: state.logx ? "log" : "linear", ...ticks },
      yaxis: { ...(chart.yaxis || {}), type: ylog ? "log" : "linear" },
      // Axis settings the user changes reset the view; new data alone never does.
      uirevision: `${result.x}|${state.logx}|${ylog}`,
      // One legend (on the compared metric's chart; click a group there to hide it): the
      // table's colour swatches are the key for the others, which get the height back.
      ...(chart.main ? {} : sideLayout(zeros)),
    });
    const el = document.getElementById(chart.id);
    jobs.push(firstRender
      ? Plotly.newPlot(el, traces, layout, chartHelpers.CONFIG).then(chartHelpers.fitLegend)
      : Plotly.react(el, traces, chartHelpers.keepLegendRoom(el, layout), chartHelpers.CONFIG));
  }
  await Promise.all(jobs);
  if (firstRender) {
    firstRender = false;
    window.__bamsprodRendered = performance.now();
    document.body.dataset.rendered = "1";
  }
  return plotted;
}

/** The CSV's columns, for the rows renderCharts returns. */
export const plotColumns = (result) =>
  ["metric", "group", "label", "epoch", result.x === "time" ? "seconds" : "x", "n", "mean", "std", "lower", "upper"];
