// How many runs the sweep on the form makes: counted by the server only (POST
// /api/sweeps?dry_run=true answers {count, max_runs, dry_run}, and checks every combination on
// the way), asked a moment after the last change. Until the answer comes the count shows as
// pending ("…", data-pending on #sweep-count); an answer to an older question is dropped.

import { api } from "./api.js";
import { $ } from "./common.js";
import { FieldError } from "./fields.js";

const DEBOUNCE_MS = 300;
const PENDING = "…";

export class SweepCount {
  /** body(): the sweep to count (throws FieldError); errors: the form's FormErrors;
   * isSweep(): sweep mode (nothing is counted in single mode). */
  constructor({ body, errors, isSweep }) {
    Object.assign(this, { body, errors, isSweep });
    this.timer = null;
    this.seq = 0;
  }

  /** Count again shortly (pending at once); changes in between make one request. */
  schedule() {
    if (!this.isSweep()) return;
    this.seq += 1; // an answer already on its way is stale now
    this.show(null);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.update(), DEBOUNCE_MS);
  }

  /** Ask the server now. */
  async update() {
    clearTimeout(this.timer);
    if (!this.isSweep()) return;
    const seq = ++this.seq;
    this.errors.clear();
    let body;
    try {
      body = this.body();
    } catch (e) {
      if (!(e instanceof FieldError)) throw e;
      this.errors.placeField(e);
      this.show("?");
      return;
    }
    this.show(null);
    try {
      const res = await api("/api/sweeps?dry_run=true", { method: "POST", body });
      if (seq !== this.seq) return;
      this.show(res.count);
      if (res.count > res.max_runs) $("#sweep-count-note").textContent = `over the limit of ${res.max_runs} runs`;
    } catch (e) {
      if (seq !== this.seq) return;
      this.show("?");
      if (e.status === 422) this.errors.show(e, true);
      else $("#sweep-count-note").textContent = e.message;
    }
  }

  /** Single mode: one run, nothing pending. */
  reset() {
    clearTimeout(this.timer);
    this.seq += 1;
    this.show(1);
  }

  /** Show n runs; null: pending; "?": unknown (the form has an error). */
  show(n) {
    const count = $("#sweep-count");
    count.textContent = n === null ? PENDING : String(n);
    count.toggleAttribute("data-pending", n === null);
    $("#sweep-count-label").textContent = n === 1 ? "run" : "runs";
    const sweep = this.isSweep();
    $("#submit").textContent = !sweep ? "Start run" : typeof n === "number" ? `Start ${n} run${n === 1 ? "" : "s"}` : "Start sweep";
  }
}
