// Convex example: GET /api/convex?steps=N&c=C runs it on the server; plot x_t and average
// regret per optimizer.

import { api } from "./api.js";
import * as BC from "./charts.js";
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

async function plot(res) {
  const Plotly = await BC.plotly();
  const names = Object.keys(res.optimizers);
  const ts = Array.from({ length: res.steps }, (_, i) => i + 1);
  const trace = (name, i, key) => ({
    x: ts, y: res.optimizers[name][key], name, type: "scatter", mode: "lines",
    line: { width: 2, color: BC.color(i), dash: ["solid", "dash", "dot", "dashdot"][i % 4] },
  });
  const xT = names.map((n, i) => trace(n, i, "x"));
  const reg = names.map((n, i) => trace(n, i, "avg_regret"));
  await Promise.all([
    Plotly.react("chart-x", xT, BC.layout("Latent weight x_t", "step t", "x_t", { yaxis: { range: [-1.1, 1.1] }, hovermode: "x" }), BC.CONFIG),
    Plotly.react("chart-regret", reg, BC.layout("Average regret R_t / t", "step t", "average regret", { xaxis: { type: "log" }, hovermode: "x" }), BC.CONFIG),
  ]);
  $("#convex-body").replaceChildren(...names.map((n, i) => h("tr", null,
    h("td", null, h("span", { class: "swatch", dataset: { color: BC.color(i) } }), n),
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
