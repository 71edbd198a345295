// Shared helpers for every page: safe DOM building, page data, number formats, polling.
// Everything that came from a user is put in the page with textContent, never innerHTML.
// (API calls: api.js.)

// Characters that change how the text around them reads without showing themselves: bidi
// embeddings, overrides and isolates, marks, the BOM and other zero-width formats, the line and
// paragraph separators. User text (a run name, a tag) may hold them; it is shown with each
// written as a visible escape, so "‮txt.exe" cannot pass for "exe.txt".
const INVISIBLE = /[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g;

/** ``text`` with its invisible formatting characters written as ``\u202e`` escapes. */
export const shown = (text) =>
  String(text).replace(INVISIBLE, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));

/** Build an element: h("td", {class: "num", title: t}, "text", childNode, ...). Text children
 * and the title are shown with their invisible formatting characters escaped (``shown``). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "checked" || k === "selected" || k === "disabled" || k === "value") el[k] = v;
      else el.setAttribute(k, v === true ? "" : k === "title" ? shown(v) : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(shown(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Read the JSON of a <script type="application/json" id=...> block. */
export function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

export const isNum = (x) => typeof x === "number" && Number.isFinite(x);

export const fmtAcc = (x) => (isNum(x) ? (100 * x).toFixed(2) + "%" : "–");
export const fmtPts = (x) => (isNum(x) ? (x >= 0 ? "+" : "−") + Math.abs(100 * x).toFixed(2) + " pp" : "–");
export function fmtNum(x, digits = 4) {
  if (!isNum(x)) return "–";
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}
export function fmtSeconds(s) {
  if (!isNum(s)) return "–";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
export function fmtDate(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export const ACTIVE_STATES = ["queued", "running"];
export const isActive = (state) => ACTIVE_STATES.includes(state);

/** A state badge. */
export const stateBadge = (state, cancelRequested) =>
  h("span", { class: `state state-${state}`, title: cancelRequested ? "cancel requested" : null },
    state + (cancelRequested && isActive(state) ? " (cancelling)" : ""));

let toastTimer = null;
/** Show a short message at the bottom of the page. */
export function toast(message, isError = false) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.toggle("toast-error", isError);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), isError ? 8000 : 3000);
}

/** Run fn every ms while the page is visible (and once at once when it becomes visible). */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch (e) {
        console.warn(e);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null && !stopped) {
      clearTimeout(timer);
      tick();
    }
  });
  timer = setTimeout(tick, ms);
  return { stop: () => { stopped = true; if (timer) clearTimeout(timer); } };
}

/** Save a Blob as a file named filename. */
export function saveBlob(filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Download text as a file. */
export const download = (filename, text, type = "text/csv") => saveBlob(filename, new Blob([text], { type }));

/** CSV text from a header and rows (quotes cells that need it). */
export function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return "";
    const s = String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.map(cell).join(","), ...rows.map((r) => r.map(cell).join(","))].join("\n") + "\n";
}

/** Colour each .swatch under root (a table's key to its charts) from its data-color. */
export function paintSwatches(root) {
  for (const sw of $$(".swatch", root)) sw.style.background = sw.dataset.color;
}
