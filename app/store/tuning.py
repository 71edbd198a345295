"""Tuned sweeps' rows: the stage-1 trials, the stage decisions and the validation scores they
read (the rules themselves live in ``app.sweeps.tuning``).

Every stage-1 and stage-2 run has a ``tune_trial`` row (its optimizer, stage and Optuna trial
number). A ``tune_stage`` row, keyed on (sweep, optimizer), records the stage-1 decision; it is
inserted in the same transaction as the stage-2 runs, so two workers finishing at once create
stage 2 once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bamsprod.app.store.runs import new_run
from bamsprod.app.store.tables import EpochMetric, Run, Sweep, TuneStage, TuneTrial, utcnow
from bamsprod.core.config import TERMINAL_STATES, RunConfig


class Stage1Trial(NamedTuple):
    """The ``tune_trial`` row of one stage-1 run to create: its optimizer and Optuna trial."""

    optimizer: str
    number: int


@dataclass
class EndedStage1:
    """An optimizer's stage 1 once every run of it has ended (and stage 2 is undecided): the
    sweep's stored definition, its runs in id order and their validation scores by the criterion."""

    definition: dict[str, Any]
    runs: list[Run]
    scores: dict[int, float]


@dataclass
class StageRows:
    """What the summary of one optimizer's tuning reads: its runs of each stage and the
    stage-1 decision (None while undecided)."""

    stage1: list[Run]
    decided: TuneStage | None
    stage2: list[Run]


def add_stage1_trials(session: Session, sweep_id: int, runs: Sequence[Run],
                      trials: Sequence[Stage1Trial]) -> None:
    """One ``tune_trial`` row per stage-1 run (``runs[i]`` is trial ``trials[i]``), in the
    caller's transaction (``store.create_sweep`` commits it with the sweep)."""
    for trial, run in zip(trials, runs, strict=True):
        session.add(TuneTrial(run_id=run.id, sweep_id=sweep_id, optimizer=trial.optimizer,
                              stage=1, trial_number=trial.number))


def scores(session: Session, run_ids: list[int], criterion: str) -> dict[int, float]:
    """Each run's validation score by ``criterion`` (``best_val_acc``: the highest val_acc over
    its epochs; ``last_val_acc``: at its last epoch with one); runs without val_acc are left
    out. Reads ``val_acc`` only: test metrics never take part in tuning."""
    m = EpochMetric
    if not run_ids:
        return {}
    if criterion == "best_val_acc":
        stmt = (select(m.run_id, sa.func.max(m.val_acc))
                .where(col(m.run_id).in_(run_ids), col(m.val_acc).is_not(None))
                .group_by(m.run_id))
    else:
        last = (select(m.run_id, sa.func.max(m.epoch).label("epoch"))
                .where(col(m.run_id).in_(run_ids), col(m.val_acc).is_not(None))
                .group_by(m.run_id).subquery())
        stmt = select(m.run_id, m.val_acc).join(
            last, sa.and_(m.run_id == last.c.run_id, m.epoch == last.c.epoch))
    return {int(r): float(v) for r, v in session.exec(stmt) if v is not None}


def run_score(session: Session, run_id: int, criterion: str) -> float | None:
    return scores(session, [run_id], criterion).get(run_id)


def stage_runs(session: Session, sweep_id: int, optimizer: str, stage: int) -> list[Run]:
    """``optimizer``'s runs of ``stage`` (1 or 2) in the sweep, in id order."""
    stmt = (select(Run).join(TuneTrial, col(TuneTrial.run_id) == col(Run.id))
            .where(TuneTrial.sweep_id == sweep_id, TuneTrial.optimizer == optimizer,
                   TuneTrial.stage == stage)
            .order_by(col(Run.id)))
    return list(session.exec(stmt))


def stage_rows(session: Session, sweep_id: int, optimizer: str) -> StageRows:
    return StageRows(stage_runs(session, sweep_id, optimizer, 1),
                     session.get(TuneStage, (sweep_id, optimizer)),
                     stage_runs(session, sweep_id, optimizer, 2))


def ended_stage1(session: Session, sweep_id: int, optimizer: str) -> EndedStage1 | None:
    """``optimizer``'s stage 1 with the scores its decision reads, once all of its runs have
    ended; None while one is still going or when stage 2 is decided already."""
    if session.get(TuneStage, (sweep_id, optimizer)) is not None:
        return None
    runs = stage_runs(session, sweep_id, optimizer, 1)
    if not runs or any(r.state not in TERMINAL_STATES for r in runs):
        session.rollback()
        return None
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    ids = [int(r.id) for r in runs]  # type: ignore[arg-type]
    criterion = sweep.definition["tune"]["criterion"]
    return EndedStage1(dict(sweep.definition), runs, scores(session, ids, criterion))


def create_stage2(session: Session, sweep_id: int, optimizer: str, configs: list[RunConfig],
                  best_run_id: int | None = None, value: float | None = None,
                  chosen: dict[str, Any] | None = None) -> list[int]:
    """Record ``optimizer``'s stage-1 decision (``best_run_id``, its ``value`` and the
    ``chosen`` setting; all None: no run qualified) and insert its stage-2 runs, ``queued``, in
    one transaction; returns their ids. Empty when the decision exists already (another worker,
    or a cancel, got there first): nothing is inserted then."""
    stage = TuneStage(sweep_id=sweep_id, optimizer=optimizer, created_at=utcnow(),
                      best_run_id=best_run_id, value=value, chosen=chosen or {})
    try:
        session.add(stage)
        session.flush()  # the (sweep, optimizer) key: a second creator stops here
    except IntegrityError:
        session.rollback()
        return []
    new = [new_run(c, sweep_id, utcnow()) for c in configs]
    session.add_all(new)
    session.flush()
    for run in new:
        session.add(TuneTrial(run_id=run.id, sweep_id=sweep_id, optimizer=optimizer, stage=2))
    session.execute(sa.update(Sweep).where(col(Sweep.id) == sweep_id)
                    .values(n_runs=Sweep.n_runs + len(new)))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return []
    return [int(r.id) for r in new]  # type: ignore[arg-type]


def close_stages(session: Session, sweep_id: int, optimizers: Sequence[str]) -> None:
    """Decide every undecided stage of ``optimizers`` as "none" (no best run), so that no
    stage 2 starts (a cancelled sweep stays cancelled)."""
    for optimizer in dict.fromkeys(optimizers):
        if session.get(TuneStage, (sweep_id, optimizer)) is not None:
            continue
        try:
            session.add(TuneStage(sweep_id=sweep_id, optimizer=optimizer, created_at=utcnow()))
            session.commit()
        except IntegrityError:  # a worker decided it meanwhile
            session.rollback()


def stage1_trials(session: Session, sweep_id: int, optimizer: str
                  ) -> list[tuple[int, str, int]]:
    """(run id, state, trial number) of each stage-1 run of ``optimizer``."""
    stmt = (select(Run.id, Run.state, TuneTrial.trial_number)
            .join(TuneTrial, col(TuneTrial.run_id) == col(Run.id))
            .where(TuneTrial.sweep_id == sweep_id, TuneTrial.optimizer == optimizer,
                   TuneTrial.stage == 1, col(TuneTrial.trial_number).is_not(None)))
    return [(int(a), str(b), int(c)) for a, b, c in session.exec(stmt)]


def pending_stages(session: Session) -> list[tuple[int, str]]:
    """(sweep, optimizer) pairs whose stage 2 is not decided yet."""
    t, st = TuneTrial, TuneStage
    stmt = (select(t.sweep_id, t.optimizer).where(t.stage == 1).distinct()
            .outerjoin(st, sa.and_(st.sweep_id == t.sweep_id, st.optimizer == t.optimizer))
            .where(col(st.sweep_id).is_(None)))
    return [(int(a), str(b)) for a, b in session.exec(stmt)]


def trial_of(session: Session, run_id: int) -> TuneTrial | None:
    """The ``tune_trial`` row of a run (None: not part of a tuned sweep)."""
    return session.get(TuneTrial, run_id)


def sweep_tune(session: Session, sweep_id: int) -> dict[str, Any]:
    """The ``tune`` part of a tuned sweep's stored spec (its study prefix, seeds, criterion)."""
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    return dict(sweep.definition["tune"])
