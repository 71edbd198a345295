// Compare page: what a tuned sweep ("tune, then seed") searched and chose, per optimizer, and
// where it stands (stage 1: k of n trials done, pruned ones marked; stage 2: its seeded runs).
// Reads GET /api/sweeps/{id}'s `tuning` for the sweep in the page's URL; refreshes until every
// optimizer's stage 2 is decided, telling the page (onTuning) after each read, so that the
// page says what is happening and goes live when stage 2 starts. Tuning reads validation
// metrics only (the criterion column).

import { api } from "./api.js";
import { $, every, fmtAcc, fmtNum, h, isActive } from "./common.js";

let shown = null; // the sweep id on show
let settled = false; // every optimizer decided: no more refreshes needed
let rows = null; // the last `tuning` read (null: not a tuned sweep, or not read yet)
const listeners = [];

const fmt = (v) => (typeof v === "number" ? fmtNum(v, 4) : String(v));
const pairs = (obj) => Object.entries(obj).map(([k, vs]) => `${k}: ${Array.isArray(vs) ? vs.map(fmt).join(", ") : fmt(vs)}`).join("; ");

/** Links to runs; a pruned trial is marked as such. */
function runLinks(ids, states) {
  if (!ids.length) return ["–"];
  return ids.flatMap((id, i) => {
    const pruned = states[id] === "pruned";
    return [i ? " " : "", h("a", { href: `/runs/${id}`, class: pruned ? "pruned-run" : null, title: pruned ? "pruned: stopped early as a loser" : states[id] || null }, `#${id}`),
      pruned ? h("span", { class: "state state-pruned mini" }, "pruned") : null];
  });
}

/** Where a tuned sweep stands: stage 1's trials and stage 2's runs, counted by state. */
export function progress(tuning) {
  const out = { trials: 0, done: 0, pruned: 0, running: 0, queued: 0, stage2: 0, stage2Active: 0, stage2Done: 0, undecided: 0 };
  for (const t of tuning || []) {
    const states = t.run_states || {};
    for (const id of t.stage1_run_ids) {
      const s = states[id];
      out.trials += 1;
      if (s === "running") out.running += 1;
      else if (s === "queued" || s === undefined) out.queued += 1;
      else out.done += 1;
      if (s === "pruned") out.pruned += 1;
    }
    for (const id of t.stage2_run_ids) {
      out.stage2 += 1;
      if (isActive(states[id])) out.stage2Active += 1;
    }
    if (!decided(t)) out.undecided += 1;
  }
  out.stage2Done = out.stage2 - out.stage2Active;
  return out;
}

const decided = (t) => t.value !== null || t.best_run_id !== null || t.stage2_run_ids.length > 0;

/** "Stage 1 of 2: 5 of 8 trials done (2 pruned), 1 training" and what comes next. */
export function stageText(tuning) {
  const p = progress(tuning);
  const trials = `${p.done} of ${p.trials} trial${p.trials === 1 ? "" : "s"} done${p.pruned ? ` (${p.pruned} pruned)` : ""}`;
  const now = [p.running ? `${p.running} training` : "", p.queued ? `${p.queued} queued` : ""].filter(Boolean).join(", ");
  if (!p.stage2 && !p.undecided) { // decided, yet nothing to seed: no trial had a score
    return { stage: 1, title: `Stage 1 of 2 ended: ${trials}; stage 2 has no runs`, detail: "" };
  }
  if (!p.stage2) {
    return {
      stage: 1,
      title: `Stage 1 of 2, tuning: ${trials}${now ? `, ${now}` : ""}`,
      detail: "Stage 2 runs each optimizer's best setting on every seed once its trials have ended; its results appear here by themselves.",
    };
  }
  const waiting = p.undecided ? ` · stage 1 still tuning ${p.undecided} optimizer${p.undecided === 1 ? "" : "s"}` : "";
  return {
    stage: 2,
    title: `Stage 2 of 2: ${p.stage2Done} of ${p.stage2} seeded run${p.stage2 === 1 ? "" : "s"} done${p.stage2Active ? `, ${p.stage2Active} queued or training` : ""}`
      + ` · stage 1: ${trials}${waiting}`,
    detail: "",
  };
}

function render(tuning) {
  const body = document.getElementById("tuned-body");
  body.replaceChildren(...tuning.map((t) => h("tr", { dataset: { optimizer: t.optimizer } },
    h("td", null, t.optimizer),
    h("td", { class: "searched" }, pairs(t.searched)),
    h("td", null, t.criterion.replace(/_/g, " ")),
    h("td", { class: "chosen" }, t.chosen ? pairs(t.chosen) : decided(t) ? "–" : "stage 1 running"),
    h("td", { class: "num" }, fmtAcc(t.value)),
    h("td", { class: "stage1-runs" }, ...runLinks(t.stage1_run_ids, t.run_states || {})),
    h("td", null, ...runLinks(t.stage2_run_ids, t.run_states || {})))));
}

async function refresh() {
  const sweep = new URLSearchParams(location.search).get("sweep");
  const box = document.getElementById("tuned");
  if (!box) return;
  if (!sweep) {
    box.hidden = true;
    shown = null;
    rows = null;
    return;
  }
  if (sweep === shown && settled) return;
  const detail = await api(`/api/sweeps/${encodeURIComponent(sweep)}`).catch(() => null);
  if (sweep !== new URLSearchParams(location.search).get("sweep")) return; // changed meanwhile
  shown = sweep;
  rows = (detail && detail.tuning) || null;
  box.hidden = !rows;
  settled = !rows || rows.every(decided);
  if (rows) render(rows);
  // The page compares a tuned sweep's stage 2 by default; the link switches to its trials and back.
  const trials = new URLSearchParams(location.search).get("stage") === "1";
  const link = document.getElementById("tuned-compare");
  link.hidden = !rows;
  link.textContent = trials
    ? "Compare stage 2: the tuned optimizers on every seed"
    : "Compare the tuning trials (stage 1), by optimizer and learning rate";
  const id = encodeURIComponent(sweep);
  link.href = trials ? `/compare?sweep=${id}&group_by=optimizer` : `/compare?sweep=${id}&stage=1&group_by=optimizer,lr`;
  const status = $("#stage-status");
  if (status) {
    status.hidden = !rows;
    if (rows) status.textContent = stageText(rows).title;
  }
  for (const fn of listeners) fn(rows, settled);
}

/** The tuning on show (null for a sweep that is not tuned), whether it is all decided, and
 * the sweep it was read for. */
export const tuning = () => ({ rows, settled, sweep: shown });

/** Call fn(rows, settled) after every read of the sweep's tuning. */
export function onTuning(fn) {
  listeners.push(fn);
}

/** Show the tuning of the sweep in the URL, and keep it fresh until it is decided. */
export function startTuned() {
  refresh();
  every(3000, refresh);
}

/** Read it again now (the controls changed the sweep in the URL). */
export const refreshTuned = () => {
  settled = false;
  return refresh();
};
