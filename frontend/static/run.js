// One run: header, progress with ETA, live charts fed by Server-Sent Events, cancel / retry /
// archive / delete, config. The page's entry: it reads the run and its epochs, then hands over
// to its modules, which share one state object (run_state.js): the charts (run_charts.js), the
// panels (run_panels.js) and the live stream (run_live.js).

import { api, wireApiDownloads } from "./api.js";
import { $, isActive, toast } from "./common.js";
import { createCharts, resetCharts } from "./run_charts.js";
import { connect } from "./run_live.js";
import { renderConfig, renderProgress, renderRun } from "./run_panels.js";
import { runId, state } from "./run_state.js";

// ------------------------------------------------------------------- actions

async function act(path, label) {
  try {
    state.run = await api(`/api/runs/${runId}/${path}`, { method: "POST" });
    renderRun();
    const { run } = state;
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
  const path = state.run.archived ? "unarchive" : "archive";
  try {
    state.run = { ...state.run, ...(await api(`/api/runs/${runId}/${path}`, { method: "POST" })) };
    renderRun();
    toast(state.run.archived ? "archived: the runs table leaves it out (its archived view lists it)" : "back in the runs table");
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
  if (state.stream) state.stream.close();
  location.href = `/?deleted=${runId}`;
});
$("#show-defaults").addEventListener("change", () => { if (state.run) renderConfig(); });
wireApiDownloads();

// --------------------------------------------------------------------- start

async function start() {
  let metrics;
  try {
    [state.run, metrics] = await Promise.all([api(`/api/runs/${runId}`), api(`/api/runs/${runId}/metrics`)]);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  const items = metrics.items;
  state.lastEpoch = items.length ? items[items.length - 1].epoch : -1;
  state.seconds = items.map((m) => m.seconds).filter(Number.isFinite);
  if (items.length) state.charts = createCharts(items); // before renderRun: no empty state then
  renderRun();
  renderConfig();
  await state.charts;
  renderProgress();
  if (isActive(state.run.state)) connect();
}
start();
