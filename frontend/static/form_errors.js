// The new-run form's errors: each 422 detail item is shown beside the widget its `loc` names
// (FastAPI's shape, {"detail": [{"loc": ["body", ...], "msg": ...}]}), by the loc alone: the
// message is only shown, never read. What names no widget goes in the form's error box.

import { $, $$ } from "./common.js";

/**
 * The form keys a 422 loc may name, most specific first; "@count" is the sweep's size.
 * Single run: ["body", "lr"] -> lr, ["body", "hparams", "kappa"] -> hparams.kappa then the
 * hparams group. Sweep: ["body", "grid", "lr"] -> lr (grid keys are form keys:
 * "hparams.kappa"), ["body", "base", <run config path>] as a single run's, ["body", "tune",
 * "lr_max"] -> tune.lr_max, ["body", "name"] -> sweep_name, ["body", "grid"] -> @count.
 */
export function keysFor(loc, sweep) {
  let parts = (loc || []).map(String);
  if (parts[0] === "body") parts = parts.slice(1);
  if (sweep) {
    const [head, next] = parts;
    if (head === "grid") return [next === undefined ? "@count" : next];
    if (head === "tune") return [next === undefined ? "strategy" : next === "optimizers" ? "optimizer" : `tune.${next}`];
    if (head === "name") return ["sweep_name"];
    if (head === "n_seeds" || head === "seeds") return ["n_seeds"];
    if (head !== "base") return parts.length ? [head] : [];
    parts = parts.slice(1);
  }
  // A run config path: the field ("hparams.kappa"), then the field it sits in ("hparams").
  const keys = [];
  for (let n = Math.min(parts.length, 2); n > 0; n--) keys.push(parts.slice(0, n).join("."));
  return keys;
}

/** A message as it is shown: pydantic's "Value error, " prefix taken off. */
const cleanMsg = (msg) => String(msg || "invalid value").replace(/^Value error, /, "");

/** The errors of the form whose run config fields are `fields` (a RunFields). */
export class FormErrors {
  constructor(fields) {
    this.fields = fields;
  }

  clear() {
    for (const w of this.fields.widgets.values()) w.setError("");
    for (const el of $$("#sweep-box .field.has-error")) el.classList.remove("has-error");
    for (const el of $$("#sweep-box .field-error, .nested > .group-error")) el.textContent = "";
    $("#sweep-count-note").textContent = "";
    this.showLoose([]);
  }

  /** Show msg beside the first of keys that is on the form; false if none is. */
  place(keys, msg) {
    for (const key of keys) {
      if (key === "@count") {
        $("#sweep-count-note").textContent = msg;
        return true;
      }
      const w = this.fields.widgets.get(key);
      if (w) {
        w.setError(msg);
        return true;
      }
      const box = $(`#sweep-box .field[data-field="${CSS.escape(key)}"]`);
      if (box) {
        box.classList.add("has-error");
        box.querySelector(".field-error").textContent = msg;
        return true;
      }
      const group = key in this.fields.kept ? this.fields.group(key) : null;
      if (group) {
        group.querySelector(":scope > .group-error").textContent = msg;
        return true;
      }
    }
    return false;
  }

  /** An error the form found itself (a FieldError), beside its field. */
  placeField(e) {
    return this.place([e.key], e.message);
  }

  /** An ApiError: a 422's items beside their fields, anything else in the form's box. */
  show(err, sweep) {
    const detail = err.status === 422 && err.body ? err.body.detail : null;
    const loose = [];
    if (Array.isArray(detail)) {
      for (const e of detail) {
        const msg = cleanMsg(e.msg);
        if (!this.place(keysFor(e.loc, sweep), msg)) loose.push(msg);
      }
    } else {
      loose.push(err.message);
    }
    this.showLoose(loose);
    const first = $(".field.has-error input, .field.has-error select");
    if (first) first.focus({ preventScroll: false });
  }

  showLoose(messages) {
    const box = $("#form-error");
    box.textContent = messages.join("\n");
    box.hidden = !messages.length;
  }
}
