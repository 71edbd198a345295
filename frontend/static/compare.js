// Compare: groups of runs (seeds pooled) as mean ± std bands, and per group the paper's two
// measures against a baseline (GET /api/compare). Every control lives in the URL. While any
// run in the comparison trains, the data is fetched again every few seconds and the plots are
// updated in place (Plotly.react with a fixed uirevision keeps the user's zoom). The page's
// work follows the groups, not the runs: each run's own series is fetched (include=runs) only
// with "runs" ticked, and then a group's runs are ONE trace (their lines joined by gaps), so
// 200 runs in 4 groups are 4 SVG paths. (WebGL traces are no way out here: Plotly's scattergl
// compiles code at run time, which the pages' Content-Security-Policy forbids.)

import { api, wireApiDownloads } from "./api.js";
import * as BC from "./charts.js";
import { $, $$, download, every, fmtAcc, fmtNum, fmtPts, fmtSeconds, h, isActive, isNum, pageData, paintSwatches, toCsv, toast } from "./common.js";
import { startTuned } from "./tuned.js";
const API_KEYS = ["runs", "sweep", "group_by", "baseline", "target", "metric", "x"];
const VIEW_KEYS = ["logx", "logy", "smooth", "indiv"];
const LIVE_MS = 3000;

const pageInfo = pageData("compare-data") || {};
// The server's chart specs (core/metric_schema.py, the run page's too).
const SPECS = pageInfo.charts || [];

let state = readUrl();
let result = null;
let plotted = []; // rows for the CSV of what is plotted
let live = null;
let firstRender = true;
let loading = null;
let preload = pageInfo.preload || null;

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

function readUrl() {
  const p = new URLSearchParams(location.search);
  const s = {};
  for (const k of API_KEYS) s[k] = p.get(k) || "";
  s.metric = s.metric || "test_acc";
  s.x = s.x || "epoch";
  s.logx = p.get("logx") === "1";
  s.logy = p.get("logy") === "1";
  s.indiv = p.get("indiv") === "1";
  s.smooth = Math.min(0.95, Math.max(0, Number(p.get("smooth")) || 0));
  return s;
}

function writeUrl() {
  const p = new URLSearchParams();
  for (const k of API_KEYS) {
    if (state[k] && !(k === "metric" && state[k] === "test_acc") && !(k === "x" && state[k] === "epoch")) p.set(k, state[k]);
  }
  if (state.logx) p.set("logx", "1");
  if (state.logy) p.set("logy", "1");
  if (state.indiv) p.set("indiv", "1");
  if (state.smooth) p.set("smooth", String(state.smooth));
  const qs = p.toString();
  history.replaceState(null, "", qs ? `?${qs}` : location.pathname);
}

function apiQuery(extra = {}) {
  const p = new URLSearchParams();
  for (const k of API_KEYS) if (state[k]) p.set(k, state[k]);
  if (state.indiv) p.set("include", "runs");
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

// ------------------------------------------------------------------ controls

function fillControls() {
  $("#c-runs").value = state.runs;
  $("#c-sweep").value = state.sweep;
  $("#c-group_by").value = state.group_by;
  $("#c-metric").value = state.metric;
  $("#c-target").value = state.target;
  for (const r of $$('input[name="x"]')) r.checked = r.value === state.x;
  $("#c-logx").checked = state.logx;
  $("#c-logy").checked = state.logy;
  $("#c-indiv").checked = state.indiv;
  $("#c-smooth").value = String(state.smooth);
  $("#smooth-out").textContent = String(state.smooth);
  const sel = $("#c-baseline");
  if (state.baseline && ![...sel.options].some((o) => o.value === state.baseline)) {
    sel.append(h("option", { value: state.baseline }, state.baseline));
  }
  sel.value = state.baseline;
}

function readControls() {
  state.runs = $("#c-runs").value.replace(/\s+/g, "");
  state.sweep = $("#c-sweep").value.trim();
  state.group_by = $("#c-group_by").value.replace(/\s+/g, "");
  state.baseline = $("#c-baseline").value;
  state.metric = $("#c-metric").value;
  state.target = $("#c-target").value.trim();
  state.x = ($$('input[name="x"]').find((r) => r.checked) || {}).value || "epoch";
}

function readView() {
  state.logx = $("#c-logx").checked;
  state.logy = $("#c-logy").checked;
  state.indiv = $("#c-indiv").checked;
  state.smooth = Number($("#c-smooth").value) || 0;
  $("#smooth-out").textContent = String(state.smooth);
}

// ---------------------------------------------------------------------- data

async function load() {
  if (!state.runs && !state.sweep) {
    showError("Choose runs to compare: tick them on the Runs page, or give run ids or a sweep id above.");
    return;
  }
  if (loading) loading.abort();
  const ctl = new AbortController();
  loading = ctl;
  // The server preloads the first request (see compare.html): ask for exactly that URL.
  let url = `/api/compare?${apiQuery()}`;
  if (preload && new URLSearchParams(preload.split("?")[1]).toString() === apiQuery()) url = preload;
  preload = null;
  try {
    result = await api(url, { signal: ctl.signal });
  } catch (e) {
    if (e.name === "AbortError") return;
    showError(e.message);
    return;
  } finally {
    if (loading === ctl) loading = null;
  }
  if (firstRender) performance.mark("bamsprod:data");
  showError("");
  $("#results").hidden = false;
  renderMeta();
  renderTable();
  if (hasEpochs()) {
    BC.setEmpty(null);
    delete document.body.dataset.empty;
    await renderCharts();
  } else {
    await renderEmpty();
  }
  setLive(result.runs.some((r) => isActive(r.state)));
}

const hasEpochs = () => result.groups.some((g) => g.series.epoch.length);
const countState = (s) => result.runs.filter((r) => r.state === s).length;

/** No run has an epoch yet: say what is coming instead of drawing empty axes. */
async function renderEmpty() {
  const [queued, running] = [countState("queued"), countState("running")];
  const parts = [];
  if (running) parts.push(`${running} run${running === 1 ? "" : "s"} training`);
  if (queued) {
    let where = "";
    if (!running) {
      // The first queued run's place in the whole queue (other users' runs may go first).
      const first = Math.min(...result.runs.filter((r) => r.state === "queued").map((r) => r.id));
      const ahead = (await api(`/api/runs/${first}`)).queued_ahead;
      if (Number.isInteger(ahead)) where = `, the first is ${BC.inLine(ahead)}`;
    }
    parts.push(`${queued}${running ? "" : ` run${queued === 1 ? "" : "s"}`} queued${where}`);
  }
  if (parts.length) {
    BC.setEmpty(`Waiting for epoch 1 — ${parts.join(", ")}`, BC.comingText(placeCharts()));
  } else {
    BC.setEmpty("No epochs: these runs ended before their first epoch",
      "Retry them from their run pages to train them from the start.");
  }
  document.body.dataset.empty = "1";
  document.body.dataset.rendered = "1";
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg;
  el.hidden = !msg;
}

function setLive(on) {
  $("#live").hidden = !on;
  if (on && !live) live = every(LIVE_MS, load);
  if (!on && live) {
    live.stop();
    live = null;
  }
}

// ---------------------------------------------------------------------- meta

function renderMeta() {
  const parts = [`${result.runs.length} runs in ${result.groups.length} group${result.groups.length === 1 ? "" : "s"}`];
  if (state.sweep) parts.unshift(`sweep ${state.sweep}`);
  if (countState("running")) parts.push(`${countState("running")} training`);
  if (countState("queued")) parts.push(`${countState("queued")} queued`);
  $("#subtitle").textContent = parts.join(" · ");
  const sel = $("#c-baseline");
  sel.replaceChildren(h("option", { value: "" }, "auto (Adam, else first)"),
    ...result.groups.map((g) => h("option", { value: g.key }, `${shortLabel(g)} (n=${g.n})`)));
  // "baseline=adam" (an optimizer name) selects the group it resolved to.
  const known = result.groups.some((g) => g.key === state.baseline);
  sel.value = state.baseline && !known ? result.baseline || "" : state.baseline;
  const dl = $("#group-fields");
  const fields = new Set(["optimizer", "lr", "model", "dataset", "batch_size", "epochs", ...(result.fields || [])]);
  dl.replaceChildren(...[...fields].map((f) => h("option", { value: f })));
  const metricName = result.metric.replace("_", " ");
  const note = [];
  if (isNum(result.target)) {
    note.push(`Target: ${fmtAcc(result.target)} ${metricName}` + (result.target_source && result.target_source !== "given" ? ` (${result.target_source})` : ""));
  }
  if (isNum(result.budget)) note.push(`measured within the first ${result.budget} epochs (the shortest group)`);
  if (result.fields && result.fields.length) note.push(`groups differ in: ${result.fields.join(", ")}`);
  note.push("seconds compare only runs on the same device");
  $("#target-note").textContent = note.join(" · ");
  $("#to-target-head").textContent = result.x === "time" ? "seconds to target" : "epochs to target";
  $("#api-csv").href = `/api/compare?${apiQuery({ format: "csv", table: "summary" })}`;
}

/** A short group label: the fields that tell groups apart, nulls left out, optimizer first. */
function shortLabel(g) {
  const entries = Object.entries(g.fields || {}).filter(([, v]) => v !== null && v !== undefined);
  if (!entries.length) return g.label;
  entries.sort(([a], [b]) => (a === "optimizer" ? -1 : b === "optimizer" ? 1 : 0));
  return entries.map(([k, v]) => (k === "optimizer" ? String(v) : `${k.replace(/^(hparams|model_args)\./, "")}=${v}`)).join(", ");
}

function pm(st, fmt) {
  if (!st || !isNum(st.mean)) return "–";
  return isNum(st.std) ? `${fmt(st.mean)} ± ${fmt(st.std).replace(/^[+−]/, "").replace(/ pp$/, "")}` : fmt(st.mean);
}

function renderTable() {
  const body = $("#summary-body");
  const toTarget = result.x === "time" ? fmtSeconds : (v) => fmtNum(v, 3);
  const rows = result.groups.map((g, i) => {
    const isBase = g.key === result.baseline;
    const speed = isBase
      ? h("span", { class: "muted" }, "baseline")
      : h("span", null,
        h("strong", { class: "speedup" }, isNum(g.speedup) ? `${g.speedup.toFixed(2)}×` : "–"),
        g.speedup_paired && isNum(g.speedup_paired.mean)
          ? h("span", { class: "muted small" }, ` paired ${g.speedup_paired.mean.toFixed(2)}${isNum(g.speedup_paired.std) ? " ± " + g.speedup_paired.std.toFixed(2) : ""} (n=${g.speedup_paired.n})`)
          : null,
        isNum(g.speedup_seconds) ? h("span", { class: "muted small speedup-seconds" }, ` · ${g.speedup_seconds.toFixed(2)}× in seconds`) : null);
    const fd = g.final_diff;
    let diff = h("span", { class: "muted" }, isBase ? "baseline" : "–");
    if (!isBase && fd && isNum(fd.mean)) {
      diff = h("span", { title: fd.paired ? "per-seed differences" : "difference of means (Welch)" },
        h("strong", { class: fd.mean >= 0 ? "pos" : "neg" }, fmtPts(fd.mean)),
        isNum(fd.std) ? ` ± ${Math.abs(100 * fd.std).toFixed(2)}` : "",
        h("span", { class: "muted small" }, ` ${fd.paired ? "paired" : "unpaired"}, n=${fd.n}${isNum(fd.se) ? `, SE ${Math.abs(100 * fd.se).toFixed(2)}` : ""}`));
    }
    const tt = g.to_target;
    return h("tr", { class: isBase ? "baseline" : null, dataset: { group: g.key } },
      h("td", null, h("span", { class: "swatch", dataset: { color: BC.color(i) } }), h("span", { class: "group-label", title: g.label }, shortLabel(g)),
        isBase ? h("span", { class: "badge" }, "baseline") : null),
      h("td", { class: "num group-n" }, String(g.n)),
      h("td", { class: "small" }, g.seeds.join(", ")),
      h("td", { class: "num" }, pm(g.best, fmtAcc)),
      h("td", { class: "num" }, pm(g.final, fmtAcc)),
      h("td", { class: "num" }, tt && tt.reached ? `${pm(tt, toTarget)} ` : "not reached ",
        h("span", { class: "muted small" }, `(${tt ? tt.reached : 0}/${g.n})`)),
      h("td", { class: "num to-target-seconds" }, g.to_target_seconds && g.to_target_seconds.reached ? pm(g.to_target_seconds, fmtSeconds) : "–"),
      h("td", { class: "num" }, speed),
      h("td", { class: "num" }, diff),
      h("td", { class: "small run-links" }, ...g.run_ids.flatMap((id, j) => [j ? " " : null, h("a", { href: `/runs/${id}` }, `#${id}`)])));
  });
  body.replaceChildren(...rows);
  paintSwatches(body);
}

// -------------------------------------------------------------------- charts

function chartData(chart) {
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
      line.y.push(...BC.smooth(r.series[metric], state.smooth));
      lines.set(r.group, line);
    }
    for (const [key, line] of lines) {
      const i = groupIndex.get(key) ?? 0;
      traces.push({
        x: line.x, y: line.y, type: "scatter", mode: "lines", connectgaps: false,
        name: BC.escapeForPlotly(`${line.n} runs`), legendgroup: key, showlegend: false,
        opacity: 0.35, line: { width: 1, color: BC.color(i) }, hoverinfo: "skip",
      });
    }
  }
  result.groups.forEach((g, i) => {
    const s = g.series;
    const mean = BC.smooth(s.mean[metric], state.smooth);
    const sd = BC.smooth(s.std[metric], state.smooth);
    const label = `${shortLabel(g)} (n=${g.n})`;
    const bands = BC.bandTraces({
      name: BC.escapeForPlotly(label), color: BC.color(i), xs: s.x, ys: mean, sd, ns: s.n, legendgroup: g.key, positive,
    });
    if (positive) {
      // On a log axis only the all-zero groups get a legend entry, saying why nothing shows.
      const zero = BC.allZero(mean);
      zeros += zero;
      const line = bands[2];
      line.showlegend = zero;
      if (zero) line.name = `${line.name}: ${chart.log ? BC.ZERO_NOTE : "all 0, not drawn on log axis"}`;
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

async function renderCharts() {
  if (!hasEpochs()) return; // the empty state stands (see renderEmpty)
  if (firstRender) performance.mark("bamsprod:plotly");
  const xTitle = result.x === "time" ? "seconds" : "epoch";
  const maxEpoch = Math.max(1, ...result.groups.map((g) => g.series.epoch[g.series.epoch.length - 1] || 1));
  const jobs = [];
  plotted = [];
  const charts = placeCharts();
  for (const chart of charts) {
    const { traces, rows, zeros } = chartData(chart);
    plotted.push(...rows);
    const ylog = chart.log || (chart.logy && state.logy);
    const ticks = result.x === "epoch" && !state.logx ? BC.epochTicks(maxEpoch) : {};
    const layout = BC.layout(chart.heading, xTitle, chart.y, {
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
      ? window.Plotly.newPlot(el, traces, layout, BC.CONFIG).then(BC.fitLegend)
      : window.Plotly.react(el, traces, BC.keepLegendRoom(el, layout), BC.CONFIG));
  }
  await Promise.all(jobs);
  if (firstRender) {
    firstRender = false;
    window.__bamsprodRendered = performance.now();
    document.body.dataset.rendered = "1";
  }
}

/** The charts for the compared metric, their boxes put in that order; "log y" names the
 * charts it turns. */
function placeCharts() {
  const charts = compareCharts(result ? result.metric : state.metric);
  $(".charts").append(...charts.map((c) => document.getElementById(c.id)));
  $("#logy-charts").textContent = `(${charts.filter((c) => c.logy).map((c) => c.title.toLowerCase()).join(", ")})`;
  return charts;
}

function csvOfPlot() {
  const cols = ["metric", "group", "label", "epoch", result.x === "time" ? "seconds" : "x", "n", "mean", "std", "lower", "upper"];
  const text = toCsv(cols, plotted);
  const name = state.sweep ? `compare-sweep-${state.sweep}.csv` : `compare-runs-${(state.runs || "").replace(/,/g, "-").slice(0, 60)}.csv`;
  download(name, `# smoothing=${state.smooth} group_by=${state.group_by || "config"} baseline=${result.baseline || ""}\n` + text);
}

// ------------------------------------------------------------------ wiring

$("#controls").addEventListener("submit", (e) => {
  e.preventDefault();
  readControls();
  readView();
  writeUrl();
  load();
});
for (const id of ["#c-baseline", "#c-metric"]) {
  $(id).addEventListener("change", () => { readControls(); writeUrl(); load(); });
}
for (const r of $$('input[name="x"]')) r.addEventListener("change", () => { readControls(); writeUrl(); load(); });
for (const id of ["#c-logx", "#c-logy", "#c-indiv", "#c-smooth"]) {
  $(id).addEventListener("input", () => {
    readView();
    writeUrl();
    // The runs' own series come only when asked for: fetch them the first time.
    if (result && state.indiv && result.runs.some((r) => !r.series)) load();
    else if (result) renderCharts();
  });
}
$("#download-csv").addEventListener("click", () => { if (result) csvOfPlot(); });
$("#copy-link").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    toast("link copied");
  } catch (_) {
    toast(location.href);
  }
});

fillControls();
placeCharts();
wireApiDownloads();
load();
startTuned();
