"""The worker's database call: ``db_call(settings, what, fn, *args)`` runs ``fn(session, *args)``
in a fresh session and retries transient errors (SQLite "database is locked", a dropped
PostgreSQL connection) with exponential back-off and full jitter, each try in a fresh session.
Any other error (a bad config, a conflict) is raised at once.

``tasks``, ``tuned`` and ``reconciler`` all reach the database through it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import session_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_RETRY_ATTEMPTS = 8
DB_RETRY_BASE = 0.05
DB_RETRY_CAP = 4.0


def is_transient(exc: BaseException) -> bool:
    """True for database errors worth retrying: locks, busy files, lost connections."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_db_retry(fn: Callable[[], T], *, what: str = "database call",
                  attempts: int = DB_RETRY_ATTEMPTS) -> T:
    """Call ``fn`` (which opens its own session), retrying transient errors with back-off."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            delay = random.uniform(0, min(DB_RETRY_CAP, DB_RETRY_BASE * 2**attempt))
            log.warning("%s failed (%s); retry %d in %.2fs", what, exc.__class__.__name__,
                        attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def db_call(s: Settings, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(session, *args, **kwargs)`` in a fresh session, with transient-error retries."""

    def call() -> T:
        with session_scope(s.database_url) as session:
            return fn(session, *args, **kwargs)

    return with_db_retry(call, what=what)
