// The compare page's state: what the URL says (every control lives in it), the controls that
// show it, and the /api/compare query it makes.

import { $, $$, h } from "./common.js";

const API_KEYS = ["runs", "sweep", "stage", "group_by", "baseline", "target", "metric", "x"];

export function readUrl() {
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

/** The page's state, read from the URL once; the controls and writeUrl keep the two in step. */
export const state = readUrl();

export function writeUrl() {
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

export function apiQuery(extra = {}) {
  const p = new URLSearchParams();
  for (const k of API_KEYS) if (state[k]) p.set(k, state[k]);
  if (state.indiv) p.set("include", "runs");
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

// ------------------------------------------------------------------ controls

export function fillControls() {
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

export function readControls() {
  state.runs = $("#c-runs").value.replace(/\s+/g, "");
  state.sweep = $("#c-sweep").value.trim();
  state.group_by = $("#c-group_by").value.replace(/\s+/g, "");
  state.baseline = $("#c-baseline").value;
  state.metric = $("#c-metric").value;
  state.target = $("#c-target").value.trim();
  state.x = ($$('input[name="x"]').find((r) => r.checked) || {}).value || "epoch";
}

export function readView() {
  state.logx = $("#c-logx").checked;
  state.logy = $("#c-logy").checked;
  state.indiv = $("#c-indiv").checked;
  state.smooth = Number($("#c-smooth").value) || 0;
  $("#smooth-out").textContent = String(state.smooth);
}
