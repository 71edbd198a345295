// New run form, generated from the run config's registries (/api/schema/options, embedded in
// the page). Single mode POSTs /api/runs; sweep mode POSTs /api/sweeps (with a live dry-run
// count). Validation is the server's: 422 errors are shown beside the field they name.

import { api } from "./api.js";
import { $, $$, h, pageData, toast } from "./common.js";

const opts = pageData("options-data");
const SECTIONS = [
  ["Run", ["name", "tags", "epochs", "batch_size", "seed", "device"]],
  ["Data", ["dataset", "data_dir", "train_subset", "test_subset"]],
  ["Model", ["model", "@model_args"]],
  ["Optimizer", ["optimizer", "lr", "@hparams", "scheduler"]],
];
// Fields whose values a sweep may list; seed is set by "seeds per combination" instead.
const NOT_SWEPT = new Set(["name", "tags", "data_dir", "seed"]);
const form = $("#run-form");
const widgets = new Map(); // key -> widget
const nested = { hparams: new Map(), model_args: new Map() }; // kept values while switching
let sweep = false;
let lrTouched = false;

// ------------------------------------------------------------------ widgets

function fieldBox(key, label, help) {
  const id = `f-${key.replace(/\./g, "-")}`;
  const err = h("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  const box = h("div", { class: "field", dataset: { field: key } });
  return { id, box, err, label: h("label", { for: id }, label), help: help ? h("span", { class: "help" }, help) : null };
}

function rangeHelp(spec) {
  const parts = [];
  if (spec.help) parts.push(spec.help);
  if (spec.min !== null && spec.min !== undefined && spec.max !== null && spec.max !== undefined) {
    parts.push(`${spec.min_exclusive ? "(" : "["}${spec.min}, ${spec.max}]`);
  }
  return parts.join(" · ");
}

function makeWidget(key, spec) {
  const f = fieldBox(key, spec.label || key.split(".").pop().replace(/_/g, " "), rangeHelp(spec));
  const sweepable = !NOT_SWEPT.has(key) && ["enum", "int", "float"].includes(spec.type);
  const w = { key, spec, box: f.box, sweepable };
  w.setError = (msg) => {
    f.err.textContent = msg || "";
    f.box.classList.toggle("has-error", !!msg);
    if (w.input) w.input.setAttribute("aria-invalid", msg ? "true" : "false");
  };
  if (spec.type === "enum") {
    const select = h("select", { id: f.id, "aria-describedby": f.err.id },
      spec.choices.map((c) => h("option", { value: c }, c)));
    const checks = h("span", { class: "choice-group sweep-only", role: "group", "aria-label": `${key} values` },
      spec.choices.map((c) => h("label", { class: "choice" },
        h("input", { type: "checkbox", value: c, name: `${key}-sweep` }), " ", c)));
    w.input = select;
    w.get = () => (sweep ? $$("input:checked", checks).map((x) => x.value) : select.value);
    w.set = (v) => {
      select.value = v;
      for (const x of $$("input", checks)) x.checked = x.value === v;
    };
    select.addEventListener("change", () => { for (const x of $$("input", checks)) x.checked = x.value === select.value; });
    append(f.box, f.label, h("span", { class: "single-only" }, select), checks, f.help, f.err);
    f.box.classList.toggle("sweepable", true);
    w.onChange = (fn) => { select.addEventListener("change", fn); checks.addEventListener("change", fn); };
  } else if (spec.type === "bool") {
    const box = h("input", { type: "checkbox", id: f.id, "aria-describedby": f.err.id });
    w.input = box;
    w.get = () => box.checked;
    w.set = (v) => { box.checked = !!v; };
    f.box.classList.add("field-bool");
    append(f.box, h("label", { class: "check" }, box, " ", f.label.textContent), f.help, f.err);
    w.onChange = (fn) => box.addEventListener("change", fn);
  } else {
    const numeric = spec.type === "int" || spec.type === "float";
    const input = h("input", {
      id: f.id, type: "text", "aria-describedby": f.err.id, spellcheck: "false",
      inputmode: numeric ? (spec.type === "int" ? "numeric" : "decimal") : null,
      maxlength: spec.type === "str" && spec.max_length ? spec.max_length : null,
      placeholder: spec.nullable ? (key.endsWith("subset") ? "all" : "none") : spec.type === "list" ? "comma, separated" : null,
    });
    w.input = input;
    w.numeric = numeric;
    w.raw = () => input.value.trim();
    w.get = () => {
      const text = input.value.trim();
      if (spec.type === "list") return text ? text.split(",").map((s) => s.trim()).filter(Boolean) : [];
      if (!numeric) return text === "" && spec.nullable ? undefined : text;
      if (text === "") return undefined;
      const parts = sweep && sweepable ? text.split(/[\s,;]+/).filter(Boolean) : [text];
      const nums = parts.map(Number);
      const bad = parts.find((p, i) => !Number.isFinite(nums[i]));
      if (bad !== undefined) throw new FieldError(key, `${JSON.stringify(bad)} is not a number`);
      return sweep && sweepable ? nums : nums[0];
    };
    w.set = (v) => {
      input.value = v === null || v === undefined ? "" : Array.isArray(v) ? v.join(", ") : String(v);
    };
    append(f.box, f.label, input, f.help, f.err);
    if (sweepable) f.box.classList.add("sweepable");
    w.onChange = (fn) => input.addEventListener("input", fn);
  }
  if (spec.default !== undefined && spec.default !== null) w.set(spec.default);
  return w;
}

/** Append the given nodes, skipping null ones. */
function append(parent, ...nodes) {
  parent.append(...nodes.filter((n) => n !== null && n !== undefined));
}

class FieldError extends Error {
  constructor(key, message) {
    super(message);
    this.key = key;
  }
}

// ------------------------------------------------------------ dynamic parts

const fieldSpec = Object.fromEntries(opts.fields.map((f) => [f.name, f]));

/** The chosen values of an enum widget, as a list (one in single mode). */
function chosen(key) {
  const v = widgets.get(key).get();
  return Array.isArray(v) ? v : [v];
}

/** Hyperparameters shared by every chosen optimizer (or model arguments of every model). */
function sharedParams(kind) {
  const names = chosen(kind === "hparams" ? "optimizer" : "model");
  const table = (n) => (kind === "hparams" ? opts.optimizers[n]?.hparams : opts.models[n]?.args) || {};
  if (!names.length) return {};
  const first = table(names[0]);
  const out = {};
  for (const [k, spec] of Object.entries(first)) {
    if (names.every((n) => k in table(n))) out[k] = spec;
  }
  return out;
}

function renderNested(kind) {
  const holder = $(`#nested-${kind}`);
  const keep = nested[kind];
  for (const [k, w] of widgets) {
    if (k.startsWith(`${kind}.`)) {
      try {
        keep.set(k, { raw: w.input.type === "checkbox" ? w.input.checked : w.input.value, spec: w.spec });
      } catch (_) { /* ignore */ }
      widgets.delete(k);
    }
  }
  const params = sharedParams(kind);
  const boxes = [];
  for (const [name, spec] of Object.entries(params)) {
    const key = `${kind}.${name}`;
    const w = makeWidget(key, { ...spec, label: name.replace(/_/g, " ") });
    const old = keep.get(key);
    // Keep what the user typed only if this parameter means the same thing (same default).
    if (old && old.spec.default === spec.default) {
      if (w.input.type === "checkbox") w.input.checked = old.raw;
      else w.input.value = old.raw;
    }
    w.onChange(scheduleCount);
    widgets.set(key, w);
    boxes.push(w.box);
  }
  const names = chosen(kind === "hparams" ? "optimizer" : "model");
  holder.replaceChildren(...boxes);
  if (!boxes.length) {
    holder.append(h("p", { class: "muted small" },
      names.length ? `no ${kind === "hparams" ? "hyperparameters" : "arguments"} shared by ${names.join(", ")}` : "choose at least one"));
  }
}

function defaultLr() {
  const names = chosen("optimizer");
  const lrs = [...new Set(names.map((n) => opts.optimizers[n]?.default_lr).filter((x) => x !== undefined))];
  return lrs;
}

function updateLr() {
  const w = widgets.get("lr");
  if (!w) return;
  const lrs = defaultLr();
  w.input.placeholder = lrs.length === 1 ? `default ${lrs[0]}` : "per-optimizer default";
  if (!lrTouched) w.input.value = lrs.length === 1 ? String(lrs[0]) : "";
}

// ------------------------------------------------------------------- build

function build() {
  const holder = $("#form-sections");
  const placed = new Set();
  const sections = SECTIONS.map(([title, keys]) => [title, keys]);
  const rest = opts.fields.map((f) => f.name).filter((n) => !SECTIONS.some(([, ks]) => ks.includes(n)));
  if (rest.length) sections.push(["Other", rest]);
  for (const [title, keys] of sections) {
    const fs = h("fieldset", { class: "section" }, h("legend", null, title));
    for (const key of keys) {
      if (key.startsWith("@")) {
        const kind = key.slice(1);
        fs.append(h("div", { class: "nested", id: `nested-${kind}`, dataset: { kind } }));
        continue;
      }
      const spec = fieldSpec[key];
      if (!spec) continue;
      const w = makeWidget(key, spec);
      widgets.set(key, w);
      placed.add(key);
      fs.append(w.box);
      w.onChange(scheduleCount);
    }
    holder.append(fs);
  }
  widgets.get("optimizer")?.onChange(() => { renderNested("hparams"); updateLr(); });
  widgets.get("model")?.onChange(() => renderNested("model_args"));
  widgets.get("lr")?.input.addEventListener("input", () => { lrTouched = true; });
  renderNested("hparams");
  renderNested("model_args");
  updateLr();
  const dataset = widgets.get("dataset");
  const showDataset = () => {
    const names = chosen("dataset");
    const info = names.map((n) => opts.datasets[n]).filter(Boolean);
    const el = dataset.box.querySelector(".help") || dataset.box.insertBefore(h("span", { class: "help" }), dataset.box.querySelector(".field-error"));
    el.textContent = info.length === 1
      ? `${info[0].train} train / ${info[0].test} test, ${info[0].shape.join("×")}, ${info[0].classes} classes`
      : "";
  };
  dataset.onChange(showDataset);
  showDataset();
}

// ------------------------------------------------------------------ collect

/** The run config (single mode) or {base, grid} (sweep mode); FieldError on unparsable input. */
function collect() {
  const base = { hparams: {}, model_args: {} };
  const grid = {};
  for (const [key, w] of widgets) {
    let v = w.get();
    if (v === undefined) continue;
    const [head, sub] = key.split(".");
    if (sweep && w.sweepable && Array.isArray(v)) {
      if (v.length === 0) {
        if (w.spec.type === "enum") throw new FieldError(key, "choose at least one");
        continue;
      }
      v = [...new Set(v)];
      if (v.length > 1) {
        grid[key] = v;
        continue;
      }
      v = v[0];
    }
    if (sub) base[head][sub] = v;
    else base[key] = v;
  }
  return { base, grid };
}

function nSeeds() {
  const text = $("#f-n_seeds").value.trim();
  return text === "" ? 1 : Number(text);
}

function sweepBody() {
  const { base, grid } = collect();
  const body = { name: $("#f-sweep_name").value.trim(), base, grid };
  const n = nSeeds();
  if (!Number.isInteger(n)) throw new FieldError("n_seeds", "a whole number, please");
  body.n_seeds = n;
  return tuning() ? tuneBody(body) : body;
}

const tuning = () => sweep && $("#f-strategy").value === "tune";

/** Tune, then seed: the ticked optimizers are tuned; the learning rate is searched. */
function tuneBody(body) {
  const { base, grid } = body;
  const optimizers = grid.optimizer || [base.optimizer || "bamsprod"];
  delete grid.optimizer;
  const listed = Object.keys(grid);
  if (listed.length) throw new FieldError(listed[0], "tune searches the learning rate: give one value here");
  delete base.optimizer;
  delete base.lr;
  const num = (k) => {
    const text = $(`#f-tune-${k}`).value.trim();
    return text === "" ? undefined : Number(text);
  };
  const tune = { optimizers, criterion: $("#f-tune-criterion").value };
  for (const k of ["lr_min", "lr_max", "n_lr", "stage1_epochs"]) {
    const v = num(k);
    if (v !== undefined && !Number.isFinite(v)) throw new FieldError(`tune.${k}`, "a number, please");
    if (v !== undefined) tune[k] = v;
  }
  return { ...body, strategy: "tune", tune };
}

// ------------------------------------------------------------------- errors

function clearErrors() {
  for (const w of widgets.values()) w.setError("");
  for (const el of $$("#sweep-box .field")) {
    el.classList.remove("has-error");
    el.querySelector(".field-error").textContent = "";
  }
  const fe = $("#form-error");
  fe.textContent = "";
  fe.hidden = true;
}

function cleanMsg(msg) {
  return String(msg || "invalid value").replace(/^Value error, /, "");
}

/** The widget key a 422 error's loc (and message) points at, or null. */
function keyFor(loc, msg) {
  let parts = loc.filter((p) => p !== "body");
  if (parts[0] === "grid") {
    if (parts.length < 2) return "@count";
    return String(parts[1]);
  }
  if (parts[0] === "tune") return parts[1] === "optimizers" ? "optimizer" : `tune.${parts[1]}`;
  if (parts[0] === "base") parts = parts.slice(1);
  else if (sweep && (parts[0] === "n_seeds" || parts[0] === "seeds")) return "n_seeds";
  else if (sweep && parts[0] === "name") return "sweep_name";
  const [head, sub] = parts;
  if (head === "hparams" || head === "model_args") {
    if (sub !== undefined && widgets.has(`${head}.${sub}`)) return `${head}.${sub}`;
    const m = /\b(?:hparam|model_arg) '?(\w+)'?/.exec(msg);
    if (m && widgets.has(`${head}.${m[1]}`)) return `${head}.${m[1]}`;
    return head === "hparams" ? "optimizer" : "model";
  }
  return head === undefined ? null : String(head);
}

function showErrors(err) {
  const detail = err.body && err.body.detail;
  const loose = [];
  if (Array.isArray(detail)) {
    for (const e of detail) {
      const msg = cleanMsg(e.msg);
      const key = keyFor(e.loc || [], msg);
      if (!placeError(key, msg)) loose.push(msg);
    }
  } else {
    loose.push(err.message);
  }
  if (loose.length) {
    const fe = $("#form-error");
    fe.textContent = loose.join("\n");
    fe.hidden = false;
  }
  const first = $(".field.has-error input, .field.has-error select");
  if (first) first.focus({ preventScroll: false });
}

function placeError(key, msg) {
  if (key === "@count") {
    $("#sweep-count-note").textContent = msg;
    return true;
  }
  if (key && widgets.has(key)) {
    widgets.get(key).setError(msg);
    return true;
  }
  const box = key && $(`#sweep-box .field[data-field="${CSS.escape(key)}"]`);
  if (box) {
    box.classList.add("has-error");
    box.querySelector(".field-error").textContent = msg;
    return true;
  }
  return false;
}

// -------------------------------------------------------------- sweep count

let countTimer = null;
let countSeq = 0;
function scheduleCount() {
  if (!sweep) return;
  clearTimeout(countTimer);
  countTimer = setTimeout(updateCount, 300);
}

async function updateCount() {
  if (!sweep) return;
  const seq = ++countSeq;
  clearErrors();
  $("#sweep-count-note").textContent = "";
  let body;
  try {
    body = sweepBody();
  } catch (e) {
    if (e instanceof FieldError) placeError(e.key, e.message);
    setCount("?");
    return;
  }
  const local = Object.values(body.grid).reduce((a, v) => a * v.length, 1) * (body.n_seeds || 1);
  setCount(local);
  try {
    const res = await api("/api/sweeps?dry_run=true", { method: "POST", body });
    if (seq !== countSeq) return;
    setCount(res.count);
    if (res.count > res.max_runs) $("#sweep-count-note").textContent = `over the limit of ${res.max_runs} runs`;
  } catch (e) {
    if (seq !== countSeq) return;
    if (e.status === 422) showErrors(e);
    else $("#sweep-count-note").textContent = e.message;
  }
}

function setCount(n) {
  $("#sweep-count").textContent = String(n);
  $("#sweep-count-label").textContent = n === 1 ? "run" : "runs";
  $("#submit").textContent = sweep ? (typeof n === "number" ? `Start ${n} run${n === 1 ? "" : "s"}` : "Start sweep") : "Start run";
}

function modeHelp() {
  if (tuning()) {
    return "Tune, then seed: stage 1 searches each ticked optimizer's learning rate on validation "
      + "(losers stopped early); stage 2 runs the best on every seed.";
  }
  return sweep ? "Sweep: every combination of the listed values, once per seed."
    : "One run. Leave a field empty for its default.";
}

function setMode(on) {
  sweep = on;
  form.classList.toggle("sweep-mode", on);
  $("#mode-help").textContent = modeHelp();
  for (const w of widgets.values()) {
    if (w.spec.type === "enum" && !on) {
      // back to one value: the first ticked choice (or what the select shows)
      const first = $$(`input[name="${CSS.escape(w.key)}-sweep"]:checked`, w.box)[0];
      if (first) w.set(first.value);
    }
  }
  clearErrors();
  renderNested("hparams");
  renderNested("model_args");
  updateLr();
  if (on) updateCount();
  else setCount(1);
  const u = new URL(location.href);
  if (on) u.searchParams.set("sweep", "1");
  else u.searchParams.delete("sweep");
  history.replaceState(null, "", u);
}

// ------------------------------------------------------------------- submit

let submitting = false;
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (submitting) return;
  clearErrors();
  let payload;
  try {
    payload = sweep ? sweepBody() : collect().base;
  } catch (e) {
    if (e instanceof FieldError) {
      placeError(e.key, e.message);
      return;
    }
    throw e;
  }
  submitting = true;
  $("#submit").disabled = true;
  try {
    if (sweep) {
      const res = await api("/api/sweeps", { method: "POST", body: payload });
      location.href = `/compare?sweep=${res.sweep.id}`;
    } else {
      const run = await api("/api/runs", { method: "POST", body: payload });
      location.href = `/runs/${run.id}`;
    }
  } catch (e) {
    if (e.status === 422) showErrors(e);
    else {
      const fe = $("#form-error");
      fe.textContent = e.message;
      fe.hidden = false;
    }
    submitting = false;
    $("#submit").disabled = false;
  }
});

// ---------------------------------------------------------------- prefill

async function prefill(runId) {
  let run;
  try {
    run = await api(`/api/runs/${encodeURIComponent(runId)}`);
  } catch (e) {
    toast(`could not load run ${runId}: ${e.message}`, true);
    return;
  }
  const cfg = run.config || {};
  for (const k of ["optimizer", "model"]) if (cfg[k] && widgets.has(k)) widgets.get(k).set(cfg[k]);
  renderNested("hparams");
  renderNested("model_args");
  for (const [k, v] of Object.entries(cfg)) {
    if (k === "hparams" || k === "model_args") {
      for (const [sub, sv] of Object.entries(v || {})) widgets.get(`${k}.${sub}`)?.set(sv);
    } else if (widgets.has(k) && k !== "optimizer" && k !== "model") {
      widgets.get(k).set(v);
    }
  }
  lrTouched = true;
  const name = widgets.get("name");
  if (name && cfg.name) name.set(`${cfg.name} (copy)`.slice(0, 200));
}

build();
$("#sweep-mode").addEventListener("change", (e) => setMode(e.target.checked));
$("#f-n_seeds").addEventListener("input", scheduleCount);
$("#f-sweep_name").addEventListener("input", scheduleCount);
$("#f-strategy").addEventListener("change", () => {
  form.classList.toggle("tune-mode", tuning());
  $("#mode-help").textContent = modeHelp();
  $('label[for="f-n_seeds"]').textContent = tuning() ? "stage-2 seeds" : "seeds per combination";
  scheduleCount();
});
for (const el of $$("#sweep-box .tune-only input, #sweep-box .tune-only select")) el.addEventListener("input", scheduleCount);
const params = new URLSearchParams(location.search);
(async () => {
  if (params.get("from")) await prefill(params.get("from"));
  if (params.get("sweep") === "1") {
    $("#sweep-mode").checked = true;
    setMode(true);
  }
  form.dataset.ready = "1";
})();
