// The run page, live: Server-Sent Events (GET /api/runs/{id}/events, resumable by epoch) bring
// epochs, the run's summary and its state until the run ends. Epochs are buffered and go into
// the charts once per animation frame.

import { openEvents } from "./api.js";
import * as chartHelpers from "./charts.js";
import { isActive, toast } from "./common.js";
import { createCharts, extendCharts, resetCharts } from "./run_charts.js";
import { renderInfo, renderProgress, renderRun } from "./run_panels.js";
import { runId, state } from "./run_state.js";

/** Append buffered epochs to every chart, once per animation frame. */
function queueEpochs(items) {
  for (const m of items) {
    if (m.epoch <= state.lastEpoch) continue;
    state.lastEpoch = m.epoch;
    if (Number.isFinite(m.seconds)) state.seconds.push(m.seconds);
    state.pending.push(m);
  }
  if (state.pending.length && !state.flushQueued) {
    state.flushQueued = true;
    requestAnimationFrame(flush);
  }
}

async function flush() {
  state.flushQueued = false;
  const items = state.pending;
  state.pending = [];
  if (!items.length) return;
  if (!state.charts) { // the first epoch: draw the charts now
    chartHelpers.setEmpty(null);
    state.charts = createCharts(items);
    await state.charts;
  } else {
    await state.charts;
    await extendCharts(items);
  }
  renderProgress();
  renderInfo();
}

/** The live stream: epochs, the run's summary and its state, until the run ends. */
export async function connect() {
  if (state.stream) state.stream.close();
  state.stream = null;
  let source = null;
  const stop = () => {
    source.close();
    if (state.stream === source) state.stream = null;
  };
  const handlers = {
    epoch: (ev) => queueEpochs([JSON.parse(ev.data)]),
    // The run's summary as the server computed it with those epochs (never recomputed here).
    run: (ev) => {
      state.run = { ...JSON.parse(ev.data), queued_ahead: state.run ? state.run.queued_ahead : null };
      renderProgress();
      renderInfo();
    },
    state: (ev) => {
      const { run } = state;
      const next = JSON.parse(ev.data);
      // The stream's run carries no queue position: keep the last one read while still queued.
      if (run && next.state === "queued" && !Number.isInteger(next.queued_ahead)) next.queued_ahead = run.queued_ahead;
      const restarted = run && !isActive(run.state) && isActive(next.state);
      state.run = next;
      renderRun();
      if (!isActive(next.state)) stop();
      else if (restarted) resetCharts();
    },
    deleted: () => {
      stop();
      toast("this run was deleted", true);
    },
    error: () => {
      // The browser reconnects on its own (with Last-Event-ID); once the run has ended, stop.
      if (state.run && !isActive(state.run.state)) {
        stop();
      } else if (source.readyState === EventSource.CLOSED && state.stream === source) {
        // It gave up (e.g. its ticket expired before a reconnect): a fresh ticket, shortly.
        state.stream = null;
        setTimeout(() => { if (!state.stream) connect(); }, 2000);
      }
    },
  };
  try {
    source = await openEvents(runId, handlers, { after: state.lastEpoch < 0 ? -1 : state.lastEpoch });
  } catch (e) {
    toast(`live updates: ${e.message}`, true);
    return;
  }
  if (state.stream) state.stream.close(); // a newer connect() won the race
  state.stream = source;
}
