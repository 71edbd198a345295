// Compare page: what a tuned sweep ("tune, then seed") searched and chose, per optimizer.
// Reads GET /api/sweeps/{id}'s `tuning` for the sweep in the page's URL; refreshes until every
// optimizer's stage 2 is decided. Tuning reads validation metrics only (the criterion column).

import { api } from "./api.js";
import { every, fmtAcc, fmtNum, h } from "./common.js";

let shown = null; // the sweep id on show
let settled = false; // every optimizer decided: no more refreshes needed

const fmt = (v) => (typeof v === "number" ? fmtNum(v, 4) : String(v));
const runLinks = (ids) => (ids.length ? ids.flatMap((id, i) => [i ? " " : "", h("a", { href: `/runs/${id}` }, `#${id}`)]) : ["–"]);
const pairs = (obj) => Object.entries(obj).map(([k, vs]) => `${k}: ${Array.isArray(vs) ? vs.map(fmt).join(", ") : fmt(vs)}`).join("; ");

function render(rows) {
  const body = document.getElementById("tuned-body");
  body.replaceChildren(...rows.map((t) => h("tr", { dataset: { optimizer: t.optimizer } },
    h("td", null, t.optimizer),
    h("td", { class: "searched" }, pairs(t.searched)),
    h("td", null, t.criterion.replace(/_/g, " ")),
    h("td", { class: "chosen" }, t.chosen ? pairs(t.chosen) : t.value === null && t.best_run_id === null && t.stage2_run_ids.length === 0 ? "stage 1 running" : "–"),
    h("td", { class: "num" }, fmtAcc(t.value)),
    h("td", null, ...runLinks(t.stage1_run_ids)),
    h("td", null, ...runLinks(t.stage2_run_ids)))));
}

async function refresh() {
  const sweep = new URLSearchParams(location.search).get("sweep");
  const box = document.getElementById("tuned");
  if (!box) return;
  if (!sweep) {
    box.hidden = true;
    shown = null;
    return;
  }
  if (sweep === shown && settled) return;
  const detail = await api(`/api/sweeps/${encodeURIComponent(sweep)}`).catch(() => null);
  shown = sweep;
  const rows = detail && detail.tuning;
  box.hidden = !rows;
  settled = !rows || rows.every((t) => t.value !== null || t.best_run_id !== null || t.stage2_run_ids.length);
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
}

/** Show the tuning of the sweep in the URL, and keep it fresh until it is decided. */
export function startTuned() {
  refresh();
  every(3000, refresh);
}
