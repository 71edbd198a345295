// The run page's panels: the header (name, state, actions shown), the progress bar with its
// ETA, the run's summary, its config grouped as on the form, and where it trained.

import { $, fmtAcc, fmtDate, fmtNum, fmtSeconds, h, isActive, shown, stateBadge } from "./common.js";
import { SECTIONS } from "./fields.js";
import { renderEmpty } from "./run_charts.js";
import { runData, state } from "./run_state.js";

/** The header and everything that follows from the run's state. */
export function renderRun() {
  const { run } = state;
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

export function renderProgress() {
  const { run, lastEpoch, seconds } = state;
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
export function renderConfig() {
  const { run } = state;
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

export function renderInfo() {
  const { run } = state;
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
  const env = state.run.environment;
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
