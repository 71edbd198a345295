// The compare page's summary: the subtitle, the baseline and group-by choices, the target note,
// and per group the paper's two measures (epochs or seconds to the target and their speed-up
// over the baseline, the final accuracy's difference from it).

import * as chartHelpers from "./charts.js";
import { $, fmtAcc, fmtNum, fmtPts, fmtSeconds, h, isNum, paintSwatches } from "./common.js";
import { apiQuery, state } from "./compare_state.js";

/** How many of result's runs are in state s. */
export const countState = (result, s) => result.runs.filter((r) => r.state === s).length;

/** The subtitle, the controls that list groups and fields, and the note under them. */
export function renderMeta(result) {
  const parts = result.runs.length
    ? [`${result.runs.length} run${result.runs.length === 1 ? "" : "s"} in ${result.groups.length} group${result.groups.length === 1 ? "" : "s"}`]
    : ["no runs yet"];
  if (state.sweep) parts.unshift(`sweep ${state.sweep}`);
  if (countState(result, "running")) parts.push(`${countState(result, "running")} training`);
  if (countState(result, "queued")) parts.push(`${countState(result, "queued")} queued`);
  $("#subtitle").textContent = parts.join(" · ");
  const sel = $("#c-baseline");
  sel.replaceChildren(h("option", { value: "" }, "auto (Adam, else first)"),
    ...result.groups.map((g) => h("option", { value: g.key }, `${shortLabel(g)} (n=${g.n})`)));
  // "baseline=adam" (an optimizer name) selects the group it resolved to.
  const known = result.groups.some((g) => g.key === state.baseline);
  sel.value = state.baseline && !known ? result.baseline || "" : state.baseline;
  const dl = $("#group-fields");
  const fields = new Set(["optimizer", "lr", "model", "dataset", "batch_size", "epochs", ...(result.fields || [])]);
  dl.replaceChildren(...[...fields].map((f) => h("option", { value: f })));
  const metricName = result.metric.replace("_", " ");
  const note = [];
  if (isNum(result.target)) {
    note.push(`Target: ${fmtAcc(result.target)} ${metricName}` + (result.target_source && result.target_source !== "given" ? ` (${result.target_source})` : ""));
  }
  if (isNum(result.budget)) note.push(`measured within the first ${result.budget} epochs (the shortest group)`);
  if (result.fields && result.fields.length) note.push(`groups differ in: ${result.fields.join(", ")}`);
  note.push("time to target is interpolated between evaluations; seconds are training time and compare only runs on the same device (see each run's environment)");
  $("#target-note").textContent = note.join(" · ");
  // One header per measure: with x = time the time-to-target column is in seconds already, so
  // the seconds column (the same numbers) is hidden rather than shown twice.
  const time = result.x === "time";
  $("#to-target-head").textContent = time ? "seconds to target" : "epochs to target";
  $("#speedup-head").textContent = time ? "speed-up in seconds" : "speed-up in epochs";
  $("#summary").classList.toggle("x-time", time);
  $("#api-csv").href = `/api/compare?${apiQuery({ format: "csv", table: "summary" })}`;
}

/** A group's label as its parts: the fields that tell groups apart, nulls left out,
 * optimizer first ("bamsprod", "gamma=0.001"). */
export function labelParts(g) {
  const entries = Object.entries(g.fields || {}).filter(([, v]) => v !== null && v !== undefined);
  if (!entries.length) return [g.label];
  entries.sort(([a], [b]) => (a === "optimizer" ? -1 : b === "optimizer" ? 1 : 0));
  return entries.map(([k, v]) => (k === "optimizer" ? String(v) : `${k.replace(/^(hparams|model_args)\./, "")}=${v}`));
}

/** A short group label: its parts joined. */
export const shortLabel = (g) => labelParts(g).join(", ");

/** How many of a group's runs were pruned (tuning trials stopped early as losers). */
export function prunedIn(result, g) {
  const states = new Map(result.runs.map((r) => [r.id, r.state]));
  return g.run_ids.filter((id) => states.get(id) === "pruned").length;
}

function pm(st, fmt) {
  if (!st || !isNum(st.mean)) return "–";
  return isNum(st.std) ? `${fmt(st.mean)} ± ${fmt(st.std).replace(/^[+−]/, "").replace(/ pp$/, "")}` : fmt(st.mean);
}

/** One row per group. */
export function renderTable(result) {
  const body = $("#summary-body");
  const toTarget = result.x === "time" ? fmtSeconds : (v) => fmtNum(v, 3);
  const rows = result.groups.map((g, i) => {
    const isBase = g.key === result.baseline;
    const speed = isBase
      ? h("span", { class: "muted" }, "baseline")
      : h("span", null,
        h("strong", { class: "speedup" }, isNum(g.speedup) ? `${g.speedup.toFixed(2)}×` : "–"),
        g.speedup_paired && isNum(g.speedup_paired.mean)
          ? h("span", { class: "muted small detail" }, `paired ${g.speedup_paired.mean.toFixed(2)}${isNum(g.speedup_paired.std) ? " ± " + g.speedup_paired.std.toFixed(2) : ""} (n=${g.speedup_paired.n})`)
          : null,
        isNum(g.speedup_seconds) && result.x !== "time" ? h("span", { class: "muted small detail speedup-seconds" }, `${g.speedup_seconds.toFixed(2)}× in seconds`) : null);
    const fd = g.final_diff;
    let diff = h("span", { class: "muted" }, isBase ? "baseline" : "–");
    if (!isBase && fd && isNum(fd.mean)) {
      diff = h("span", { title: fd.paired ? "per-seed differences" : "difference of means (Welch)" },
        h("strong", { class: fd.mean >= 0 ? "pos" : "neg" }, fmtPts(fd.mean)),
        isNum(fd.std) ? ` ± ${Math.abs(100 * fd.std).toFixed(2)}` : "",
        h("span", { class: "muted small detail" }, `${fd.paired ? "paired" : "unpaired"}, n=${fd.n}${isNum(fd.se) ? `, SE ${Math.abs(100 * fd.se).toFixed(2)}` : ""}`));
    }
    const tt = g.to_target;
    const pruned = prunedIn(result, g);
    // The label breaks between its fields only, never inside one ("gamma=0.001" stays whole).
    const parts = labelParts(g).flatMap((part, j) => [j ? ", " : null, h("span", { class: "gf" }, part)]);
    return h("tr", { class: isBase ? "baseline" : null, dataset: { group: g.key, pruned: pruned ? String(pruned) : null } },
      h("td", { class: "group-cell" }, h("span", { class: "swatch", dataset: { color: chartHelpers.color(i) } }), h("span", { class: "group-label", title: g.label }, ...parts),
        isBase ? h("span", { class: "badge" }, "baseline") : null,
        pruned ? h("span", { class: "state state-pruned mini", title: "tuning trials stopped early as losers" }, pruned === g.n ? "pruned" : `${pruned} of ${g.n} pruned`) : null),
      h("td", { class: "num group-n" }, String(g.n)),
      h("td", { class: "small" }, g.seeds.join(", ")),
      h("td", { class: "num" }, pm(g.best, fmtAcc)),
      h("td", { class: "num" }, pm(g.final, fmtAcc)),
      h("td", { class: "num to-target" }, tt && tt.reached ? `${pm(tt, toTarget)} ` : "not reached ",
        h("span", { class: "muted small" }, `(${tt ? tt.reached : 0}/${g.n})`),
        tt && tt.at_first_eval
          ? h("span", { class: "muted small detail at-first-eval", title: "reached at the run's first evaluation: the true crossing may be earlier" }, `${tt.at_first_eval} at 1st eval`)
          : null),
      h("td", { class: "num to-target-seconds col-seconds" }, g.to_target_seconds && g.to_target_seconds.reached ? pm(g.to_target_seconds, fmtSeconds) : "–"),
      h("td", { class: "num" }, speed),
      h("td", { class: "num" }, diff),
      h("td", { class: "small run-links" }, ...g.run_ids.flatMap((id, j) => [j ? " " : null, h("a", { href: `/runs/${id}` }, `#${id}`)])));
  });
  body.replaceChildren(...rows);
  paintSwatches(body);
}
