// The new-run form's errors: each 422 detail item is shown beside the widget its `loc` names
// (FastAPI's shape, {"detail": [{"loc": ["body", ...], "msg": ...}]}), by the loc alone: the
// message is only shown (in one wording, see `wording`), never read for where it goes. What
// names no widget goes in the form's error box.

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

// pydantic's messages ("Input should be greater than 0") and the project's own ("gamma must
// be >= 0, got -1") say the same things two ways: beside a field, both read as the project's,
// "must be > 0, got -1" (the field's name left out: the message sits beside it).
const WORDING = [
  [/^Input should be greater than or equal to (.+)$/, "must be >= $1"],
  [/^Input should be greater than (.+)$/, "must be > $1"],
  [/^Input should be less than or equal to (.+)$/, "must be <= $1"],
  [/^Input should be less than (.+)$/, "must be < $1"],
  [/^Input should be a finite number$/, "must be a finite number"],
  [/^Input should be a valid number.*$/, "must be a number"],
  [/^Input should be a valid integer.*$/, "must be a whole number"],
  [/^Input should be a valid boolean.*$/, "must be true or false"],
  [/^Input should be a valid (string|list|dictionary).*$/, "must be a $1"],
  [/^Input should be (.+)$/, "must be $1"],
  [/^(String|List|Dictionary) should have at (most|least) (.+)$/, "must have at $2 $3"],
  [/^Field required$/, "must be given"],
  [/^Extra inputs are not permitted$/, "is not a field of a run"],
];

const scalar = (v) => typeof v === "number" || typeof v === "boolean" || (typeof v === "string" && v.length <= 40);

/** A 422 item's message in the form's one wording (see WORDING); messages in no known shape are
 * shown as they came. `name`: the field's own name, left out of the start of a message. */
export function wording(item, name) {
  let msg = String((item && item.msg) || "invalid value").replace(/^Value error, /, "");
  const rule = WORDING.find(([re]) => re.test(msg));
  if (rule) {
    msg = msg.replace(rule[0], rule[1]);
    if (scalar(item.input) && !/\bgot\b/.test(msg)) msg += `, got ${JSON.stringify(item.input)}`;
  } else if (name) {
    // "gamma must be >= 0, got -1" or "hparam gamma must ...": its name is beside it already.
    const esc = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const own = msg.match(new RegExp(`^(?:[\\w-]+ )?${esc} (must .*)$`, "s"));
    if (own) msg = own[1];
  }
  return msg;
}

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
        const keys = keysFor(e.loc, sweep);
        const name = keys.length ? keys[0].split(".").pop() : "";
        const msg = wording(e, name);
        if (!this.place(keys, msg)) loose.push(msg);
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
