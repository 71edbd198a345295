"""The worker's side of tuned sweeps (see ``app.tuning``): a stage-1 run reports each epoch's
val_acc to its Optuna trial and stops when pruned; when any tuned run ends, its trial is told
and its optimizer's stage 2 is created (once) and queued."""

from __future__ import annotations

import logging
from typing import Any

from bamsprod.app import optuna_store, tuning
from bamsprod.app.queue import enqueue_run
from bamsprod.app.settings import Settings

log = logging.getLogger(__name__)


class TrialHook:
    """A stage-1 run's link to its trial. ``pruned`` is set once the pruner stops the run."""

    def __init__(self, s: Settings, run_id: int, sweep_id: int, optimizer: str,
                 number: int, tune: dict[str, Any]) -> None:
        self.s, self.run_id, self.sweep_id, self.optimizer = s, run_id, sweep_id, optimizer
        self.number, self.tune = number, tune
        self.study = optuna_store.load_study(s.database_url, tune, optimizer)
        self.reporter = optuna_store.TrialReporter(self.study, number)

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


def _tell(s: Settings, db: Any, study: Any, run_id: int, state: str, number: int,
          criterion: str) -> None:
    value = db(s, "run_score", tuning.run_score, run_id, criterion)
    optuna_store.tell(study, number, state, value)


def _start_stage2(s: Settings, db: Any, sweep_id: int, optimizer: str) -> list[int]:
    """Create and queue ``optimizer``'s stage 2 if its stage 1 has ended (once); then close
    the trials no worker told (runs cancelled while queued)."""
    new = db(s, "start_stage2", tuning.start_stage2, sweep_id, optimizer)
    if not new:
        return []
    for new_id in new:
        enqueue_run(new_id)
    log.info("sweep %s: stage 2 of %s queued: runs %s", sweep_id, optimizer, new)
    tune = db(s, "sweep_tune", tuning.sweep_tune, sweep_id)
    study = optuna_store.load_study(s.database_url, tune, optimizer)
    open_trials = {t.number for t in study.get_trials(deepcopy=False) if not t.state.is_finished()}
    for run_id, state, number in db(s, "stage1_trials", tuning.stage1_trials, sweep_id,
                                    optimizer):
        if number in open_trials:
            _tell(s, db, study, run_id, state, number, tune["criterion"])
    return new


def start_pending(s: Settings, db: Any) -> list[int]:
    """The reconciler's pass: create and queue each stage 2 whose stage 1 has ended but that
    no worker created (a stage-1 run cancelled while queued, a worker lost at that moment)."""
    queued: list[int] = []
    for sweep_id, optimizer in db(s, "pending_stages", tuning.pending_stages):
        queued += _start_stage2(s, db, sweep_id, optimizer)
    return queued


def after_run(s: Settings, db: Any, run_id: int, state: str) -> list[int]:
    """Tell a stage-1 run's trial how it ended, then create and queue its optimizer's stage 2
    if that was the last stage-1 run to end; returns the queued run ids."""
    trial = db(s, "tune_trial", tuning.trial_of, run_id)
    if trial is None or trial.stage != 1:
        return []
    if trial.trial_number is not None:
        tune = db(s, "sweep_tune", tuning.sweep_tune, trial.sweep_id)
        study = optuna_store.load_study(s.database_url, tune, trial.optimizer)
        _tell(s, db, study, run_id, state, trial.trial_number, tune["criterion"])
    return _start_stage2(s, db, trial.sweep_id, trial.optimizer)
