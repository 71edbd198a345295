"""The worker's side: claim, re-claim, heartbeat, release and finish a run, and find runs
whose task may be lost. Each is one conditional update, so two workers never both win.

Every claim draws a new ``lease`` and returns it; the heartbeat, the epochs
(``record_epoch(..., lease=)``), the hand-back and the final state of the worker holding it
are conditional on it. So a worker that lost the run (taken over while it looked dead, even
by a worker of the same name) has every further write refused, and stops."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bamsprod.app.store.base import held, stale, update_run
from bamsprod.app.store.tables import Run, utcnow
from bamsprod.core.config import TERMINAL_STATES


def _take(session: Session, run_id: int, where: object, worker_host: str, device: str,
          start: bool = False) -> str | None:
    """One attempt more at ``run_id`` for ``worker_host`` on ``device`` if ``where`` holds;
    ``start``: the run becomes ``running`` now. Returns the new lease, or None."""
    now = utcnow()
    lease = uuid.uuid4().hex
    begun = {"state": "running", "started_at": now} if start else {}
    ok = update_run(session, run_id, where, heartbeat_at=now, worker_host=worker_host,
                    device=device, attempts=Run.attempts + 1, lease=lease, **begun)
    session.commit()
    return lease if ok else None


def claim_run(session: Session, run_id: int, worker_host: str, device: str) -> str | None:
    """Atomically move a ``queued`` run to ``running``; its lease for exactly one caller, None
    for the others."""
    return _take(session, run_id, col(Run.state) == "queued", worker_host, device, start=True)


def reclaim_run(
    session: Session, run_id: int, worker_host: str, device: str, stale_before: datetime
) -> str | None:
    """Take over a ``running`` run whose heartbeat is older than ``stale_before`` (lost worker);
    the new lease, or None."""
    return _take(session, run_id, stale(stale_before), worker_host, device)


def give_up_run(session: Session, run_id: int, stale_before: datetime, max_attempts: int
                ) -> bool:
    """End ``failed`` a ``running`` run whose worker is gone (a stale heartbeat) after
    ``max_attempts`` tries: a run that kills its worker (out of memory) would otherwise come
    back forever. True when it was given up."""
    where = sa.and_(col(Run.attempts) >= max_attempts, stale(stale_before))
    ok = update_run(
        session, run_id, where, state="failed", finished_at=utcnow(), lease=None,
        error=f"gave up after {max_attempts} attempts: each time, the worker training the run "
              "was lost (killed, e.g. out of memory, or stopped) before it ended; "
              "BAMSPROD_MAX_ATTEMPTS sets how many")
    session.commit()
    return ok


def release_run(session: Session, run_id: int, lease: str | None = None) -> bool:
    """Hand a ``running`` run back to the queue (worker shutdown); its epochs stay, so the next
    worker resumes from its checkpoint. The attempt is given back too: a clean hand-over is not
    a failed try, so the next claim does not count twice. False if it was not running (under
    ``lease``, when given)."""
    ok = update_run(
        session,
        run_id,
        held(lease),
        lease=None,
        state="queued",
        queued_at=utcnow(),
        heartbeat_at=None,
        worker_host=None,
        attempts=sa.case((col(Run.attempts) > 0, Run.attempts - 1), else_=0),
    )
    session.commit()
    return ok


def touch_run(session: Session, run_id: int, worker_host: str | None = None,
              lease: str | None = None) -> bool:
    """Refresh a running run's heartbeat (a worker thread beats every few seconds).

    With ``worker_host`` and/or ``lease``, only while that worker still holds the run: False
    tells a worker that the run was taken from it (cancelled, deleted, or re-claimed after it
    looked dead).
    """
    where = held(lease)
    if worker_host is not None:
        where = sa.and_(where, col(Run.worker_host) == worker_host)
    ok = update_run(session, run_id, where, heartbeat_at=utcnow())
    session.commit()
    return ok


def heartbeats_of(session: Session, worker_host: str) -> dict[int, datetime | None]:
    """The ``running`` runs held under ``worker_host``, with their last heartbeat."""
    rows = session.exec(select(Run.id, Run.heartbeat_at).where(
        col(Run.state) == "running", col(Run.worker_host) == worker_host)).all()
    session.commit()
    return {int(i): hb for i, hb in rows if i is not None}


def expire_runs_of(session: Session, worker_host: str,
                   beats: dict[int, datetime | None] | None = None) -> list[int]:
    """Mark stale every ``running`` run held under ``worker_host``; returns their ids.

    A worker that starts calls this with its own node name: what that name held was left by a
    process that is gone (a crash, a kill, ``bamsprod up`` restarted), so the reconciler may
    take it back at once instead of waiting for the heartbeat to age. With ``beats`` (from
    :func:`heartbeats_of`, read a few beats earlier), only the runs whose heartbeat has not
    moved since: a live worker of the same name still beats its runs, and keeps them.
    """
    where = [col(Run.state) == "running", col(Run.worker_host) == worker_host]
    ids = [int(i) for i in session.exec(select(Run.id).where(*where)) if i is not None]
    if beats is not None:
        ids = [i for i in ids if i in beats]
    expired = []
    for run_id in ids:
        still = where
        if beats is not None and beats[run_id] is not None:
            still = [*where, col(Run.heartbeat_at) <= beats[run_id]]
        if update_run(session, run_id, sa.and_(*still), heartbeat_at=None):
            expired.append(run_id)
    session.commit()
    return expired


def finish_run(
    session: Session,
    run_id: int,
    state: str,
    error: str | None = None,
    diverged_epoch: int | None = None,
    device: str | None = None,
    lease: str | None = None,
) -> bool:
    """End a ``running`` run in terminal ``state``; False if it was not running (under
    ``lease``, when given). ``device``, when given, replaces the claim's device with what
    trained it (device and optimizer path)."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state!r} is not a terminal state ({', '.join(TERMINAL_STATES)})")
    extra = {"device": device[:64]} if device else {}
    ok = update_run(
        session,
        run_id,
        held(lease),
        lease=None,
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
