// New run form, generated from the run config's registries (/api/schema/options, embedded in
// the page; fields.js). Single mode POSTs /api/runs; sweep mode POSTs /api/sweeps, and shows
// the server's count of its runs as the form changes (sweep_count.js). Validation is the
// server's: 422 errors are shown beside the field their loc names (form_errors.js).

import { api } from "./api.js";
import { $, $$, h, pageData, toast } from "./common.js";
import { FieldError, RunFields } from "./fields.js";
import { FormErrors } from "./form_errors.js";
import { SweepCount } from "./sweep_count.js";

const form = $("#run-form");
let sweep = false;
const isSweep = () => sweep;
const tuning = () => sweep && $("#f-strategy").value === "tune";

const fields = new RunFields(pageData("options-data"), { isSweep, onChange: () => count.schedule() });
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
  const num = (k) => {
    const text = $(`#f-tune-${k}`).value.trim();
    return text === "" ? undefined : Number(text);
  };
  const tune = { optimizers, criterion: $("#f-tune-criterion").value };
  for (const k of ["lr_min", "lr_max", "n_lr", "stage1_epochs"]) {
    const v = num(k);
    if (v !== undefined && !Number.isFinite(v)) throw new FieldError(`tune.${k}`, "must be a number");
    if (v !== undefined) tune[k] = v;
  }
  return { ...body, strategy: "tune", tune };
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
for (const el of $$("#sweep-box .tune-only input, #sweep-box .tune-only select")) {
  el.addEventListener("input", () => count.schedule());
}
const params = new URLSearchParams(location.search);
if (params.get("from")) await prefill(params.get("from"));
if (params.get("sweep") === "1") {
  $("#sweep-mode").checked = true;
  setMode(true);
}
form.dataset.ready = "1";
