// Plotly helpers shared by the run, compare and convex pages, which import them as one
// namespace: `import * as chartHelpers from "./charts.js"`.
// Charts are created once; later data goes in with extendTraces / react and a fixed
// uirevision, so the user's zoom and hidden traces survive every update. Plotly itself is the
// classic global window.Plotly, from plotly.min.js (a deferred script): see plotly().

import { shown } from "./common.js";

/**
 * Resolves to window.Plotly once plotly.min.js has run. The pages' modules are async: they
 * start (and fetch their data) while the 1.4 MB Plotly still loads, and wait here to draw.
 */
export function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  const tag = document.querySelector('script[src^="/static/plotly.min.js"]');
  return new Promise((resolve, reject) => {
    tag.addEventListener("load", () => resolve(window.Plotly), { once: true });
    tag.addEventListener("error", () => reject(new Error("plotly.min.js did not load")), { once: true });
  });
}

export const PALETTE = [
  "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df",
  "#bf3989", "#0a7ea4", "#6e7781", "#fb8f44", "#2da44e",
];
export const color = (i) => PALETTE[i % PALETTE.length];

/** rgba() string from a #rrggbb colour. */
export function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

export const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d"],
  toImageButtonOptions: { format: "png", scale: 2 },
};

/** A compact layout with a title and axis titles; uirevision keeps zoom across updates. */
export function layout(title, xTitle, yTitle, extra = {}) {
  const { xaxis = {}, yaxis = {}, ...rest } = extra;
  return {
    title: { text: title, font: { size: 14 }, x: 0.02, xanchor: "left" },
    // Fixed margins (no axis automargin): one layout pass per plot, about half the render time.
    margin: { l: 66, r: 16, t: 34, b: 76 },
    height: 320,
    uirevision: "keep",
    hovermode: "x unified",
    legend: {
      orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0.035, yanchor: "bottom",
      font: { size: 11 },
    },
    xaxis: { title: { text: xTitle, standoff: 6 }, zeroline: false, automargin: false, ...xaxis },
    yaxis: { title: { text: yTitle, standoff: 4 }, zeroline: false, automargin: false, ...yaxis },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
    ...rest,
  };
}

/** Axis settings for an epoch axis up to maxEpoch: whole-number ticks, about 8 of them. */
export function epochTicks(maxEpoch) {
  const raw = Math.max(1, (maxEpoch || 1) / 8);
  const pow = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((v) => v >= raw) || raw;
  return { tick0: 0, dtick: Math.max(1, Math.round(step)) };
}

/** Exponential moving average (TensorBoard style, debiased); nulls pass through. */
export function smooth(ys, weight) {
  if (!weight) return ys;
  let last = 0;
  let count = 0;
  return ys.map((y) => {
    if (y === null || y === undefined || !Number.isFinite(y)) return null;
    last = last * weight + (1 - weight) * y;
    count += 1;
    return last / (1 - Math.pow(weight, count));
  });
}

/**
 * Three traces for one group: lower edge, upper edge filled to the lower ('tonexty'), mean.
 * ys: means, sd: standard deviations (null where n < 2), ns: n per point.
 */
export function bandTraces({ name, color, xs, ys, sd, ns, legendgroup, positive = false }) {
  const lo = [];
  const hi = [];
  for (let i = 0; i < ys.length; i++) {
    const m = ys[i];
    const s = sd[i];
    if (m === null || m === undefined) {
      lo.push(null);
      hi.push(null);
      continue;
    }
    const d = s === null || s === undefined ? 0 : s;
    let low = m - d;
    if (positive && low <= 0) low = m > 0 ? m / 10 : null; // log axes cannot show <= 0
    lo.push(low);
    hi.push(m + d);
  }
  const common = { x: xs, mode: "lines", legendgroup, type: "scatter" };
  return [
    { ...common, y: lo, name: `${name} −σ`, line: { width: 0, color }, showlegend: false, hoverinfo: "skip" },
    {
      ...common, y: hi, name: `${name} +σ`, line: { width: 0, color }, fill: "tonexty",
      fillcolor: alpha(color, 0.18), showlegend: false, hoverinfo: "skip",
    },
    {
      ...common, y: ys, name, line: { width: 2, color }, customdata: ns,
      // Few points: show them as markers too (a single epoch is otherwise invisible).
      mode: xs.length <= 40 ? "lines+markers" : "lines", marker: { size: 5, color },
      hovertemplate: `%{y:.4g} (n=%{customdata})<extra>${escapeForPlotly(name)}</extra>`,
    },
  ];
}

/** Plotly renders hovertemplate/legend strings as its own HTML subset: escape < and >. */
export const escapeForPlotly = (s) => shown(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// ------------------------------------------------------------- empty and zero states

/**
 * Before the first epoch there is nothing to draw: hide the charts (empty axes say nothing)
 * and show #empty-state with a title and a detail line. `title` null shows the charts again.
 */
export function setEmpty(title, detail = "") {
  const box = document.getElementById("empty-state");
  const charts = document.querySelector(".charts");
  if (!box || !charts) return;
  box.hidden = title === null;
  charts.hidden = title !== null;
  if (title === null) return;
  box.querySelector(".empty-title").textContent = title;
  box.querySelector(".empty-detail").textContent = detail;
}

/** What the empty state promises: "Loss, accuracy, ... and sign-flip rate appear here after
 * each epoch", from the server's chart specs (core/metric_schema.py) in the order shown. */
export function comingText(specs) {
  const titles = specs.map((c, i) => (i ? c.title.toLowerCase() : c.title));
  const list = titles.length > 1 ? `${titles.slice(0, -1).join(", ")} and ${titles[titles.length - 1]}` : titles.join("");
  return `${list} appear${titles.length > 1 ? "" : "s"} here after each epoch.`;
}

/** "1st", "2nd", "3rd", "4th", ..., "11th", "12th", "13th", "21st". */
export function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] || "th";
  return `${n}${suffix}`;
}

/** A place in the queue from the API's queued_ahead: "next in line", "2nd in line", ... */
export const inLine = (ahead) => (ahead === 0 ? "next in line" : `${ordinal(ahead + 1)} in line`);

/** Log axes cannot draw 0: said in the legend of a trace whose every value is exactly 0. */
export const ZERO_NOTE = "e = 0, not drawn on log axis";

/** True when ys has at least one value and every value is exactly 0 (nulls aside). */
export function allZero(ys) {
  const vals = (ys || []).filter((y) => y !== null && y !== undefined);
  return vals.length > 0 && vals.every((y) => y === 0);
}

/**
 * On a log chart, append ZERO_NOTE to the name of each trace whose values are all 0 (and take
 * it off again when a non-zero value arrives). baseNames: each trace's name without the note.
 */
export function markZeroTraces(el, baseNames) {
  const names = [];
  const idx = [];
  el.data.forEach((t, i) => {
    if (baseNames[i] === undefined) return;
    const name = allZero(t.y) ? `${baseNames[i]} (${ZERO_NOTE})` : baseNames[i];
    if (name !== t.name) {
      names.push(name);
      idx.push(i);
    }
  });
  return idx.length ? window.Plotly.restyle(el, { name: names }, idx) : Promise.resolve();
}

// ------------------------------------------------------------------ legend placement

/**
 * Keep a bottom legend clear of the x-axis title. The layout's bottom margin holds one legend
 * row; long names wrap onto more rows, which Plotly would fit by pushing the axis title up onto
 * the tick labels. So after every draw the margin (and the height, so the plot area keeps its
 * size) gets one row's height more for each extra row.
 */
export function fitLegend(el) {
  if (el.__legendBase) return;
  el.__legendBase = { b: el.layout.margin.b, height: el.layout.height };
  let busy = false;
  const fit = async () => {
    const legend = el.querySelector(".legend");
    if (busy || !legend || el.layout.showlegend === false) return;
    const rows = new Set(Array.from(legend.querySelectorAll(".traces"),
      (g) => Math.round(g.getBoundingClientRect().top))).size;
    if (!rows) return;
    const extra = Math.ceil((legend.getBBox().height * (rows - 1)) / rows);
    const b = el.__legendBase.b + extra;
    if (b === el.layout.margin.b) return;
    el.__legendRoom = { "margin.b": b, height: el.__legendBase.height + extra };
    busy = true;
    try {
      await window.Plotly.relayout(el, el.__legendRoom);
    } finally {
      busy = false;
    }
  };
  el.on("plotly_afterplot", fit);
  return fit(); // the first draw is already done
}

/** A layout for Plotly.react that keeps the room fitLegend made for el's legend. */
export function keepLegendRoom(el, layout) {
  const room = el && el.__legendRoom;
  if (!room || layout.showlegend === false) return layout;
  return { ...layout, height: room.height, margin: { ...layout.margin, b: room["margin.b"] } };
}
