// The run page's charts: drawn at the first epoch, then new epochs go in with
// Plotly.extendTraces, so the plots are never re-created and zoom stays. Until the first epoch
// the charts are not drawn: an empty state says what is coming.

import { api } from "./api.js";
import * as chartHelpers from "./charts.js";
import { every } from "./common.js";
import { forgetEpochs, runData, runId, state } from "./run_state.js";

// Each chart, from the server's one metric declaration (core/metric_schema.py): traces by
// metric as [metric, name] (extendTraces appends to these indices, in this order). The chart
// marked `layers` gets one more trace per binary layer (quant_error_layers) after them.
const CHARTS = Object.fromEntries(runData.charts.map((c) => [c.id, c]));
const LAYERED = runData.charts.find((c) => c.layers) || null;

function layersOf(epochs) {
  const names = new Set();
  for (const m of epochs) for (const k of Object.keys(m.quant_error_layers || {})) names.add(k);
  return [...names].sort();
}

/** Draw every chart with these epochs (the first ones). */
export async function createCharts(epochs) {
  const Plotly = await chartHelpers.plotly();
  const jobs = [];
  state.layerNames = layersOf(epochs);
  for (const [id, spec] of Object.entries(CHARTS)) {
    const data = spec.traces.map(([metric, label], i) => ({
      x: epochs.map((m) => m.epoch),
      y: epochs.map((m) => m[metric]),
      name: label,
      mode: "lines+markers",
      type: "scatter",
      marker: { size: 4 },
      line: { width: 2, color: chartHelpers.color(i) },
    }));
    if (spec.layers) {
      state.layerNames.forEach((layer, j) => data.push({
        x: epochs.map((m) => m.epoch),
        y: epochs.map((m) => (m.quant_error_layers || {})[layer] ?? null),
        name: chartHelpers.escapeForPlotly(layer),
        mode: "lines",
        type: "scatter",
        line: { width: 1, dash: "dot", color: chartHelpers.color(j + 2) },
      }));
    }
    const total = state.run.epochs;
    const xaxis = { ...chartHelpers.epochTicks(total), range: [0.7, Math.max(total, 1) + 0.3] };
    const layout = chartHelpers.layout(spec.title, "epoch", spec.y, { yaxis: spec.yaxis || {}, xaxis });
    jobs.push(Plotly.newPlot(id, data, layout, chartHelpers.CONFIG).then(chartHelpers.fitLegend));
  }
  await Promise.all(jobs);
  await markZeros();
  window.__bamsprodRendered = performance.now();
}

/** Bop's weights are ±1: its quantization error is exactly 0, which a log axis cannot draw. */
function markZeros() {
  if (!LAYERED) return Promise.resolve();
  const names = [...LAYERED.traces.map(([, name]) => name), ...state.layerNames.map((l) => chartHelpers.escapeForPlotly(l))];
  return chartHelpers.markZeroTraces(document.getElementById(LAYERED.id), names);
}

/** Append epochs to the charts drawn already. */
export async function extendCharts(items) {
  const Plotly = await chartHelpers.plotly(); // drawn already: at once
  const newLayers = layersOf(items).filter((l) => !state.layerNames.includes(l));
  if (LAYERED && newLayers.length) {
    // Layers seen for the first time: add their (empty) traces, then extend as usual.
    await Plotly.addTraces(LAYERED.id, newLayers.map((layer, j) => ({
      x: [], y: [], name: chartHelpers.escapeForPlotly(layer), mode: "lines", type: "scatter",
      line: { width: 1, dash: "dot", color: chartHelpers.color(state.layerNames.length + j + 2) },
    })));
    state.layerNames = state.layerNames.concat(newLayers);
  }
  for (const [id, spec] of Object.entries(CHARTS)) {
    const xs = [];
    const ys = [];
    const idx = [];
    spec.traces.forEach(([metric], i) => {
      xs.push(items.map((m) => m.epoch));
      ys.push(items.map((m) => m[metric]));
      idx.push(i);
    });
    if (spec.layers) {
      state.layerNames.forEach((layer, j) => {
        xs.push(items.map((m) => m.epoch));
        ys.push(items.map((m) => (m.quant_error_layers || {})[layer] ?? null));
        idx.push(spec.traces.length + j);
      });
    }
    Plotly.extendTraces(id, { x: xs, y: ys }, idx);
  }
  await markZeros();
}

/** Back to the empty state (a retried run starts from epoch 1 again). */
export async function resetCharts() {
  const drawn = forgetEpochs();
  if (drawn) {
    await drawn;
    const Plotly = await chartHelpers.plotly();
    for (const id of Object.keys(CHARTS)) {
      const div = document.getElementById(id);
      Plotly.purge(div);
      delete div.__legendBase;
      delete div.__legendRoom;
    }
  }
  renderEmpty();
}

/** What is coming, while there is no epoch to draw. */
export function renderEmpty() {
  const { run } = state;
  if (!run) return;
  const waiting = run.state === "queued" && !state.charts;
  if (waiting && !state.queuePoll) {
    state.queuePoll = every(3000, async () => {
      const fresh = await api(`/api/runs/${runId}`);
      if (state.run.state === "queued" && fresh.state === "queued") state.run.queued_ahead = fresh.queued_ahead;
      renderEmpty();
    });
  } else if (!waiting && state.queuePoll) {
    state.queuePoll.stop();
    state.queuePoll = null;
  }
  if (state.charts) return;
  const coming = chartHelpers.comingText(runData.charts);
  if (run.state === "queued") {
    const ahead = run.queued_ahead;
    const where = Number.isInteger(ahead) ? `queued, ${chartHelpers.inLine(ahead)}` : "queued";
    chartHelpers.setEmpty(`Waiting for epoch 1 — ${where}`, coming);
  } else if (run.state === "running" && run.phase) {
    // Before the first epoch: loading data, or building the optimizer's kernel (not timed).
    const detail = run.phase.includes("kernel")
      ? "BAMSProd's fused CPU kernel is compiled once per machine (up to a minute), then loaded "
        + "from its cache. It is not counted in any epoch's time. " + coming
      : coming;
    chartHelpers.setEmpty(`Waiting for epoch 1 — ${run.phase} on ${run.worker_host || "a worker"}`, detail);
  } else if (run.state === "running") {
    chartHelpers.setEmpty(`Waiting for epoch 1 — training on ${run.worker_host || "a worker"}`, coming);
  } else {
    chartHelpers.setEmpty(`No epochs: the run ended (${run.state}) before its first epoch`,
      run.error ? "The error is shown above." : "Retry it to train it from the start.");
  }
}
