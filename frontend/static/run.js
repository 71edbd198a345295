// One run: header, progress with ETA, live charts fed by Server-Sent Events
// (GET /api/runs/{id}/events, resumable by epoch), cancel / retry, config.
// New epochs go in with Plotly.extendTraces: the plots are never re-created, so zoom stays.
// Until the first epoch the charts are not drawn: an empty state says what is coming.

import { api, openEvents, wireApiDownloads } from "./api.js";
import * as chartHelpers from "./charts.js";
import { $, fmtAcc, fmtDate, fmtNum, fmtSeconds, h, isActive, pageData, shown, stateBadge, toast, every } from "./common.js";
import { SECTIONS } from "./fields.js";

const runData = pageData("run-data");
const runId = runData.run_id;

// Each chart, from the server's one metric declaration (core/metric_schema.py): traces by
// metric as [metric, name] (extendTraces appends to these indices, in this order). The chart
// marked `layers` gets one more trace per binary layer (quant_error_layers) after them.
const CHARTS = Object.fromEntries(runData.charts.map((c) => [c.id, c]));
const LAYERED = runData.charts.find((c) => c.layers) || null;

let run = null;
let lastEpoch = -1;
let seconds = []; // per-epoch durations, for the ETA
let es = null;
let charts = null; // Promise resolved when the plots exist (null before the first epoch)
let queuePoll = null; // refreshes queued_ahead while the run waits in the queue
let layerNames = []; // per-layer quantization error traces, after the mean trace
let pending = [];
let flushQueued = false;

// ---------------------------------------------------------------- charts

async function createCharts(epochs) {
  const Plotly = await chartHelpers.plotly();
  const jobs = [];
  layerNames = layersOf(epochs);
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
      layerNames.forEach((layer, j) => data.push({
        x: epochs.map((m) => m.epoch),
        y: epochs.map((m) => (m.quant_error_layers || {})[layer] ?? null),
        name: chartHelpers.escapeForPlotly(layer),
        mode: "lines",
        type: "scatter",
        line: { width: 1, dash: "dot", color: chartHelpers.color(j + 2) },
      }));
    }
    const total = run.epochs;
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
  const names = [...LAYERED.traces.map(([, name]) => name), ...layerNames.map((l) => chartHelpers.escapeForPlotly(l))];
  return chartHelpers.markZeroTraces(document.getElementById(LAYERED.id), names);
}

function layersOf(epochs) {
  const names = new Set();
  for (const m of epochs) for (const k of Object.keys(m.quant_error_layers || {})) names.add(k);
  return [...names].sort();
}

/** Append buffered epochs to every chart, once per animation frame. */
function queueEpochs(items) {
  for (const m of items) {
    if (m.epoch <= lastEpoch) continue;
    lastEpoch = m.epoch;
    if (Number.isFinite(m.seconds)) seconds.push(m.seconds);
    pending.push(m);
  }
  if (pending.length && !flushQueued) {
    flushQueued = true;
    requestAnimationFrame(flush);
  }
}

async function flush() {
  flushQueued = false;
  const items = pending;
  pending = [];
  if (!items.length) return;
  if (!charts) { // the first epoch: draw the charts now
    chartHelpers.setEmpty(null);
    charts = createCharts(items);
    await charts;
  } else {
    await charts;
    await extendCharts(items);
  }
  renderProgress();
  renderInfo();
}

async function extendCharts(items) {
  const Plotly = await chartHelpers.plotly(); // drawn already: at once
  const newLayers = layersOf(items).filter((l) => !layerNames.includes(l));
  if (LAYERED && newLayers.length) {
    // Layers seen for the first time: add their (empty) traces, then extend as usual.
    await Plotly.addTraces(LAYERED.id, newLayers.map((layer, j) => ({
      x: [], y: [], name: chartHelpers.escapeForPlotly(layer), mode: "lines", type: "scatter",
      line: { width: 1, dash: "dot", color: chartHelpers.color(layerNames.length + j + 2) },
    })));
    layerNames = layerNames.concat(newLayers);
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
      layerNames.forEach((layer, j) => {
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
async function resetCharts() {
  const drawn = charts;
  charts = null;
  lastEpoch = -1;
  seconds = [];
  pending = [];
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
function renderEmpty() {
  if (!run) return;
  const waiting = run.state === "queued" && !charts;
  if (waiting && !queuePoll) {
    queuePoll = every(3000, async () => {
      const fresh = await api(`/api/runs/${runId}`);
      if (run.state === "queued" && fresh.state === "queued") run.queued_ahead = fresh.queued_ahead;
      renderEmpty();
    });
  } else if (!waiting && queuePoll) {
    queuePoll.stop();
    queuePoll = null;
  }
  if (charts) return;
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

// -------------------------------------------------------------- header

function renderRun() {
  $("#run-name").textContent = shown(run.name || `run ${run.id}`);
  $("#run-state").replaceWith(Object.assign(stateBadge(run.state, run.cancel_requested), { id: "run-state" }));
  document.title = `${shown(run.name || "Run " + run.id)} · ${run.state} · bamsprod`;
  $("#cancel").hidden = !isActive(run.state) || run.cancel_requested;
  $("#retry").hidden = isActive(run.state);
  $("#delete").hidden = run.state === "running"; // a running run is cancelled first
  $("#archive").hidden = false;
  $("#archive").textContent = run.archived ? "Unarchive" : "Archive";
  $("#run-archived").hidden = !run.archived;
  const err = $("#run-error");
  let text = run.error || "";
  if (run.state === "diverged" && run.diverged_epoch !== null) {
    text = `diverged at epoch ${run.diverged_epoch}` + (text ? `: ${text}` : "");
  }
  err.textContent = text;
  err.hidden = !text;
  renderProgress();
  renderInfo();
  renderEmpty();
}

function renderProgress() {
  if (!run) return;
  const done = Math.max(run.epochs_done || 0, lastEpoch > 0 ? lastEpoch : 0);
  const total = run.epochs;
  const bar = $("#progress");
  bar.max = total;
  bar.value = Math.min(done, total);
  bar.className = `state-${run.state}`;
  let text = `epoch ${done} of ${total}`;
  if (run.state === "running" && run.phase && !seconds.length) {
    text += ` · ${run.phase}`;
  } else if (run.state === "running" && seconds.length) {
    const avg = seconds.slice(-10).reduce((a, b) => a + b, 0) / Math.min(seconds.length, 10);
    text += ` · ${fmtSeconds(avg)}/epoch · ETA ${fmtSeconds(avg * Math.max(0, total - done))}`;
  } else if (run.state === "queued") {
    text += " · waiting for a worker";
  } else if (run.state === "succeeded" && seconds.length) {
    text += ` · took ${fmtSeconds(seconds.reduce((a, b) => a + b, 0))}`;
  }
  $("#progress-text").textContent = text;
  $("#live").hidden = !isActive(run.state);
}

function kvRows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v))));
}

/** The run's config as the form groups it (Run, Data, Model, Optimizer, Other), each field
 * by its form label; a nested one (an optimizer's hyperparameter) by its own name. Fields at
 * their default are hidden unless "show defaults" is ticked; no internal key is shown. */
function renderConfig() {
  const opts = runData.options || { fields: [], optimizers: {}, models: {} };
  const cfg = run.config || {};
  const specs = Object.fromEntries(opts.fields.map((f) => [f.name, f]));
  const nested = {
    hparams: (opts.optimizers[cfg.optimizer] || {}).hparams || {},
    model_args: ((opts.models[cfg.model] || {}).args) || {},
  };
  const showDefaults = $("#show-defaults").checked;
  const rows = [];
  const placed = new Set(["schema_version"]);
  const empty = (v) => v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length);
  const row = (label, value, dflt, key) => {
    // Left as it was: the default, or nothing given where the default is nothing.
    const isDefault = (dflt !== undefined && JSON.stringify(value) === JSON.stringify(dflt))
      || (empty(value) && (dflt === null || empty(dflt)));
    if (isDefault && !showDefaults) return null;
    return h("tr", { dataset: { key } }, h("th", null, label),
      h("td", { class: isDefault ? "default" : null, title: isDefault ? "the default" : null }, fmtValue(value)));
  };
  const rest = Object.keys(cfg).filter((k) => !SECTIONS.some(([, ks]) => ks.includes(k) || ks.includes(`@${k}`)));
  for (const [title, keys] of [...SECTIONS, ["Other", rest]]) {
    const body = [];
    for (const key of keys) {
      if (key.startsWith("@")) {
        const group = key.slice(1);
        placed.add(group);
        for (const [name, value] of Object.entries(cfg[group] || {})) {
          const spec = nested[group][name];
          body.push(row(name.replace(/_/g, " "), value, spec ? spec.default : undefined, `${group}.${name}`));
        }
        continue;
      }
      if (!(key in cfg) || placed.has(key)) continue;
      placed.add(key);
      const spec = specs[key];
      let dflt = spec ? spec.default : undefined;
      // lr left empty means the optimizer's default; one given is compared with that default.
      if (key === "lr" && (dflt === null || dflt === undefined) && cfg.lr !== null) dflt = (opts.optimizers[cfg.optimizer] || {}).default_lr;
      if (["optimizer", "model", "dataset", "epochs", "seed"].includes(key)) dflt = undefined; // always said
      body.push(row(spec ? spec.label : key.replace(/_/g, " "), cfg[key], dflt, key));
    }
    const shown = body.filter(Boolean);
    if (!shown.length) continue;
    rows.push(h("tr", { class: "config-section" }, h("th", { colspan: "2" }, title)), ...shown);
  }
  $("#config-table").replaceChildren(...rows);
}

function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "–";
  return String(v);
}

function renderInfo() {
  kvRows($("#info-table"), [
    ["state", run.state + (run.cancel_requested && isActive(run.state) ? " (cancel requested)" : "")],
    ["best test acc", run.best_test_acc === null ? "–" : `${fmtAcc(run.best_test_acc)} (epoch ${run.best_epoch})`],
    ["last test acc", fmtAcc(run.last_test_acc)],
    // Final once the run has ended; while it trains, the last epoch's.
    [!isActive(run.state) ? "final quant error" : run.last_epoch ? `quant error (epoch ${run.last_epoch})` : "quant error", fmtNum(run.final_quant_error)],
    ["created", fmtDate(run.created_at)],
    ["started", fmtDate(run.started_at)],
    ["finished", fmtDate(run.finished_at)],
    ["worker", run.worker_host || "–"],
    ["device", run.device || "–"],
    ["attempts / retries", `${run.attempts} / ${run.retries}`],
    ["config hash", run.config_hash],
    ["sweep", run.sweep_id ? String(run.sweep_id) : "–"],
    ["plugins", (run.plugins || []).length
      ? run.plugins.map((p) => `${p.kind} ${p.name}: ${p.dist} ${p.version}`).join("; ")
      : "none (built-ins)"],
  ]);
  const sweepLink = run.sweep_id ? `/compare?sweep=${run.sweep_id}` : `/compare?runs=${run.id}`;
  $("#compare-link").href = sweepLink;
  renderEnvironment();
}

/** Where the run trained (recorded by the worker as it started): its seconds compare only
 * with runs of the same environment. */
function renderEnvironment() {
  const env = run.environment;
  if (!env) {
    kvRows($("#env-table"), [["recorded", "when a worker starts the run"]]);
    return;
  }
  const source = env.bamsprod || {};
  kvRows($("#env-table"), [
    ["device", env.device_name || "–"],
    ["threads", fmtValue(env.threads)],
    ["torch", env.torch || "–"],
    ["python", env.python || "–"],
    ["bamsprod", source.commit ? `${source.version} (${source.commit.slice(0, 12)})` : fmtValue(source.version)],
  ]);
}

// --------------------------------------------------------------- events

/** The live stream: epochs, the run's summary and its state, until the run ends. */
async function connect() {
  if (es) es.close();
  es = null;
  let source = null;
  const stop = () => {
    source.close();
    if (es === source) es = null;
  };
  const handlers = {
    epoch: (ev) => queueEpochs([JSON.parse(ev.data)]),
    // The run's summary as the server computed it with those epochs (never recomputed here).
    run: (ev) => {
      run = { ...JSON.parse(ev.data), queued_ahead: run ? run.queued_ahead : null };
      renderProgress();
      renderInfo();
    },
    state: (ev) => {
      const next = JSON.parse(ev.data);
      // The stream's run carries no queue position: keep the last one read while still queued.
      if (run && next.state === "queued" && !Number.isInteger(next.queued_ahead)) next.queued_ahead = run.queued_ahead;
      const restarted = run && !isActive(run.state) && isActive(next.state);
      run = next;
      renderRun();
      if (!isActive(run.state)) stop();
      else if (restarted) resetCharts();
    },
    deleted: () => {
      stop();
      toast("this run was deleted", true);
    },
    error: () => {
      // The browser reconnects on its own (with Last-Event-ID); once the run has ended, stop.
      if (run && !isActive(run.state)) {
        stop();
      } else if (source.readyState === EventSource.CLOSED && es === source) {
        // It gave up (e.g. its ticket expired before a reconnect): a fresh ticket, shortly.
        es = null;
        setTimeout(() => { if (!es) connect(); }, 2000);
      }
    },
  };
  try {
    source = await openEvents(runId, handlers, { after: lastEpoch < 0 ? -1 : lastEpoch });
  } catch (e) {
    toast(`live updates: ${e.message}`, true);
    return;
  }
  if (es) es.close(); // a newer connect() won the race
  es = source;
}

async function act(path, label) {
  try {
    run = await api(`/api/runs/${runId}/${path}`, { method: "POST" });
    renderRun();
    const pending = run.cancel_requested && isActive(run.state);
    toast(pending ? "cancel requested: the worker stops the run shortly" : `${label}: run is ${run.state}`);
    if (path === "retry") {
      await resetCharts();
      connect();
    }
  } catch (e) {
    toast(`${label} failed: ${e.message}`, true);
  }
}

$("#cancel").addEventListener("click", () => {
  if (confirm("Cancel this run?")) act("cancel", "cancel");
});
$("#retry").addEventListener("click", () => act("retry", "retry"));
$("#archive").addEventListener("click", async () => {
  const path = run.archived ? "unarchive" : "archive";
  try {
    run = { ...run, ...(await api(`/api/runs/${runId}/${path}`, { method: "POST" })) };
    renderRun();
    toast(run.archived ? "archived: the runs table leaves it out (its archived view lists it)" : "back in the runs table");
  } catch (e) {
    toast(`${path} failed: ${e.message}`, true);
  }
});
$("#delete").addEventListener("click", async () => {
  if (!confirm(`Delete run ${runId}, its epochs and its checkpoint? This cannot be undone.`)) return;
  try {
    await api(`/api/runs/${runId}`, { method: "DELETE" });
  } catch (e) {
    toast(`delete failed: ${e.message}`, true);
    return;
  }
  if (es) es.close();
  location.href = `/?deleted=${runId}`;
});
$("#show-defaults").addEventListener("change", () => { if (run) renderConfig(); });
wireApiDownloads();

async function start() {
  let metrics;
  try {
    [run, metrics] = await Promise.all([api(`/api/runs/${runId}`), api(`/api/runs/${runId}/metrics`)]);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  const items = metrics.items;
  lastEpoch = items.length ? items[items.length - 1].epoch : -1;
  seconds = items.map((m) => m.seconds).filter(Number.isFinite);
  if (items.length) charts = createCharts(items); // before renderRun: no empty state then
  renderRun();
  renderConfig();
  await charts;
  renderProgress();
  if (isActive(run.state)) connect();
}
start();
