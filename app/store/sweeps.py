"""Sweeps: created with their runs in one transaction, read, counted, cancelled and deleted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bamsprod.app.store.base import RunStateError, SweepNotFound, stale
from bamsprod.app.store.runs import new_run
from bamsprod.app.store.tables import Run, Sweep, TuneTrial, utcnow
from bamsprod.app.store.tuning import Stage1Trial, add_stage1_trials
from bamsprod.core.config import RunConfig


def create_sweep(
    session: Session, name: str, grid: dict[str, Any], configs: list[RunConfig],
    trials: Sequence[Stage1Trial] = (),
) -> tuple[Sweep, list[Run]]:
    """Insert a sweep (``grid``: its definition, the body as stored) and one queued run per config
    in one transaction: the runs go in as one ``executemany`` INSERT, their ids (assigned in
    insertion order) come back in one SELECT, and the returned (detached) runs hold every
    column. ``trials`` (a tuned sweep's stage 1: one per config, in the same order) become
    the runs' ``tune_trial`` rows in that same transaction; nothing is inserted when any
    insert fails."""
    if trials and len(trials) != len(configs):
        raise ValueError(f"{len(trials)} stage-1 trials for {len(configs)} runs")
    now = utcnow()
    sweep = Sweep(name=name, definition=grid, n_runs=len(configs), created_at=now)
    try:
        session.add(sweep)
        session.flush()
        runs = [new_run(c, sweep.id, now) for c in configs]
        if runs:
            table = Run.__table__
            session.execute(sa.insert(table), [r.model_dump(exclude={"id"}) for r in runs])
            ids = session.execute(
                sa.select(table.c.id).where(table.c.sweep_id == sweep.id).order_by(table.c.id)
            ).scalars()
            for run, run_id in zip(runs, ids, strict=True):
                run.id = run_id
        if trials:
            add_stage1_trials(session, int(sweep.id), runs, trials)  # type: ignore[arg-type]
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return sweep, runs


def get_sweep(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise SweepNotFound(sweep_id)
    return sweep


def list_sweeps(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, and their total."""
    total = session.exec(select(sa.func.count()).select_from(Sweep)).one()
    stmt = select(Sweep).order_by(col(Sweep.id).desc()).limit(limit).offset(offset)
    return list(session.exec(stmt)), int(total)


def runs_of_sweep(session: Session, sweep_id: int) -> list[Run]:
    return list(session.exec(select(Run).where(Run.sweep_id == sweep_id).order_by(col(Run.id))))


def run_ids_of_sweep(session: Session, sweep_id: int, stage: int | None = None) -> list[int]:
    """The ids of a sweep's runs in order; with ``stage``, a tuned sweep's runs of that stage
    only (1: the tuning trials, 2: the seeded runs of the chosen settings)."""
    stmt = select(Run.id).where(Run.sweep_id == sweep_id)
    if stage is not None:
        stmt = stmt.join(TuneTrial, col(TuneTrial.run_id) == col(Run.id)).where(
            TuneTrial.stage == stage)
    return [int(i) for i in session.exec(stmt.order_by(col(Run.id))) if i is not None]


def sweep_state_counts(session: Session, sweep_id: int) -> dict[str, int]:
    rows = session.exec(
        select(Run.state, sa.func.count()).where(Run.sweep_id == sweep_id).group_by(Run.state)
    )
    return {state: n for state, n in rows}


LIVE_STATES = ("queued", "running")


def delete_sweep(session: Session, sweep_id: int) -> list[int]:
    """Delete a sweep and its runs (their epochs by cascade); returns the deleted run ids.

    ``SweepNotFound``, or ``RunStateError`` (nothing deleted) while any of its runs is queued or
    running: cancel them first. The check and the delete share one transaction; a run retried
    meanwhile is left alone and the sweep stays.
    """
    get_sweep(session, sweep_id)
    live = session.exec(
        select(sa.func.count()).where(Run.sweep_id == sweep_id, col(Run.state).in_(LIVE_STATES))
    ).one()
    if live:
        session.rollback()
        raise RunStateError(
            f"sweep {sweep_id} has {live} queued or running runs; cancel them first"
        )
    ids = [int(i) for i in session.exec(
        select(Run.id).where(Run.sweep_id == sweep_id, col(Run.state).not_in(LIVE_STATES))
    )]
    session.exec(  # type: ignore[call-overload]
        sa.delete(Run).where(col(Run.sweep_id) == sweep_id, col(Run.state).not_in(LIVE_STATES))
    )
    left = session.exec(select(sa.func.count()).where(Run.sweep_id == sweep_id)).one()
    if left:
        session.rollback()
        raise RunStateError(f"sweep {sweep_id} has a run queued meanwhile; cancel it first")
    session.exec(sa.delete(Sweep).where(col(Sweep.id) == sweep_id))  # type: ignore[call-overload]
    session.commit()
    return ids


def cancel_sweep(session: Session, sweep_id: int, stale_before: datetime | None = None
                 ) -> tuple[int, int]:
    """Cancel every live run of the sweep in two statements: ``queued`` ones (and ``running``
    ones whose worker is gone) end ``cancelled`` now, live ``running`` ones are flagged for
    their workers. Returns ``(cancelled now, cancel requested)``; ``SweepNotFound``."""
    get_sweep(session, sweep_id)
    mine = col(Run.sweep_id) == sweep_id
    now = sa.update(Run).where(mine, sa.or_(col(Run.state) == "queued", stale(stale_before)))
    ended = session.exec(now.values(  # type: ignore[call-overload]
        state="cancelled", cancel_requested=True, finished_at=utcnow())).rowcount
    flag = sa.update(Run).where(mine, col(Run.state) == "running",
                                col(Run.cancel_requested).is_(False))
    flagged = session.exec(flag.values(cancel_requested=True)).rowcount  # type: ignore[call-overload]
    session.commit()
    return int(ended), int(flagged)
