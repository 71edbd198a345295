// The run page's state, in one object that its modules share (run_charts.js, run_panels.js,
// run_live.js, run.js): the run as last read, the epochs drawn so far, the charts and the live
// stream. What the page was served with (the run's id, its chart specs, the form's options)
// never changes and sits beside it.

import { pageData } from "./common.js";

/** {run_id, charts, options}: the charts from core/metric_schema.py, the options from
 * /api/schema/options (the config table groups fields as the form does). */
export const runData = pageData("run-data");
export const runId = runData.run_id;

export const state = {
  run: null, // GET /api/runs/{id}, then each `run` / `state` event
  lastEpoch: -1, // the last epoch queued for the charts
  seconds: [], // per-epoch durations, for the ETA
  charts: null, // Promise resolved when the plots exist (null before the first epoch)
  layerNames: [], // per-layer quantization error traces, after the mean trace
  pending: [], // epochs waiting for the next animation frame
  flushQueued: false, // a frame is asked for already
  queuePoll: null, // refreshes queued_ahead while the run waits in the queue
  stream: null, // the live EventSource (null: not listening)
};

/** Forget the epochs (a retried run starts from epoch 1 again); returns the charts' promise. */
export function forgetEpochs() {
  const drawn = state.charts;
  state.charts = null;
  state.lastEpoch = -1;
  state.seconds = [];
  state.pending = [];
  return drawn;
}
