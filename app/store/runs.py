"""Runs one at a time: create, read, and the user's actions (cancel, retry, delete)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from bamsprod.app.store.base import RunNotFound, RunStateError, stale, update_run
from bamsprod.app.store.tables import EpochMetric, EvalPoint, Run, utcnow
from bamsprod.core.config import TERMINAL_STATES, RunConfig
from bamsprod.core.plugins import plugins_used


def new_run(config: RunConfig, sweep_id: int | None, now: datetime) -> Run:
    """A queued ``Run`` row for ``config`` (not yet added to a session)."""
    return Run(
        name=config.name,
        tags=list(config.tags),
        state="queued",
        config=config.model_dump(mode="json"),
        schema_version=config.schema_version,
        config_hash=config.config_hash(),
        seed=config.seed,
        optimizer=config.optimizer,
        model=config.model,
        dataset=config.dataset,
        epochs=config.epochs,
        sweep_id=sweep_id,
        created_at=now,
        queued_at=now,
        plugins=plugins_used(config),
    )


def create_run(session: Session, config: RunConfig, sweep_id: int | None = None) -> Run:
    """Insert a ``queued`` run for ``config`` and commit."""
    run = new_run(config, sweep_id, utcnow())
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def get_run(session: Session, run_id: int) -> Run | None:
    """The run, read fresh from the database, or None."""
    return session.get(Run, run_id, populate_existing=True)


def require_run(session: Session, run_id: int) -> Run:
    """The run, or raise ``RunNotFound``."""
    run = get_run(session, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def run_row(session: Session, run_id: int) -> dict[str, Any]:
    """The run's columns as a dict; ``RunNotFound`` if there is none."""
    row = session.execute(sa.select(Run.__table__).where(Run.__table__.c.id == run_id)).first()
    if row is None:
        raise RunNotFound(run_id)
    return dict(row._mapping)


def queued_ahead(session: Session, run: Mapping[str, Any]) -> int | None:
    """How many queued runs a worker takes before ``run`` (queued first, then lower id first);
    None unless ``run`` (a ``run_row``) is queued. One count on the indexed ``state`` column."""
    if run["state"] != "queued":
        return None
    t = Run.__table__.c
    earlier = sa.or_(
        t.queued_at < run["queued_at"], sa.and_(t.queued_at == run["queued_at"], t.id < run["id"])
    )
    stmt = sa.select(sa.func.count()).where(t.state == "queued", earlier)
    return int(session.execute(stmt).scalar_one())


COMPARE_RUN_COLUMNS = (
    "id", "name", "state", "seed", "config", "config_hash", "epochs_done", "retries",
    "created_at", "finished_at",
)


def compare_run_rows(session: Session, run_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The columns a comparison needs of each run, in ``run_ids`` order, in one query;
    ``RunNotFound`` for the first id with no run."""
    if not run_ids:
        return []
    t = Run.__table__.c
    stmt = sa.select(*[t[c] for c in COMPARE_RUN_COLUMNS]).where(t.id.in_(list(run_ids)))
    found = {r["id"]: dict(r) for r in session.execute(stmt).mappings()}
    for i in run_ids:
        if i not in found:
            raise RunNotFound(i)
    return [found[i] for i in run_ids]


def request_cancel(session: Session, run_id: int, stale_before: datetime | None = None) -> Run:
    """Cancel: a queued run, or a running one whose heartbeat is older than ``stale_before``
    (its worker is gone), ends ``cancelled`` now; a live running one is flagged for its worker.

    Raises ``RunNotFound``, or ``RunStateError`` when the run has finished other than cancelled.
    """
    now = utcnow()
    if not update_run(
        session,
        run_id,
        sa.or_(col(Run.state) == "queued", stale(stale_before)),
        state="cancelled",
        cancel_requested=True,
        finished_at=now,
    ):
        update_run(session, run_id, col(Run.state) == "running", cancel_requested=True)
    session.commit()
    run = require_run(session, run_id)
    # Cancelling a cancelled run is a no-op; any other end (even one reached after a cancel
    # request, when the worker finished first) is final.
    if run.state in TERMINAL_STATES and run.state != "cancelled":
        raise RunStateError(f"run {run_id} has already finished ({run.state})")
    return run


_RESET_SUMMARY: dict[str, Any] = {
    "epochs_done": 0,
    "last_epoch": None,
    "last_test_acc": None,
    "last_train_loss": None,
    "best_test_acc": None,
    "best_epoch": None,
    "final_quant_error": None,
    "diverged_epoch": None,
    "environment": None,
    "phase": None,
}


def _plugins_now(session: Session, run_id: int) -> dict[str, Any]:
    """The run's plugin record as this process has the plugins now (a retry trains with what
    is installed today); an entry this process does not have keeps its old record."""
    run = get_run(session, run_id)
    if run is None:
        return {}
    now = {(p["kind"], p["name"]): p for p in plugins_used(run.config)}
    kept = [now.pop((p.get("kind"), p.get("name")), p) for p in run.plugins or []]
    return {"plugins": kept + list(now.values())}


def retry_run(session: Session, run_id: int) -> Run:
    """Queue a finished run again as a fresh attempt: its epochs, evaluation points, summary
    and environment are cleared, ``retries`` goes up by one (workers key checkpoints on it) and
    its plugin record is refreshed to the versions installed now. ``RunStateError`` unless the
    run is in a terminal state."""
    ok = update_run(
        session,
        run_id,
        col(Run.state).in_(TERMINAL_STATES),
        state="queued",
        queued_at=utcnow(),
        started_at=None,
        finished_at=None,
        heartbeat_at=None,
        worker_host=None,
        device=None,
        error=None,
        cancel_requested=False,
        retries=Run.retries + 1,
        **_RESET_SUMMARY,
        **_plugins_now(session, run_id),
    )
    if ok:
        for table in (EpochMetric, EvalPoint):
            session.exec(sa.delete(table).where(col(table.run_id) == run_id))  # type: ignore[call-overload]
    session.commit()
    run = require_run(session, run_id)
    if not ok:
        raise RunStateError(f"run {run_id} is {run.state}; only finished runs can be retried")
    return run


def delete_run(session: Session, run_id: int, stale_before: datetime | None = None) -> None:
    """Delete a run and (by cascade) its epochs; ``RunStateError`` while it is running, unless
    its heartbeat is older than ``stale_before`` (its worker is gone)."""
    result = session.exec(  # type: ignore[call-overload]
        sa.delete(Run).where(
            col(Run.id) == run_id, sa.or_(col(Run.state) != "running", stale(stale_before))
        )
    )
    session.commit()
    if result.rowcount == 1:
        return
    run = require_run(session, run_id)
    raise RunStateError(f"run {run_id} is {run.state}; cancel it before deleting")


def set_archived(session: Session, run_id: int, archived: bool) -> Run:
    """Archive a run (left out of the runs table unless asked for) or bring it back; nothing
    else changes. ``RunNotFound`` if there is no such run."""
    update_run(session, run_id, sa.true(), archived=archived)
    session.commit()
    return require_run(session, run_id)
