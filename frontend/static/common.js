// Shared helpers for every page: API calls, safe DOM building, number formats.
// Everything that came from a user is put in the page with textContent, never innerHTML.
"use strict";

const B = (window.B = {});

/** An API error: HTTP status, the parsed body (FastAPI's {detail}) and a readable message. */
class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}
B.ApiError = ApiError;

/** Fetch JSON from the API; throws ApiError on a non-2xx answer. Every call carries
 * X-Requested-With, which the server asks of changes (a cross-site form cannot send it). */
B.api = async function api(path, { method = "GET", body, signal } = {}) {
  const opts = { method, headers: { Accept: "application/json", "X-Requested-With": "fetch" }, signal };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = text;
    }
  }
  if (!res.ok) {
    throw new ApiError(res.status, data, B.errorMessage(data) || `${res.status} ${res.statusText}`);
  }
  return data;
};

/** An EventSource on run runId's event stream. EventSource cannot send headers, and a token in
 * a URL lands in access logs, so this first asks for a short-lived ticket for that run (a POST
 * that carries the token like every API call, see auth.js) and puts only the ticket in the URL. */
B.openEvents = async function openEvents(runId, params = {}) {
  const { ticket } = await B.api(`/api/runs/${runId}/events/ticket`, { method: "POST" });
  const query = new URLSearchParams({ ...params, ticket });
  return new EventSource(`/api/runs/${runId}/events?${query}`);
};

/** A one-line message from a FastAPI error body. */
B.errorMessage = function errorMessage(data) {
  if (!data) return "";
  if (typeof data === "string") return data;
  const d = data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  return JSON.stringify(data);
};

/** Build an element: h("td", {class: "num", title: t}, "text", childNode, ...). */
B.h = function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "checked" || k === "selected" || k === "disabled" || k === "value") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

B.$ = (sel, root = document) => root.querySelector(sel);
B.$$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Read the JSON of a <script type="application/json" id=...> block. */
B.pageData = function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
};

const isNum = (x) => typeof x === "number" && Number.isFinite(x);
B.isNum = isNum;

B.fmtAcc = (x) => (isNum(x) ? (100 * x).toFixed(2) + "%" : "–");
B.fmtPts = (x) => (isNum(x) ? (x >= 0 ? "+" : "−") + Math.abs(100 * x).toFixed(2) + " pp" : "–");
B.fmtNum = function fmtNum(x, digits = 4) {
  if (!isNum(x)) return "–";
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
};
B.fmtSeconds = function fmtSeconds(s) {
  if (!isNum(s)) return "–";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
};
B.fmtDate = function fmtDate(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
};

B.ACTIVE_STATES = ["queued", "running"];
B.isActive = (state) => B.ACTIVE_STATES.includes(state);

/** A state badge. */
B.stateBadge = (state, cancelRequested) =>
  B.h("span", { class: `state state-${state}`, title: cancelRequested ? "cancel requested" : null },
    state + (cancelRequested && B.isActive(state) ? " (cancelling)" : ""));

/** Show a short message at the bottom of the page. */
B.toast = function toast(message, isError = false) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.toggle("toast-error", isError);
  el.hidden = false;
  clearTimeout(B._toastTimer);
  B._toastTimer = setTimeout(() => (el.hidden = true), isError ? 8000 : 3000);
};

/** Resolves when the deferred scripts (Plotly) have run. */
B.domReady = new Promise((resolve) => {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", resolve, { once: true });
  else resolve();
});

/** Run fn every ms while the page is visible (and once at once when it becomes visible). */
B.every = function every(ms, fn) {
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
};

/** Download text as a file. */
B.download = function download(filename, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = B.h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
};

/** CSV text from a header and rows (quotes cells that need it). */
B.toCsv = function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return "";
    const s = String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.map(cell).join(","), ...rows.map((r) => r.map(cell).join(","))].join("\n") + "\n";
};

// Download links to the API (<a data-api-download download="name" href="/api/...">): fetched
// with window.fetch, so an access token (auth.js) goes along, then saved under their name.
document.addEventListener("click", async (ev) => {
  const a = ev.target instanceof Element ? ev.target.closest("a[data-api-download]") : null;
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  try {
    const res = await fetch(a.href, { headers: { Accept: "*/*" } });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const tmp = B.h("a", { href: url, download: a.getAttribute("download") || "" });
    document.body.append(tmp);
    tmp.click();
    tmp.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) {
    B.toast(`download failed: ${e.message}`, true);
  }
});
