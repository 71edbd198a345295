"""The worker's side of tuned sweeps (see ``app.sweeps.tuning``): a stage-1 run reports each
epoch's val_acc to its Optuna trial and stops when pruned; when any tuned run ends, its trial is
told and its optimizer's stage 2 is created (once) and queued."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bamsprod.app import store
from bamsprod.app.queue import enqueue_run
from bamsprod.app.settings import Settings
from bamsprod.app.sweeps import optuna_storage, tuning
from bamsprod.worker.db import db_call

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class TrialHook:
    """A stage-1 run's link to its trial. ``pruned`` is set once the pruner stops the run."""

    def __init__(self, s: Settings, run_id: int, sweep_id: int, optimizer: str,
                 number: int, tune: dict[str, Any]) -> None:
        self.s, self.run_id, self.sweep_id, self.optimizer = s, run_id, sweep_id, optimizer
        self.number, self.tune = number, tune
        self.study = optuna_storage.load_study(s.database_url, tune, optimizer)
        self.reporter = optuna_storage.TrialReporter(self.study, number)

    @property
    def pruned(self) -> bool:
        return self.reporter.pruned

    def on_epoch(self, epoch: int, val_acc: float | None) -> None:
        if self.reporter.report(epoch, val_acc):
            log.info("run %s pruned at epoch %s (val_acc %s)", self.run_id, epoch, val_acc)


def trial_hook(s: Settings, run_id: int) -> TrialHook | None:
    """The hook for a stage-1 run, else None."""
    trial = db_call(s, "tune_trial", store.trial_of, run_id)
    if trial is None or trial.stage != 1 or trial.trial_number is None:
        return None
    tune = db_call(s, "sweep_tune", store.sweep_tune, trial.sweep_id)
    hook = TrialHook(s, run_id, trial.sweep_id, trial.optimizer, trial.trial_number, tune)
    # A retried trial run (its trial told already) trains as a plain run.
    return hook if hook.reporter.running() else None


def _tell(s: Settings, study: optuna.Study, run_id: int, state: str, number: int,
          criterion: str) -> None:
    value = db_call(s, "run_score", store.run_score, run_id, criterion)
    optuna_storage.tell(study, number, state, value)


def _start_stage2(s: Settings, sweep_id: int, optimizer: str) -> list[int]:
    """Create and queue ``optimizer``'s stage 2 if its stage 1 has ended (once); then close
    the trials no worker told (runs cancelled while queued)."""
    new = db_call(s, "start_stage2", tuning.start_stage2, sweep_id, optimizer)
    if not new:
        return []
    for new_id in new:
        enqueue_run(new_id)
    log.info("sweep %s: stage 2 of %s queued: runs %s", sweep_id, optimizer, new)
    tune = db_call(s, "sweep_tune", store.sweep_tune, sweep_id)
    study = optuna_storage.load_study(s.database_url, tune, optimizer)
    open_trials = {t.number for t in study.get_trials(deepcopy=False) if not t.state.is_finished()}
    for run_id, state, number in db_call(s, "stage1_trials", store.stage1_trials, sweep_id,
                                         optimizer):
        if number in open_trials:
            _tell(s, study, run_id, state, number, tune["criterion"])
    return new


def start_pending(s: Settings) -> list[int]:
    """The reconciler's pass: create and queue each stage 2 whose stage 1 has ended but that
    no worker created (a stage-1 run cancelled while queued, a worker lost at that moment)."""
    queued: list[int] = []
    for sweep_id, optimizer in db_call(s, "pending_stages", store.pending_stages):
        queued += _start_stage2(s, sweep_id, optimizer)
    return queued


def after_run(s: Settings, run_id: int, state: str) -> list[int]:
    """Tell a stage-1 run's trial how it ended, then create and queue its optimizer's stage 2
    if that was the last stage-1 run to end; returns the queued run ids."""
    trial = db_call(s, "tune_trial", store.trial_of, run_id)
    if trial is None or trial.stage != 1:
        return []
    if trial.trial_number is not None:
        tune = db_call(s, "sweep_tune", store.sweep_tune, trial.sweep_id)
        study = optuna_storage.load_study(s.database_url, tune, trial.optimizer)
        _tell(s, study, run_id, state, trial.trial_number, tune["criterion"])
    return _start_stage2(s, trial.sweep_id, trial.optimizer)
