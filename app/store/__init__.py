"""Every database operation the API and the worker use: ``from app import store``.

State changes are single conditional ``UPDATE`` statements (``... WHERE state = 'queued'``), so
two processes racing for the same run cannot both win: ``claim_run`` returns True to exactly one
caller. ``record_epoch`` writes the epoch row and the run's summary in one transaction and is
idempotent per (run, epoch). Functions that change data commit before returning.

By concern: ``runs`` (one run, the user's actions), ``claims`` (the worker's side), ``epochs``
(metrics and summaries), ``sweeps``, ``listing`` (pages of runs); ``base`` holds the errors.
"""

from bamsprod.app.store.base import RunLost, RunNotFound, RunStateError, SweepNotFound
from bamsprod.app.store.claims import (
    cancel_requested,
    claim_run,
    expire_runs_of,
    finish_run,
    give_up_run,
    heartbeats_of,
    reclaim_run,
    release_run,
    requeue_candidates,
    set_environment,
    set_phase,
    touch_run,
)
from bamsprod.app.store.epochs import (
    EVAL_FIELDS,
    eval_columns,
    eval_rows,
    get_metrics,
    metric_columns,
    metric_rows,
    metrics_after_many,
    metrics_for_runs,
    poll_runs,
    record_epoch,
)
from bamsprod.app.store.idempotency import IdempotencyMismatch, create_run_once
from bamsprod.app.store.listing import list_run_rows, list_runs
from bamsprod.app.store.runs import (
    COMPARE_RUN_COLUMNS,
    compare_run_rows,
    create_run,
    delete_run,
    get_run,
    new_run,
    queued_ahead,
    request_cancel,
    require_run,
    retry_run,
    run_row,
    set_archived,
)
from bamsprod.app.store.sweeps import (
    LIVE_STATES,
    cancel_sweep,
    create_sweep,
    delete_sweep,
    get_sweep,
    list_sweeps,
    run_ids_of_sweep,
    runs_of_sweep,
    sweep_state_counts,
)

__all__ = [
    "COMPARE_RUN_COLUMNS",
    "EVAL_FIELDS",
    "IdempotencyMismatch",
    "LIVE_STATES",
    "RunLost",
    "RunNotFound",
    "RunStateError",
    "SweepNotFound",
    "cancel_requested",
    "cancel_sweep",
    "claim_run",
    "compare_run_rows",
    "create_run",
    "create_run_once",
    "create_sweep",
    "delete_run",
    "delete_sweep",
    "eval_columns",
    "eval_rows",
    "expire_runs_of",
    "finish_run",
    "get_metrics",
    "get_run",
    "get_sweep",
    "give_up_run",
    "heartbeats_of",
    "list_run_rows",
    "list_runs",
    "list_sweeps",
    "metric_columns",
    "metric_rows",
    "metrics_after_many",
    "metrics_for_runs",
    "new_run",
    "poll_runs",
    "queued_ahead",
    "reclaim_run",
    "record_epoch",
    "release_run",
    "request_cancel",
    "require_run",
    "requeue_candidates",
    "retry_run",
    "run_ids_of_sweep",
    "run_row",
    "runs_of_sweep",
    "set_archived",
    "set_environment",
    "set_phase",
    "sweep_state_counts",
    "touch_run",
]
