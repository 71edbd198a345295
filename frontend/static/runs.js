// Runs table: sort, filter, page (all through GET /api/runs, state kept in the URL),
// refreshed every 2 s while the tab is visible; select rows to compare or cancel them.
// "Next" pages by keyset (after=<last id>, as fast on page 200 as on page 1); the offset
// stays as the position shown, and is what "Prev" and a cleared cursor page by.

import { api } from "./api.js";
import { $, $$, every, fmtAcc, fmtDate, fmtNum, fmtSeconds, h, isActive, pageData, stateBadge, toast } from "./common.js";

const FILTERS = ["state", "q", "optimizer", "model", "dataset", "tag", "sweep"];
const POLL_MS = 2000;
const COLUMNS_KEY = "bamsprod.runs.columns";

// Columns a user may add (the "Columns" menu; kept in the URL's cols= and this browser): the
// learning rate, how long a run took, and every hyperparameter and model argument the
// registries have (a run whose optimizer lacks one shows "–").
const registries = pageData("runs-data") || { optimizers: {}, models: {} };
const seconds = (a, b) => (a ? ((b ? new Date(b) : new Date()) - new Date(a)) / 1000 : null);
const fromConfig = (path) => (r) => path.reduce((v, k) => (v && typeof v === "object" ? v[k] : undefined), r.config);
const EXTRA = new Map([
  ["lr", { label: "lr", value: fromConfig(["lr"]), fmt: (v) => fmtNum(v, 3) }],
  ["duration", { label: "duration", value: (r) => seconds(r.started_at, r.finished_at), fmt: fmtSeconds, title: "started to finished (or to now, while it trains)" }],
  ["batch_size", { label: "batch size", value: fromConfig(["batch_size"]), fmt: String }],
  ["device", { label: "device", value: (r) => r.device, fmt: String }],
  ["sweep_id", { label: "sweep", value: (r) => r.sweep_id, fmt: String }],
]);
for (const [kind, table, key] of [["hparams", registries.optimizers, "hparams"], ["model_args", registries.models, "args"]]) {
  const names = [...new Set(Object.values(table || {}).flatMap((e) => Object.keys(e[key] || {})))].sort();
  for (const name of names) {
    EXTRA.set(`${kind}.${name}`, { label: name.replace(/_/g, " "), group: kind, value: fromConfig([kind, name]), fmt: (v) => (typeof v === "number" ? fmtNum(v, 4) : String(v)) });
  }
}

const url = new URL(location.href);
const st = {
  sort: url.searchParams.get("sort") || "id",
  order: url.searchParams.get("order") || "desc",
  limit: Number(url.searchParams.get("limit")) || 50,
  offset: Number(url.searchParams.get("offset")) || 0,
  after: Number(url.searchParams.get("after")) || 0,
  filters: Object.fromEntries(FILTERS.map((f) => [f, url.searchParams.get(f) || ""])),
  archived: url.searchParams.get("archived") === "1",
  cols: chosenColumns(),
};

/** The added columns: the URL's cols=, else this browser's last choice. */
function chosenColumns() {
  let text = url.searchParams.get("cols");
  if (text === null) {
    try {
      text = localStorage.getItem(COLUMNS_KEY) || "";
    } catch (_) {
      text = "";
    }
  }
  return text.split(",").filter((c) => EXTRA.has(c));
}
const selected = new Map(); // run id -> state
let lastJson = "";
let inflight = null;

function syncUrl() {
  const u = new URL(location.pathname, location.origin);
  if (st.sort !== "id") u.searchParams.set("sort", st.sort);
  if (st.order !== "desc") u.searchParams.set("order", st.order);
  if (st.limit !== 50) u.searchParams.set("limit", st.limit);
  if (st.offset) u.searchParams.set("offset", st.offset);
  if (st.after) u.searchParams.set("after", st.after);
  for (const f of FILTERS) if (st.filters[f]) u.searchParams.set(f, st.filters[f]);
  if (st.archived) u.searchParams.set("archived", "1");
  if (st.cols.length) u.searchParams.set("cols", st.cols.join(","));
  history.replaceState(null, "", u);
}

function query() {
  const p = new URLSearchParams({ sort: st.sort, order: st.order, limit: st.limit });
  if (st.after) p.set("after", st.after);
  else p.set("offset", st.offset);
  for (const f of FILTERS) if (st.filters[f]) p.set(f, st.filters[f]);
  if (st.archived) p.set("archived", "true");
  return p;
}

async function load(force = false) {
  if (inflight) inflight.abort();
  const ctl = new AbortController();
  inflight = ctl;
  let page;
  try {
    page = await api(`/api/runs?${query()}`, { signal: ctl.signal });
  } catch (e) {
    if (e.name === "AbortError") return;
    if (st.after && e.status === 404) { // the cursor's run was deleted: page by offset
      st.after = 0;
      syncUrl();
      load(true);
      return;
    }
    showError(e.message);
    return;
  } finally {
    if (inflight === ctl) inflight = null;
  }
  showError("");
  page.offset = st.offset; // the position shown (a keyset page reports offset 0)
  const json = JSON.stringify(page);
  if (!force && json === lastJson) return;
  lastJson = json;
  render(page);
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg;
  el.hidden = !msg;
}

function render(page) {
  const body = $("#runs-body");
  const rows = page.items.map(row);
  body.replaceChildren(...rows);
  $("#empty").hidden = page.items.length > 0;
  $("#total").textContent = `${page.total} total`;
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  $("#page-info").textContent = `${first}–${last} of ${page.total}`;
  $("#prev").disabled = page.offset <= 0;
  $("#next").disabled = last >= page.total;
  for (const r of page.items) if (selected.has(r.id)) selected.set(r.id, r.state);
  if (page.items.length === 0 && page.offset > 0 && page.total > 0) {
    st.offset = Math.max(0, page.total - st.limit);
    st.after = 0;
    syncUrl();
    load(true);
  }
  updateSelection();
}

function row(r) {
  const box = h("input", {
    type: "checkbox", class: "row-select", checked: selected.has(r.id),
    "aria-label": `select run ${r.id}`,
    onchange: (e) => {
      if (e.target.checked) selected.set(r.id, r.state);
      else selected.delete(r.id);
      updateSelection();
    },
  });
  const frac = r.epochs ? r.epochs_done / r.epochs : 0;
  const epochs = h("td", { class: "num" },
    h("span", { class: "epochs-cell" },
      h("span", { class: "mini-bar" }, h("span", { class: `mini-fill state-${r.state}` })),
      `${r.epochs_done}/${r.epochs}`));
  epochs.querySelector(".mini-fill").style.width = `${Math.round(frac * 100)}%`;
  const name = r.name || `run ${r.id}`;
  return h("tr", { dataset: { runId: r.id, state: r.state }, class: selected.has(r.id) ? "is-selected" : null },
    h("td", { class: "sel" }, box),
    h("td", { class: "num" }, h("a", { href: `/runs/${r.id}` }, String(r.id))),
    h("td", null, stateBadge(r.state, r.cancel_requested)),
    h("td", { class: "name-cell" },
      h("a", { href: `/runs/${r.id}`, class: r.name ? "run-name" : "run-name muted", title: r.error || null }, name),
      r.archived ? h("span", { class: "archived-badge" }, "archived") : null,
      r.tags.length ? h("span", { class: "tags" }, ...r.tags.map((t) => h("span", { class: "tag" }, t))) : null,
      r.sweep_id ? h("a", { class: "sweep-link small", href: `/compare?sweep=${r.sweep_id}` }, `sweep ${r.sweep_id}`) : null),
    h("td", null, r.optimizer),
    h("td", null, r.model),
    h("td", null, r.dataset),
    h("td", { class: "num" }, String(r.seed)),
    epochs,
    h("td", { class: "num" }, fmtAcc(r.best_test_acc)),
    h("td", { class: "num" }, fmtAcc(r.last_test_acc)),
    h("td", { class: "num" }, fmtNum(r.final_quant_error, 3)),
    ...st.cols.map((c) => {
      const col = EXTRA.get(c);
      const v = col.value(r);
      return h("td", { class: "num extra-col", dataset: { col: c } }, v === null || v === undefined ? "–" : col.fmt(v));
    }),
    h("td", { title: r.created_at }, fmtDate(r.created_at)),
  );
}

/** The chosen columns' headers, before "created" (and an empty filter cell under each). */
function renderColumnHeads() {
  for (const th of $$("#runs-table thead .extra-col")) th.remove();
  const [sortRow, filterRow] = $$("#runs-table thead tr");
  for (const c of st.cols) {
    const col = EXTRA.get(c);
    sortRow.lastElementChild.before(h("th", { class: "num extra-col", dataset: { col: c }, title: col.title || (col.group ? c : null) }, col.label));
    filterRow.lastElementChild.before(h("th", { class: "extra-col" }));
  }
}

/** The "Columns" menu: a box per column a user may add, grouped. */
function renderColumnMenu() {
  const box = (c) => h("label", null, h("input", {
    type: "checkbox", value: c, checked: st.cols.includes(c),
    onchange: (e) => {
      st.cols = e.target.checked ? [...st.cols, c] : st.cols.filter((x) => x !== c);
      try {
        localStorage.setItem(COLUMNS_KEY, st.cols.join(","));
      } catch (_) { /* private mode: the URL keeps it */ }
      syncUrl();
      renderColumnHeads();
      load(true);
    },
  }), EXTRA.get(c).label);
  const plain = [...EXTRA.keys()].filter((c) => !EXTRA.get(c).group);
  const of = (g) => [...EXTRA.keys()].filter((c) => EXTRA.get(c).group === g);
  $("#columns-list").replaceChildren(
    ...plain.map(box),
    h("h3", null, "optimizer hyperparameters"), ...of("hparams").map(box),
    h("h3", null, "model arguments"), ...of("model_args").map(box));
}

function updateSelection() {
  const n = selected.size;
  const cmp = $("#compare-selected");
  cmp.disabled = n === 0;
  cmp.textContent = n ? `Compare selected (${n})` : "Compare selected";
  const active = [...selected.values()].filter((s) => isActive(s)).length;
  const cancel = $("#cancel-selected");
  cancel.disabled = active === 0;
  cancel.textContent = active ? `Cancel selected (${active})` : "Cancel selected";
  const verb = st.archived ? "Unarchive" : "Archive";
  $("#archive-selected").disabled = n === 0;
  $("#archive-selected").textContent = n ? `${verb} selected (${n})` : `${verb} selected`;
  const deletable = [...selected.values()].filter((s) => s !== "running").length;
  $("#delete-selected").disabled = deletable === 0;
  $("#delete-selected").textContent = deletable ? `Delete selected (${deletable})` : "Delete selected";
  const boxes = $$(".row-select");
  const all = $("#select-all");
  all.checked = boxes.length > 0 && boxes.every((b) => b.checked);
  all.indeterminate = !all.checked && boxes.some((b) => b.checked);
  for (const tr of $$("#runs-body tr")) tr.classList.toggle("is-selected", selected.has(Number(tr.dataset.runId)));
}

function renderSortHeaders() {
  for (const th of $$("th[data-sort]")) {
    const active = th.dataset.sort === st.sort;
    th.classList.toggle("sorted", active);
    th.setAttribute("aria-sort", active ? (st.order === "asc" ? "ascending" : "descending") : "none");
    th.dataset.arrow = active ? (st.order === "asc" ? "▲" : "▼") : "";
  }
}

// ---- wiring
for (const th of $$("th[data-sort]")) {
  th.tabIndex = 0;
  const go = () => {
    const col = th.dataset.sort;
    if (st.sort === col) st.order = st.order === "asc" ? "desc" : "asc";
    else {
      st.sort = col;
      st.order = ["name", "optimizer", "model", "dataset", "state"].includes(col) ? "asc" : "desc";
    }
    st.offset = 0; st.after = 0;
    renderSortHeaders();
    syncUrl();
    load(true);
  };
  th.addEventListener("click", go);
  th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
}
let debounce = null;
for (const el of $$("[data-filter]")) {
  const f = el.dataset.filter;
  el.value = st.filters[f];
  if (el.tagName === "SELECT" && el.value !== st.filters[f] && st.filters[f]) {
    el.append(h("option", { value: st.filters[f] }, st.filters[f]));
    el.value = st.filters[f];
  }
  el.addEventListener("input", () => {
    st.filters[f] = el.value.trim();
    st.offset = 0; st.after = 0;
    clearTimeout(debounce);
    debounce = setTimeout(() => { syncUrl(); load(true); }, el.tagName === "SELECT" ? 0 : 250);
  });
}
$("#clear-filters").addEventListener("click", () => {
  for (const el of $$("[data-filter]")) el.value = "";
  for (const f of FILTERS) st.filters[f] = "";
  st.offset = 0; st.after = 0;
  syncUrl();
  load(true);
});
$("#limit").value = String(st.limit);
if ($("#limit").value !== String(st.limit)) $("#limit").append(h("option", { selected: true }, String(st.limit)));
$("#limit").addEventListener("change", (e) => { st.limit = Number(e.target.value); st.offset = 0; st.after = 0; syncUrl(); load(true); });
$("#prev").addEventListener("click", () => { st.offset = Math.max(0, st.offset - st.limit); st.after = 0; syncUrl(); load(true); });
$("#next").addEventListener("click", () => {
  const rows = $$("#runs-body tr[data-run-id]");
  st.after = rows.length ? Number(rows[rows.length - 1].dataset.runId) : 0;
  st.offset += st.limit;
  syncUrl();
  load(true);
});
$("#select-all").addEventListener("change", (e) => {
  for (const tr of $$("#runs-body tr")) {
    const id = Number(tr.dataset.runId);
    if (e.target.checked) selected.set(id, tr.dataset.state);
    else selected.delete(id);
    tr.querySelector(".row-select").checked = e.target.checked;
  }
  updateSelection();
});
$("#compare-selected").addEventListener("click", () => {
  const ids = [...selected.keys()].sort((a, b) => a - b);
  location.href = `/compare?runs=${ids.join(",")}`;
});
$("#cancel-selected").addEventListener("click", async () => {
  const ids = [...selected.entries()].filter(([, s]) => isActive(s)).map(([id]) => id);
  if (!ids.length || !confirm(`Cancel ${ids.length} run(s)?`)) return;
  const results = await Promise.allSettled(ids.map((id) => api(`/api/runs/${id}/cancel`, { method: "POST" })));
  const failed = results.filter((r) => r.status === "rejected");
  toast(failed.length ? `${failed.length} could not be cancelled: ${failed[0].reason.message}` : `cancel requested for ${ids.length} run(s)`, failed.length > 0);
  load(true);
});

/** Call `path` on each selected run (POST, or DELETE for "") and say how it went. */
async function onSelected(ids, method, path, done) {
  const results = await Promise.allSettled(ids.map((id) => api(`/api/runs/${id}${path}`, { method })));
  const failed = results.filter((r) => r.status === "rejected");
  toast(failed.length ? `${failed.length} of ${ids.length} failed: ${failed[0].reason.message}` : done, failed.length > 0);
  for (const [i, r] of results.entries()) if (r.status === "fulfilled") selected.delete(ids[i]);
  load(true);
}

$("#archive-selected").addEventListener("click", () => {
  const ids = [...selected.keys()];
  const path = st.archived ? "/unarchive" : "/archive";
  onSelected(ids, "POST", path, `${ids.length} run(s) ${st.archived ? "back in the table" : "archived (tick \"archived\" to see them)"}`);
});
$("#delete-selected").addEventListener("click", () => {
  const ids = [...selected.entries()].filter(([, s]) => s !== "running").map(([id]) => id);
  if (!ids.length || !confirm(`Delete ${ids.length} run(s), their epochs and checkpoints? This cannot be undone.`)) return;
  onSelected(ids, "DELETE", "", `${ids.length} run(s) deleted`);
});
$("#show-archived").checked = st.archived;
$("#show-archived").addEventListener("change", (e) => {
  st.archived = e.target.checked;
  st.offset = 0; st.after = 0;
  selected.clear();
  syncUrl();
  load(true);
});
const deleted = url.searchParams.get("deleted");
if (deleted) {
  toast(`run ${deleted} deleted`);
  url.searchParams.delete("deleted");
  history.replaceState(null, "", url);
}

renderColumnMenu();
renderColumnHeads();
renderSortHeaders();
load(true);
every(POLL_MS, () => load());
