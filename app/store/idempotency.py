"""Submit once, whatever the retries: a run created under a client's ``Idempotency-Key``.

A client that sent a submit and got no answer (a timeout, a dropped connection) cannot know
whether the run exists; retried with the same key, the submit returns the run the first try
created instead of a second one. The key is unique in the ``run`` table, so two tries racing
each other create one run between them. A key names one config: reused with another, the
submit is refused (``IdempotencyMismatch``). A key is free again once its run is deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bamsprod.app.store.runs import new_run
from bamsprod.app.store.tables import Run, utcnow
from bamsprod.core.config import RunConfig

__all__ = ["IdempotencyMismatch", "create_run_once"]


class IdempotencyMismatch(ValueError):
    """The key already created a run with another config."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"this Idempotency-Key was used for another run config (run {run_id}); "
                         "use a new key for a new run")
        self.run_id = run_id


def _existing(session: Session, key: str) -> Run | None:
    return session.exec(select(Run).where(col(Run.idempotency_key) == key)).first()


def _same(run: Run, config: RunConfig) -> Run:
    if run.config != config.model_dump(mode="json"):
        raise IdempotencyMismatch(int(run.id))  # type: ignore[arg-type]
    return run


def create_run_once(session: Session, config: RunConfig, key: str | None) -> tuple[Run, bool]:
    """``(run, created)``: a new ``queued`` run for ``config``, or with ``key``, the run that
    key created before (``created`` False). ``IdempotencyMismatch`` when the key's run has
    another config. Commits."""
    if key is not None and (run := _existing(session, key)) is not None:
        session.commit()
        return _same(run, config), False
    run = new_run(config, None, utcnow())
    run.idempotency_key = key
    session.add(run)
    try:
        session.commit()
    except sa.exc.IntegrityError:  # a concurrent try with the same key won
        session.rollback()
        existing = _existing(session, key) if key is not None else None
        if existing is None:
            raise
        session.commit()
        return _same(existing, config), False
    session.refresh(run)
    session.commit()  # end the refresh's read: the connection goes back to the pool
    return run, True
