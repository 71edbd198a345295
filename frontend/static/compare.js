// Compare: groups of runs (seeds pooled) as mean ± std bands, and per group the paper's two
// measures against a baseline (GET /api/compare). Every control lives in the URL
// (compare_state.js). While any run in the comparison trains, the data is fetched again every
// few seconds and the table (compare_table.js) and plots (compare_charts.js) are updated in
// place. The page's work follows the groups, not the runs: each run's own series is fetched
// (include=runs) only with "runs" ticked, and then a group's runs are ONE trace, so 200 runs in
// 4 groups are 4 SVG paths. (WebGL traces are no way out here: Plotly's scattergl compiles code
// at run time, which the pages' Content-Security-Policy forbids.)

import { api, wireApiDownloads } from "./api.js";
import * as chartHelpers from "./charts.js";
import { $, $$, download, every, fmtDate, h, isActive, pageData, toCsv, toast } from "./common.js";
import { placeCharts, plotColumns, renderCharts } from "./compare_charts.js";
import { apiQuery, fillControls, readControls, readView, state, writeUrl } from "./compare_state.js";
import { countState, renderMeta, renderTable } from "./compare_table.js";
import { onTuning, refreshTuned, stageText, startTuned, tuning } from "./tuned.js";

const LIVE_MS = 3000;

let result = null;
let plotted = []; // rows for the CSV of what is plotted
let live = null;
let loading = null;
let firstData = true;
let preload = (pageData("compare-data") || {}).preload || null;

// ---------------------------------------------------------------------- data

async function load() {
  const intro = !state.runs && !state.sweep;
  $("#intro").hidden = !intro;
  if (intro) { // nothing chosen yet: say how to choose, and offer the recent sweeps
    $("#results").hidden = true;
    showError("");
    setLive(false);
    await renderRecentSweeps();
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
  if (firstData) performance.mark("bamsprod:data");
  firstData = false;
  showError("");
  $("#results").hidden = false;
  renderMeta(result);
  renderStage();
  renderTable(result);
  $("#results .table-wrap").hidden = !result.groups.length; // no header over nothing
  if (hasEpochs()) {
    chartHelpers.setEmpty(null);
    delete document.body.dataset.empty;
    await drawCharts();
  } else {
    await renderEmpty();
  }
  setLive(result.runs.some((r) => isActive(r.state)) || tuningUnderWay());
}

/** A tuned sweep whose stage 1 is still going (its stage 2 comes later, by itself). */
const tuningUnderWay = () => {
  const { rows, settled } = tuning();
  return !!rows && !settled && !!state.sweep;
};

/** The line that says where a tuned sweep stands, its states made fresh from the comparison. */
function renderStage() {
  const { rows } = tuning();
  const el = $("#stage-status");
  if (!rows || !state.sweep) {
    el.hidden = true;
    return;
  }
  for (const r of (result && result.runs) || []) {
    for (const t of rows) if (t.run_states && r.id in t.run_states) t.run_states[r.id] = r.state;
  }
  el.textContent = stageText(rows).title;
  el.hidden = false;
}

// A tuned sweep: each read of its tuning may bring stage 2 (load it: the page goes live by
// itself) or news of stage 1 (say it).
let stage2Seen = -1;
onTuning((rows) => {
  if (!rows || !state.sweep) return;
  const n = rows.reduce((k, t) => k + t.stage2_run_ids.length, 0);
  if (n !== stage2Seen && stage2Seen !== -1) {
    stage2Seen = n;
    load();
    return;
  }
  stage2Seen = n;
  if (!result) return;
  renderStage();
  if (!hasEpochs()) renderEmpty();
  setLive(result.runs.some((r) => isActive(r.state)) || tuningUnderWay());
});

/** The intro's list: the newest sweeps, each a link to its comparison. */
async function renderRecentSweeps() {
  let page;
  try {
    page = await api("/api/sweeps?limit=10");
  } catch (e) {
    showError(`could not list the sweeps: ${e.message}`);
    return;
  }
  const items = page.items.map((sw) => h("li", null,
    h("a", { href: `/compare?sweep=${sw.id}` }, `sweep ${sw.id}`), " ",
    h("span", { class: "sweep-name" }, sw.name || ""), " ",
    h("span", { class: "muted small" }, [
      `${sw.n_runs} run${sw.n_runs === 1 ? "" : "s"}`,
      sw.definition && sw.definition.strategy === "tune" ? "tuned, then seeded" : "",
      fmtDate(sw.created_at),
    ].filter(Boolean).join(" · "))));
  $("#recent-sweeps").replaceChildren(...items);
  $("#no-sweeps").hidden = items.length > 0;
  document.body.dataset.intro = "1";
}

const hasEpochs = () => result.groups.some((g) => g.series.epoch.length);

async function drawCharts() {
  if (hasEpochs()) plotted = await renderCharts(result); // else the empty state stands
}

/** No run has an epoch yet: say what is coming instead of drawing empty axes. */
async function renderEmpty() {
  if (state.sweep && tuning().sweep !== state.sweep) await refreshTuned(); // read it first
  const { rows } = tuning();
  if (rows && state.sweep && state.stage !== "1" && !result.runs.length) {
    // A tuned sweep in stage 1: its stage 2 (what this page compares) does not exist yet.
    const text = stageText(rows);
    chartHelpers.setEmpty(text.title, text.detail);
    document.body.dataset.empty = "1";
    document.body.dataset.rendered = "1";
    return;
  }
  if (!result.runs.length) {
    chartHelpers.setEmpty("No runs to compare yet", state.sweep ? "Its runs appear here as they are created." : "");
    document.body.dataset.empty = "1";
    return;
  }
  const [queued, running] = [countState(result, "queued"), countState(result, "running")];
  const parts = [];
  if (running) parts.push(`${running} run${running === 1 ? "" : "s"} training`);
  if (queued) {
    let where = "";
    if (!running) {
      // The first queued run's place in the whole queue (other users' runs may go first).
      const first = Math.min(...result.runs.filter((r) => r.state === "queued").map((r) => r.id));
      const ahead = (await api(`/api/runs/${first}`)).queued_ahead;
      if (Number.isInteger(ahead)) where = `, the first is ${chartHelpers.inLine(ahead)}`;
    }
    parts.push(`${queued}${running ? "" : ` run${queued === 1 ? "" : "s"}`} queued${where}`);
  }
  if (parts.length) {
    chartHelpers.setEmpty(`Waiting for epoch 1 — ${parts.join(", ")}`, chartHelpers.comingText(placeCharts(result.metric)));
  } else {
    chartHelpers.setEmpty("No epochs: these runs ended before their first epoch",
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

function csvOfPlot() {
  const text = toCsv(plotColumns(result), plotted);
  const name = state.sweep ? `compare-sweep-${state.sweep}.csv` : `compare-runs-${(state.runs || "").replace(/,/g, "-").slice(0, 60)}.csv`;
  download(name, `# smoothing=${state.smooth} group_by=${state.group_by || "config"} baseline=${result.baseline || ""}\n` + text);
}

// ------------------------------------------------------------------ wiring

$("#controls").addEventListener("submit", (e) => {
  e.preventDefault();
  readControls();
  readView();
  writeUrl();
  stage2Seen = -1;
  refreshTuned();
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
    else if (result) drawCharts();
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
placeCharts(state.metric);
wireApiDownloads();
load();
startTuned();
