// Calls to this server's API, with the access token when one is held (auth.js): every page
// reaches the API through apiFetch / api / openEvents, never through a patched window.fetch
// or EventSource.

import { askToken, currentToken, tokenDeclined } from "./auth.js";
import { saveBlob, toast } from "./common.js";

/** An API error: HTTP status, the parsed body (FastAPI's {detail}) and a readable message. */
export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

const sameOrigin = (url) => {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch (_) {
    return false;
  }
};

/**
 * fetch() for this server's API: sends "Authorization: Bearer <token>" when a token is held;
 * on a 401 asks for the token (once) and sends the request again. A GET does not ask again
 * after the user declined (background refreshes would ask every few seconds). A URL on another
 * origin is fetched as it is, without the token.
 */
export async function apiFetch(url, init = {}) {
  if (!sameOrigin(url)) return fetch(url, init);
  const method = (init.method || "GET").toUpperCase();
  const send = (t) => {
    const headers = new Headers(init.headers);
    if (t) headers.set("Authorization", `Bearer ${t}`);
    return fetch(url, { ...init, headers });
  };
  const token = currentToken();
  const res = await send(token);
  if (res.status !== 401 || (tokenDeclined() && method === "GET")) return res;
  const fresh = await askToken(Boolean(token));
  return fresh ? send(fresh) : res;
}

/** A one-line message from a FastAPI error body. */
export function errorMessage(data) {
  if (!data) return "";
  if (typeof data === "string") return data;
  const d = data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  return JSON.stringify(data);
}

/** JSON from the API; throws ApiError on a non-2xx answer. Every call carries
 * X-Requested-With, which the server asks of changes (a cross-site form cannot send it). */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", "X-Requested-With": "fetch" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await apiFetch(path, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = text;
    }
  }
  if (!res.ok) throw new ApiError(res.status, data, errorMessage(data) || `${res.status} ${res.statusText}`);
  return data;
}

/**
 * An EventSource on run runId's event stream (GET /api/runs/{id}/events?<params>), with
 * handlers as its listeners: {epoch: fn, state: fn, ..., error: fn} (error is onerror).
 * EventSource cannot send headers, and a token in a URL lands in access logs: when a token is
 * held, the URL carries instead a short-lived ticket for that run from POST
 * /api/runs/{id}/events/ticket (a call that sends the token like every other).
 */
export async function openEvents(runId, handlers = {}, params = {}) {
  const query = new URLSearchParams(params);
  if (currentToken()) {
    const { ticket } = await api(`/api/runs/${runId}/events/ticket`, { method: "POST" });
    query.set("ticket", ticket);
  }
  const source = new EventSource(`/api/runs/${runId}/events?${query}`);
  for (const [name, fn] of Object.entries(handlers)) {
    if (name === "error") source.onerror = fn;
    else source.addEventListener(name, fn);
  }
  return source;
}

/** Download links to the API (<a data-api-download download="name" href="/api/...">): fetched
 * with apiFetch, so the token goes along, then saved under their name. */
export function wireApiDownloads(root = document) {
  root.addEventListener("click", async (ev) => {
    const a = ev.target instanceof Element ? ev.target.closest("a[data-api-download]") : null;
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    try {
      const res = await apiFetch(a.href, { headers: { Accept: "*/*" } });
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      saveBlob(a.getAttribute("download") || "", await res.blob());
    } catch (e) {
      toast(`download failed: ${e.message}`, true);
    }
  });
}
