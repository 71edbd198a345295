"""The worker's side of tuned sweeps (see ``app.tuning``): a stage-1 run reports each epoch's
val_acc to its Optuna trial and stops when pruned; when any tuned run ends, its trial is told
and its optimizer's stage 2 is created (once) and queued."""

from __future__ import annotations

import logging
from typing import Any

from app import studies, tuning
from app.queue import enqueue_run
from app.settings import Settings

log = logging.getLogger(__name__)


class TrialHook:
    """A stage-1 run's link to its trial. ``pruned`` is set once the pruner stops the run."""

    def __init__(self, s: Settings, run_id: int, sweep_id: int, optimizer: str,
                 number: int, tune: dict[str, Any]) -> None:
        self.s, self.run_id, self.sweep_id, self.optimizer = s, run_id, sweep_id, optimizer
        self.number, self.tune = number, tune
        self.study = studies.load_study(s.database_url, tune, optimizer)
        self.reporter = studies.TrialReporter(self.study, number)

    @property
    def pruned(self) -> bool:
        return self.reporter.pruned

    def on_epoch(self, epoch: int, val_acc: float | None) -> None:
        if self.reporter.report(epoch, val_acc):
            log.info("run %s pruned at epoch %s (val_acc %s)", self.run_id, epoch, val_acc)


def trial_hook(s: Settings, db: Any, run_id: int) -> TrialHook | None:
    """The hook for a stage-1 run, else None. ``db`` is ``worker.tasks.db_call``."""
    trial = db(s, "tune_trial", tuning.trial_of, run_id)
    if trial is None or trial.stage != 1 or trial.trial_number is None:
        return None
    tune = db(s, "sweep_tune", tuning.sweep_tune, trial.sweep_id)
    hook = TrialHook(s, run_id, trial.sweep_id, trial.optimizer, trial.trial_number, tune)
    # A retried trial run (its trial told already) trains as a plain run.
    return hook if hook.reporter.running() else None


def start_pending(s: Settings, db: Any) -> list[int]:
    """The reconciler's pass: create and queue each stage 2 whose stage 1 has ended but that
    no worker created (a stage-1 run cancelled while queued, a worker lost at that moment)."""
    queued: list[int] = []
    for sweep_id, optimizer in db(s, "pending_stages", tuning.pending_stages):
        for new_id in db(s, "start_stage2", tuning.start_stage2, sweep_id, optimizer):
            enqueue_run(new_id)
            queued.append(new_id)
    if queued:
        log.info("reconciler queued stage-2 runs %s", queued)
    return queued


def after_run(s: Settings, db: Any, run_id: int, state: str) -> list[int]:
    """Tell a stage-1 run's trial how it ended, then create and queue its optimizer's stage 2
    if that was the last stage-1 run to end; returns the queued run ids."""
    trial = db(s, "tune_trial", tuning.trial_of, run_id)
    if trial is None or trial.stage != 1:
        return []
    tune = db(s, "sweep_tune", tuning.sweep_tune, trial.sweep_id)
    if trial.trial_number is not None:
        value = db(s, "run_score", tuning.run_score, run_id, tune["criterion"])
        study = studies.load_study(s.database_url, tune, trial.optimizer)
        studies.tell(study, trial.trial_number, state, value)
    new = db(s, "start_stage2", tuning.start_stage2, trial.sweep_id, trial.optimizer)
    for new_id in new:
        enqueue_run(new_id)
    if new:
        log.info("sweep %s: stage 2 of %s queued: runs %s", trial.sweep_id, trial.optimizer, new)
    return new
