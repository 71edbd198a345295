// The run config's fields on the new-run form, built from /api/schema/options (the page embeds
// the same object): one widget per field, the chosen optimizer's hyperparameters and the chosen
// model's arguments below them, and what the widgets hold as a run config, or in sweep mode as
// a sweep's base and grid. The form keeps no copy of the run config's fields or ranges.

import { $, $$, h } from "./common.js";

/** The form's sections: each a title and its fields ("@hparams": the optimizer's
 * hyperparameters); the run page shows a run's config in the same groups. */
export const SECTIONS = [
  ["Run", ["name", "tags", "epochs", "batch_size", "seed", "device"]],
  ["Data", ["dataset", "data_dir", "train_subset", "test_subset", "val_split"]],
  ["Model", ["model", "@model_args"]],
  ["Optimizer", ["optimizer", "lr", "@hparams", "scheduler"]],
];
// Fields whose values a sweep may list; seed is set by "seeds per combination" instead.
const NOT_SWEPT = new Set(["name", "tags", "data_dir", "seed"]);
// The nested groups: which choice decides their parameters.
const GROUP_CHOICE = { hparams: "optimizer", model_args: "model" };

/** Input the form cannot send, found before asking the server: shown beside field `key`. */
export class FieldError extends Error {
  constructor(key, message) {
    super(message);
    this.key = key;
  }
}

/** Append the given nodes, skipping null ones. */
function append(parent, ...nodes) {
  parent.append(...nodes.filter((n) => n !== null && n !== undefined));
}

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

/**
 * One field's widget: {key, spec, box, input, sweepable, get(), set(v), setError(msg),
 * onChange(fn)}. In sweep mode (isSweep()) a sweepable field's get() is a list of values;
 * `single: true` makes a field that takes one value in every mode (a tuned sweep's search).
 */
export function makeWidget(key, spec, isSweep, { single = false } = {}) {
  const f = fieldBox(key, spec.label || key.split(".").pop().replace(/_/g, " "), rangeHelp(spec));
  const sweepable = !single && !NOT_SWEPT.has(key) && ["enum", "int", "float"].includes(spec.type);
  const w = { key, spec, box: f.box, sweepable };
  w.setError = (msg) => {
    f.err.textContent = msg || "";
    f.box.classList.toggle("has-error", !!msg);
    if (w.input) w.input.setAttribute("aria-invalid", msg ? "true" : "false");
  };
  if (spec.type === "enum" && !sweepable) {
    const select = h("select", { id: f.id, "aria-describedby": f.err.id },
      spec.choices.map((c) => h("option", { value: c }, c)));
    w.input = select;
    w.get = () => select.value;
    w.set = (v) => { select.value = v; };
    append(f.box, f.label, select, f.help, f.err);
    w.onChange = (fn) => select.addEventListener("change", fn);
  } else if (spec.type === "enum") {
    const select = h("select", { id: f.id, "aria-describedby": f.err.id },
      spec.choices.map((c) => h("option", { value: c }, c)));
    const checks = h("span", { class: "choice-group sweep-only", role: "group", "aria-label": `${key} values` },
      spec.choices.map((c) => h("label", { class: "choice" },
        h("input", { type: "checkbox", value: c, name: `${key}-sweep` }), " ", c)));
    w.input = select;
    w.get = () => (isSweep() ? $$("input:checked", checks).map((x) => x.value) : select.value);
    w.set = (v) => {
      select.value = v;
      for (const x of $$("input", checks)) x.checked = x.value === v;
    };
    w.firstTicked = () => ($$("input:checked", checks)[0] || {}).value;
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
    w.get = () => {
      const text = input.value.trim();
      if (spec.type === "list") return text ? text.split(",").map((s) => s.trim()).filter(Boolean) : [];
      if (!numeric) return text === "" && spec.nullable ? undefined : text;
      if (text === "") return undefined;
      const many = isSweep() && sweepable;
      const parts = many ? text.split(/[\s,;]+/).filter(Boolean) : [text];
      // Text that is no number goes to the server as typed: it names every bad field at once
      // (stopping here at the first would hide the others), in its own words.
      const vals = parts.map((p) => (Number.isFinite(Number(p)) ? Number(p) : p));
      return many ? vals : vals[0];
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

/** The form's run config fields: its widgets by key ("lr", "hparams.kappa", ...). */
export class RunFields {
  /** opts: /api/schema/options; isSweep(): sweep mode; onChange(): any value changed. */
  constructor(opts, { isSweep, onChange }) {
    this.opts = opts;
    this.isSweep = isSweep;
    this.onChange = onChange;
    this.widgets = new Map();
    this.kept = { hparams: new Map(), model_args: new Map() }; // typed values while switching
    this.lrTouched = false;
  }

  /** The chosen values of an enum widget, as a list (one in single mode). */
  chosen(key) {
    const v = this.widgets.get(key).get();
    return Array.isArray(v) ? v : [v];
  }

  /** Hyperparameters shared by every chosen optimizer (or arguments of every chosen model). */
  sharedParams(kind) {
    const names = this.chosen(GROUP_CHOICE[kind]);
    const { optimizers, models } = this.opts;
    const table = (n) => (kind === "hparams" ? optimizers[n]?.hparams : models[n]?.args) || {};
    if (!names.length) return {};
    const out = {};
    for (const [k, spec] of Object.entries(table(names[0]))) {
      if (names.every((n) => k in table(n))) out[k] = spec;
    }
    return out;
  }

  /** The nested group's box (it shows errors about the group as a whole). */
  group(kind) {
    return $(`#nested-${kind}`);
  }

  renderNested(kind) {
    const holder = this.group(kind);
    const keep = this.kept[kind];
    for (const [k, w] of this.widgets) {
      if (k.startsWith(`${kind}.`)) {
        keep.set(k, { raw: w.input.type === "checkbox" ? w.input.checked : w.input.value, spec: w.spec });
        this.widgets.delete(k);
      }
    }
    const boxes = [];
    for (const [name, spec] of Object.entries(this.sharedParams(kind))) {
      const key = `${kind}.${name}`;
      const w = makeWidget(key, { ...spec, label: name.replace(/_/g, " ") }, this.isSweep);
      const old = keep.get(key);
      // Keep what the user typed only if this parameter means the same thing (same default).
      if (old && old.spec.default === spec.default) {
        if (w.input.type === "checkbox") w.input.checked = old.raw;
        else w.input.value = old.raw;
      }
      w.onChange(this.onChange);
      this.widgets.set(key, w);
      boxes.push(w.box);
    }
    const names = this.chosen(GROUP_CHOICE[kind]);
    holder.replaceChildren(h("span", { class: "field-error group-error", "aria-live": "polite" }), ...boxes);
    if (!boxes.length) {
      holder.append(h("p", { class: "muted small" },
        names.length ? `no ${kind === "hparams" ? "hyperparameters" : "arguments"} shared by ${names.join(", ")}` : "choose at least one"));
    }
  }

  updateLr() {
    const w = this.widgets.get("lr");
    if (!w) return;
    const { optimizers } = this.opts;
    const lrs = [...new Set(this.chosen("optimizer").map((n) => optimizers[n]?.default_lr).filter((x) => x !== undefined))];
    w.input.placeholder = lrs.length === 1 ? `default ${lrs[0]}` : "per-optimizer default";
    if (!this.lrTouched) w.input.value = lrs.length === 1 ? String(lrs[0]) : "";
  }

  /** Re-render what depends on the mode or the choices (after a mode switch or a prefill). */
  refresh() {
    this.renderNested("hparams");
    this.renderNested("model_args");
    this.updateLr();
  }

  /** The sections of widgets in holder, from the schema's fields. */
  build(holder) {
    const fieldSpec = Object.fromEntries(this.opts.fields.map((f) => [f.name, f]));
    const sections = SECTIONS.map(([title, keys]) => [title, keys]);
    const rest = this.opts.fields.map((f) => f.name).filter((n) => !SECTIONS.some(([, ks]) => ks.includes(n)));
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
        const w = makeWidget(key, spec, this.isSweep);
        this.widgets.set(key, w);
        fs.append(w.box);
        w.onChange(this.onChange);
      }
      holder.append(fs);
    }
    this.widgets.get("optimizer")?.onChange(() => { this.renderNested("hparams"); this.updateLr(); });
    this.widgets.get("model")?.onChange(() => this.renderNested("model_args"));
    this.widgets.get("lr")?.input.addEventListener("input", () => { this.lrTouched = true; });
    this.refresh();
    this.describeChoice("optimizer", this.opts.optimizers, (o) => o.help);
    this.describeChoice("model", this.opts.models, (m) => m.help);
    this.describeChoice("dataset", this.opts.datasets, (d) =>
      `${d.train ?? "?"} train / ${d.test ?? "?"} test, ${d.shape.join("×")}, ${d.classes} classes`);
  }

  /** Under a choice (optimizer, model, data set): what the chosen entry is, and where a
   * plugin's comes from (its distribution and version). */
  describeChoice(key, table, text) {
    const w = this.widgets.get(key);
    if (!w) return;
    const show = () => {
      const info = this.chosen(key).map((n) => table[n]).filter(Boolean);
      const el = w.box.querySelector(".help") || w.box.insertBefore(h("span", { class: "help" }), w.box.querySelector(".field-error"));
      if (info.length !== 1) {
        el.textContent = "";
        return;
      }
      const src = info[0].source;
      const from = src && !src.builtin ? `plugin: ${src.dist} ${src.version}` : "";
      el.textContent = [text(info[0]), from].filter(Boolean).join(" · ");
      el.classList.toggle("plugin-source", !!from);
    };
    w.onChange(show);
    show();
  }

  /** Back to one value per enum: the first ticked choice (or what the select shows). */
  singleChoices() {
    for (const w of this.widgets.values()) {
      const first = w.firstTicked && w.firstTicked();
      if (first) w.set(first);
    }
  }

  /** The run config (single mode) or {base, grid} (sweep mode); FieldError on unparsable input. */
  collect() {
    const sweep = this.isSweep();
    const base = { hparams: {}, model_args: {} };
    const grid = {};
    for (const [key, w] of this.widgets) {
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

  /** Fill the widgets from a stored run config (Clone: /runs/new?from=<id>). */
  prefill(cfg) {
    for (const k of ["optimizer", "model"]) if (cfg[k] && this.widgets.has(k)) this.widgets.get(k).set(cfg[k]);
    this.renderNested("hparams");
    this.renderNested("model_args");
    for (const [k, v] of Object.entries(cfg)) {
      if (k === "hparams" || k === "model_args") {
        for (const [sub, sv] of Object.entries(v || {})) this.widgets.get(`${k}.${sub}`)?.set(sv);
      } else if (this.widgets.has(k) && k !== "optimizer" && k !== "model") {
        this.widgets.get(k).set(v);
      }
    }
    this.lrTouched = true;
    const name = this.widgets.get("name");
    if (name && cfg.name) name.set(`${cfg.name} (copy)`.slice(0, 200));
  }
}
