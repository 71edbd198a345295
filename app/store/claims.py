"""The worker's side: claim, re-claim, heartbeat, release and finish a run, and find runs
whose task may be lost. Each is one conditional update, so two workers never both win."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bamsprod.app.store.base import stale, update_run
from bamsprod.app.tables import Run, utcnow
from bamsprod.core.spec import TERMINAL_STATES


def _take(session: Session, run_id: int, where: object, worker_host: str, device: str,
          start: bool = False) -> bool:
    """One attempt more at ``run_id`` for ``worker_host`` on ``device`` if ``where`` holds;
    ``start``: the run becomes ``running`` now."""
    now = utcnow()
    begun = {"state": "running", "started_at": now} if start else {}
    ok = update_run(session, run_id, where, heartbeat_at=now, worker_host=worker_host,
                    device=device, attempts=Run.attempts + 1, **begun)
    session.commit()
    return ok


def claim_run(session: Session, run_id: int, worker_host: str, device: str) -> bool:
    """Atomically move a ``queued`` run to ``running``; True for exactly one caller."""
    return _take(session, run_id, col(Run.state) == "queued", worker_host, device, start=True)


def reclaim_run(
    session: Session, run_id: int, worker_host: str, device: str, stale_before: datetime
) -> bool:
    """Take over a ``running`` run whose heartbeat is older than ``stale_before`` (lost worker)."""
    return _take(session, run_id, stale(stale_before), worker_host, device)


def release_run(session: Session, run_id: int) -> bool:
    """Hand a ``running`` run back to the queue (worker shutdown); its epochs stay, so the next
    worker resumes from its checkpoint. The attempt is given back too: a clean hand-over is not
    a failed try, so the next claim does not count twice. False if it was not running."""
    ok = update_run(
        session,
        run_id,
        col(Run.state) == "running",
        state="queued",
        queued_at=utcnow(),
        heartbeat_at=None,
        worker_host=None,
        attempts=sa.case((col(Run.attempts) > 0, Run.attempts - 1), else_=0),
    )
    session.commit()
    return ok


def touch_run(session: Session, run_id: int, worker_host: str | None = None) -> bool:
    """Refresh a running run's heartbeat (a worker thread beats every few seconds).

    With ``worker_host``, only while that worker still holds the run: False tells a worker that
    the run was taken from it (cancelled, deleted, or re-claimed after it looked dead).
    """
    where = col(Run.state) == "running"
    if worker_host is not None:
        where = sa.and_(where, col(Run.worker_host) == worker_host)
    ok = update_run(session, run_id, where, heartbeat_at=utcnow())
    session.commit()
    return ok


def expire_runs_of(session: Session, worker_host: str) -> list[int]:
    """Mark stale every ``running`` run held under ``worker_host``; returns their ids.

    A worker that starts calls this with its own node name: whatever that name held was left
    by a process that is gone (a crash, a kill, ``bamsprod up`` restarted), so the reconciler
    may take it back at once instead of waiting for the heartbeat to age.
    """
    held = col(Run.state) == "running", col(Run.worker_host) == worker_host
    ids = [int(i) for i in session.exec(select(Run.id).where(*held)) if i is not None]
    if ids:
        session.exec(  # type: ignore[call-overload]
            sa.update(Run).where(col(Run.id).in_(ids), *held).values(heartbeat_at=None)
        )
    session.commit()
    return ids


def finish_run(
    session: Session,
    run_id: int,
    state: str,
    error: str | None = None,
    diverged_epoch: int | None = None,
    device: str | None = None,
) -> bool:
    """End a ``running`` run in terminal ``state``; False if it was not running. ``device``,
    when given, replaces the claim's device with what trained it (device and optimizer path)."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state!r} is not a terminal state ({', '.join(TERMINAL_STATES)})")
    extra = {"device": device[:64]} if device else {}
    ok = update_run(
        session,
        run_id,
        col(Run.state) == "running",
        state=state,
        finished_at=utcnow(),
        error=error,
        diverged_epoch=diverged_epoch,
        phase=None,
        **extra,
    )
    session.commit()
    return ok


def set_environment(session: Session, run_id: int, environment: dict[str, Any]) -> bool:
    """Record where a ``running`` run trains (``core.environment.environment()``); False if it
    was not running."""
    ok = update_run(session, run_id, col(Run.state) == "running", environment=environment)
    session.commit()
    return ok


def set_phase(session: Session, run_id: int, phase: str | None) -> bool:
    """Record what a ``running`` run does before its first epoch (``core.train`` phases: the
    page shows it), or None once it trains; False if it was not running."""
    ok = update_run(session, run_id, col(Run.state) == "running",
                    phase=None if phase is None else phase[:64])
    session.commit()
    return ok


def cancel_requested(session: Session, run_id: int) -> bool:
    """True when the run should stop: cancel was requested, or the run is gone or not running."""
    row = session.exec(select(Run.cancel_requested, Run.state).where(Run.id == run_id)).first()
    session.commit()  # end the read transaction; the worker polls this often
    if row is None:
        return True
    requested, state = row
    return bool(requested) or state != "running"


def requeue_candidates(
    session: Session, stale_before: datetime, queued_before: datetime | None = None
) -> list[int]:
    """Runs whose task may be lost: ``queued`` since before ``queued_before`` (default
    ``stale_before``) and ``running`` with a heartbeat older than ``stale_before``."""
    queued_before = queued_before or stale_before
    stmt = (
        select(Run.id)
        .where(
            sa.or_(
                sa.and_(col(Run.state) == "queued", col(Run.queued_at) < queued_before),
                stale(stale_before),
            )
        )
        .order_by(col(Run.id))
    )
    ids = list(session.exec(stmt))
    session.commit()
    return [int(i) for i in ids if i is not None]
