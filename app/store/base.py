"""Store errors and the helpers its modules share: the dialect, a conditional run update
(the single ``UPDATE ... WHERE`` every state change is) and the stale-heartbeat test."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from bamsprod.app.store.tables import Run


class RunNotFound(LookupError):
    """No run with that id (the API answers 404)."""

    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} not found")
        self.run_id = run_id


class SweepNotFound(LookupError):
    """No sweep with that id (the API answers 404)."""

    def __init__(self, sweep_id: int):
        super().__init__(f"sweep {sweep_id} not found")
        self.sweep_id = sweep_id


class RunStateError(RuntimeError):
    """The run's state forbids the operation (the API answers 409)."""


class RunLost(RuntimeError):
    """The worker's lease on the run is gone (cancelled, deleted, or taken over after it looked
    dead): what it would write is refused, and it stops."""

    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} is no longer held by this worker")
        self.run_id = run_id


def held(lease: str | None) -> Any:
    """SQL: the run is ``running`` under ``lease`` (any running run when ``lease`` is None)."""
    running = col(Run.state) == "running"
    return running if lease is None else sa.and_(running, col(Run.lease) == lease)


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def update_run(session: Session, run_id: int, where: Any, **values: Any) -> bool:
    """``UPDATE run SET ... WHERE id = run_id AND where``; True when exactly one row changed."""
    stmt = sa.update(Run).where(col(Run.id) == run_id)
    if where is not None:
        stmt = stmt.where(where)
    result = session.exec(stmt.values(**values))  # type: ignore[call-overload]
    return result.rowcount == 1


def stale(stale_before: datetime | None) -> Any:
    """SQL: the run is ``running`` and its heartbeat is older than ``stale_before``."""
    if stale_before is None:
        return sa.false()
    old = sa.or_(col(Run.heartbeat_at).is_(None), col(Run.heartbeat_at) < stale_before)
    return sa.and_(col(Run.state) == "running", old)
