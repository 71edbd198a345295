// New run form, generated from the run config's registries (/api/schema/options, embedded in
// the page; fields.js). Single mode POSTs /api/runs; sweep mode POSTs /api/sweeps, and shows
// the server's count of its runs as the form changes (sweep_count.js). Validation is the
// server's: 422 errors are shown beside the field their loc names (form_errors.js). A tuned
// sweep's search (the tune fields) is built from the options' `tune`: TuneSpec's fields, so
// their defaults and bounds are the server's, as `bamsprod tune`'s are.

import { api } from "./api.js";
import { $, h, pageData, toast } from "./common.js";
import { FieldError, RunFields, makeWidget } from "./fields.js";
import { FormErrors } from "./form_errors.js";
import { SweepCount } from "./sweep_count.js";

// The tune fields the form shows, in this order, with the form's words for them (defaults,
// bounds and choices come with the options).
const TUNE_FIELDS = {
  lr_min: { label: "lr from" },
  lr_max: { label: "lr to" },
  n_lr: { label: "learning rates", help: "log-spaced, per optimizer" },
  stage1_epochs: { label: "stage-1 epochs", help: "per trial; the epochs field is stage 2's budget" },
  criterion: { label: "choose by" },
};

const form = $("#run-form");
const options = pageData("options-data");
let sweep = false;
const isSweep = () => sweep;
const tuning = () => sweep && $("#f-strategy").value === "tune";

const fields = new RunFields(options, { isSweep, onChange: () => count.schedule() });
const tuneWidgets = new Map(); // TuneSpec field -> its widget (one value, in every mode)
const errors = new FormErrors(fields);
const count = new SweepCount({ body: sweepBody, errors, isSweep });

// ------------------------------------------------------------------- bodies

function nSeeds() {
  const text = $("#f-n_seeds").value.trim();
  return text === "" ? 1 : Number(text);
}

/** The POST /api/sweeps body; FieldError on input the form cannot send. */
function sweepBody() {
  const { base, grid } = fields.collect();
  const body = { name: $("#f-sweep_name").value.trim(), base, grid };
  const n = nSeeds();
  if (!Number.isInteger(n)) throw new FieldError("n_seeds", "must be a whole number");
  body.n_seeds = n;
  return tuning() ? tuneBody(body) : body;
}

/** Tune, then seed: the ticked optimizers are tuned; the learning rate is searched. */
function tuneBody(body) {
  const { base, grid } = body;
  const optimizers = grid.optimizer || [base.optimizer || "bamsprod"];
  delete grid.optimizer;
  delete grid.lr; // hidden in tune mode: the search sets it
  const listed = Object.keys(grid);
  if (listed.length) throw new FieldError(listed[0], "tune searches the learning rate: give one value here");
  delete base.optimizer;
  delete base.lr;
  const tune = { optimizers };
  // Left empty: TuneSpec's default. Text that is no number goes as typed (the server names it).
  for (const [name, w] of tuneWidgets) {
    const v = w.get();
    if (v !== undefined) tune[name] = v;
  }
  return { ...body, strategy: "tune", tune };
}

/** The tune fields, after the strategy: TuneSpec's own (from the options), filled with its
 * defaults and described with its bounds. */
function buildTune() {
  const specs = options.tune || {};
  for (const [name, words] of Object.entries(TUNE_FIELDS)) {
    if (!specs[name]) continue;
    const w = makeWidget(`tune.${name}`, { ...specs[name], ...words }, () => false, { single: true });
    w.box.classList.add("tune-only");
    w.onChange(() => count.schedule());
    tuneWidgets.set(name, w);
  }
  $('#sweep-box [data-field="strategy"]').after(...[...tuneWidgets.values()].map((w) => w.box));
}

// --------------------------------------------------------------------- mode

function modeHelp() {
  if (tuning()) {
    return "Tune, then seed: stage 1 searches each ticked optimizer's learning rate on validation "
      + "(losers stopped early); stage 2 runs the best on every seed.";
  }
  return sweep ? "Sweep: every combination of the listed values, once per seed."
    : "One run. Leave a field empty for its default.";
}

/** What the ⋯ marker means in this mode (shown in sweep mode only). */
function legend() {
  $("#sweep-legend").hidden = !sweep;
  $("#sweep-legend").lastChild.textContent = tuning()
    ? " marks what tune mode takes several of: tick the optimizers to tune. The learning rate"
      + " is searched between \"lr from\" and \"lr to\"; every other field takes one value."
    : " marks a field that takes several values in sweep mode: write them separated by commas,"
      + " or tick several choices; every combination runs.";
}

function setMode(on) {
  sweep = on;
  form.classList.toggle("sweep-mode", on);
  $("#mode-help").textContent = modeHelp();
  legend();
  if (!on) fields.singleChoices();
  errors.clear();
  fields.refresh();
  if (on) count.update();
  else count.reset();
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
  errors.clear();
  let payload;
  try {
    payload = sweep ? sweepBody() : fields.collect().base;
  } catch (e) {
    if (e instanceof FieldError) {
      errors.placeField(e);
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
    errors.show(e, sweep);
    submitting = false;
    $("#submit").disabled = false;
  }
});

// ------------------------------------------------------------------- start

async function prefill(runId) {
  let run;
  try {
    run = await api(`/api/runs/${encodeURIComponent(runId)}`);
  } catch (e) {
    toast(`could not load run ${runId}: ${e.message}`, true);
    return;
  }
  fields.prefill(run.config || {});
}

fields.build($("#form-sections"));
buildTune();
// Tune mode searches the learning rate: its field gives way to a note saying where.
fields.widgets.get("lr")?.box.append(h("span", { class: "tune-note" },
  "searched in stage 1, between \"lr from\" and \"lr to\" (Sweep, below)"));
$("#sweep-mode").addEventListener("change", (e) => setMode(e.target.checked));
$("#f-n_seeds").addEventListener("input", () => count.schedule());
$("#f-sweep_name").addEventListener("input", () => count.schedule());
$("#f-strategy").addEventListener("change", () => {
  form.classList.toggle("tune-mode", tuning());
  $("#mode-help").textContent = modeHelp();
  legend();
  $('label[for="f-n_seeds"]').textContent = tuning() ? "stage-2 seeds" : "seeds per combination";
  count.schedule();
});
const params = new URLSearchParams(location.search);
if (params.get("from")) await prefill(params.get("from"));
if (params.get("sweep") === "1") {
  $("#sweep-mode").checked = true;
  setMode(true);
}
form.dataset.ready = "1";
