// Convex example: GET /api/convex?steps=N&c=C runs it on the server; plot x_t and average
// regret per optimizer.

import { api } from "./api.js";
import * as chartHelpers from "./charts.js";
import { $, fmtNum, h, paintSwatches } from "./common.js";

const form = $("#convex-form");

function readUrl() {
  const p = new URLSearchParams(location.search);
  if (p.get("steps")) $("#steps").value = p.get("steps");
  if (p.get("c")) $("#c").value = p.get("c");
  return p.has("steps");
}

async function run() {
  const steps = $("#steps").value.trim() || "3000";
  const c = $("#c").value.trim() || "3";
  history.replaceState(null, "", `?steps=${encodeURIComponent(steps)}&c=${encodeURIComponent(c)}`);
  const btn = $("#run");
  btn.disabled = true;
  $("#status").textContent = "running…";
  $("#error").hidden = true;
  const t0 = performance.now();
  let res;
  try {
    res = await api(`/api/convex?steps=${encodeURIComponent(steps)}&c=${encodeURIComponent(c)}`);
  } catch (e) {
    $("#error").textContent = e.message;
    $("#error").hidden = false;
    $("#status").textContent = "";
    btn.disabled = false;
    return;
  }
  $("#status").textContent = `${res.steps} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  btn.disabled = false;
  await plot(res);
}

/** The same values at every step, to 1e-5 (float32 rounding apart, as AMSGrad's and
 * BAMSProd's x are here): drawn later, one line hides the other at any zoom. */
function same(a, b) {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= 1e-5 * Math.max(1, Math.abs(v)));
}

/**
 * Per optimizer, the one drawn over it with the very same values, if any: Plotly draws later
 * traces on top, so the earlier line would be invisible while its legend entry stays. The
 * legend says so ("amsgrad = bamsprod, hidden under it"), as does the table.
 */
export function hiddenUnder(res, names, key) {
  const out = {};
  names.forEach((n, i) => {
    const over = names.slice(i + 1).reverse().find((m) => same(res.optimizers[n][key], res.optimizers[m][key]));
    if (over) out[n] = over;
  });
  return out;
}

async function plot(res) {
  const Plotly = await chartHelpers.plotly();
  const names = Object.keys(res.optimizers);
  const ts = Array.from({ length: res.steps }, (_, i) => i + 1);
  const hidden = { x: hiddenUnder(res, names, "x"), avg_regret: hiddenUnder(res, names, "avg_regret") };
  const trace = (name, i, key) => ({
    x: ts, y: res.optimizers[name][key], type: "scatter", mode: "lines",
    name: hidden[key][name] ? `${name} = ${hidden[key][name]} (hidden under it)` : name,
    line: { width: 2, color: chartHelpers.color(i), dash: ["solid", "dash", "dot", "dashdot"][i % 4] },
  });
  const xT = names.map((n, i) => trace(n, i, "x"));
  const reg = names.map((n, i) => trace(n, i, "avg_regret"));
  await Promise.all([
    Plotly.react("chart-x", xT, chartHelpers.layout("Latent weight x_t", "step t", "x_t", { yaxis: { range: [-1.1, 1.1] }, hovermode: "x" }), chartHelpers.CONFIG),
    Plotly.react("chart-regret", reg, chartHelpers.layout("Average regret R_t / t", "step t", "average regret", { xaxis: { type: "log" }, hovermode: "x" }), chartHelpers.CONFIG),
  ]);
  $("#convex-body").replaceChildren(...names.map((n, i) => h("tr", null,
    h("td", null, h("span", { class: "swatch", dataset: { color: chartHelpers.color(i) } }), n,
      hidden.x[n] ? h("span", { class: "muted small" }, ` same path as ${hidden.x[n]}: its line hides this one`) : null),
    h("td", { class: "num" }, fmtNum(res.optimizers[n].final_x, 4)),
    h("td", { class: "num" }, fmtNum(res.optimizers[n].final_regret, 4)))));
  paintSwatches($("#convex-body"));
  $("#convex-table").hidden = false;
  window.__bamsprodRendered = performance.now();
  document.body.dataset.rendered = "1";
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
if (readUrl()) run();
