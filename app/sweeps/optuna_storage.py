"""Optuna's side of tuned sweeps: its RDB storage in our database, studies, trial reporting.

Each optimizer of a tuned sweep is one Optuna study (maximize val_acc, successive halving
pruner); each stage-1 run is one trial. Optuna keeps its own tables and its own Alembic
version table, so it lives beside ours, never among them: in PostgreSQL the schema ``optuna``
of the same database; in SQLite the file ``<database>.optuna`` next to ours.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bamsprod.app.store.engine import get_engine, is_sqlite

if TYPE_CHECKING:
    import optuna

SCHEMA = "optuna"
_storages: dict[str, Any] = {}
_lock = threading.Lock()


def _storage_args(database_url: str) -> tuple[str, dict[str, Any]]:
    """Optuna's URL and engine arguments for our ``database_url``."""
    if is_sqlite(database_url):
        url = sa.make_url(database_url)
        if not url.database or url.database == ":memory:":
            return "sqlite://", {}
        return url.set(database=f"{url.database}.optuna").render_as_string(False), {}
    with get_engine(database_url).begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    args = {"connect_args": {"options": f"-csearch_path={SCHEMA}"}, "pool_pre_ping": True}
    return database_url, args


def storage(database_url: str) -> optuna.storages.RDBStorage:
    """The (cached) Optuna storage that belongs to ``database_url``."""
    import optuna

    with _lock:
        if database_url not in _storages:
            optuna.logging.set_verbosity(logging.WARNING)
            for attempt in range(3):
                try:
                    url, args = _storage_args(database_url)
                    _storages[database_url] = optuna.storages.RDBStorage(url, engine_kwargs=args)
                    break
                except sa.exc.DBAPIError:
                    # Another process creating the schema or Optuna's tables at the same moment.
                    if attempt == 2:
                        raise
                    time.sleep(0.2 * (attempt + 1))
        return _storages[database_url]


def study_name(prefix: str, optimizer: str) -> str:
    return f"bamsprod-{prefix}-{optimizer}"


def pruner(tune: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Successive halving (asynchronous, ASHA-style) as the sweep's definition states it."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=int(tune["min_resource"]),
        reduction_factor=int(tune["reduction_factor"]),
        min_early_stopping_rate=0,
    )


def create_study(database_url: str, tune: dict[str, Any], optimizer: str,
                 seed: int) -> optuna.Study:
    import optuna

    return optuna.create_study(
        study_name=study_name(tune["study"], optimizer),
        storage=storage(database_url),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=pruner(tune),
    )


def load_study(database_url: str, tune: dict[str, Any], optimizer: str) -> optuna.Study:
    import optuna

    return optuna.load_study(
        study_name=study_name(tune["study"], optimizer),
        storage=storage(database_url),
        pruner=pruner(tune),
    )


def delete_study(database_url: str, tune: dict[str, Any], optimizer: str) -> None:
    """Delete a study; one that is gone already is fine."""
    import optuna

    try:
        optuna.delete_study(study_name=study_name(tune["study"], optimizer),
                            storage=storage(database_url))
    except KeyError:
        pass


class TrialReporter:
    """Reports each epoch's val_acc of a stage-1 run to its trial; ``pruned`` once the pruner
    says the run lost."""

    def __init__(self, study: optuna.Study, trial_number: int) -> None:
        self.study = study
        storage = study._storage
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial_number
        )
        self.pruned = False

    def running(self) -> bool:
        """False once the trial was told (pruned, completed or failed)."""
        from optuna.trial import TrialState

        return self.study._storage.get_trial(self.trial_id).state == TrialState.RUNNING

    def report(self, epoch: int, val_acc: float | None) -> bool:
        """Report ``val_acc`` at step ``epoch``; True when the run should stop (pruned)."""
        import optuna

        if val_acc is None or self.pruned:
            return self.pruned
        trial = optuna.trial.Trial(self.study, self.trial_id)
        trial.report(float(val_acc), step=epoch)
        self.pruned = trial.should_prune()
        return self.pruned


def tell(study: optuna.Study, trial_number: int, state: str, value: float | None) -> None:
    """Close the trial: complete with ``value``, pruned, or failed. A trial told already (a
    redelivered task) is left as it is."""
    import optuna
    from optuna.trial import TrialState

    if state == "succeeded" and value is not None:
        args: dict[str, Any] = {"values": value}
    elif state == "pruned":
        args = {"state": TrialState.PRUNED}
    else:
        args = {"state": TrialState.FAIL}
    try:
        study.tell(trial_number, **args)
    except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
        logging.getLogger(__name__).info("trial %s was told already", trial_number)
