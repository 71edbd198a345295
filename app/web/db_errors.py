"""A database that cannot answer now is a 503 with ``Retry-After`` and a JSON error.

A SQLite file locked by another process (past ``BAMSPROD_DB_BUSY_TIMEOUT_SECONDS``), a full
disk, a PostgreSQL server that is gone or a connection pool with no free connection (past
``BAMSPROD_DB_POOL_TIMEOUT_SECONDS``) are passing conditions, not bugs: the client is told to
retry, in the API's usual ``{"detail": ...}`` shape, never a plain-text 500. The detail names
the condition only: no SQL, no path, no host.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

__all__ = ["RETRY_AFTER_SECONDS", "UNAVAILABLE", "database_unavailable", "describe"]

RETRY_AFTER_SECONDS = 5
# The errors that mean "not now": the handler below answers them.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.TimeoutError, sa.exc.InterfaceError)


def describe(exc: BaseException) -> str:
    """What is wrong, in words a client may see."""
    if isinstance(exc, sa.exc.TimeoutError):
        return "every database connection is busy"
    text = str(getattr(exc, "orig", exc)).lower()
    if "lock" in text or "busy" in text:  # SQLite "locked", PostgreSQL "lock timeout"
        return "the database is locked by another process"
    if "full" in text or "no space" in text or "disk i/o" in text:
        return "the database's disk is full or failing"
    return "the database is unreachable"


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    what = describe(exc)
    log.warning("answering 503: %s (%s)", what, type(getattr(exc, "orig", exc)).__name__)
    return JSONResponse(
        {"detail": f"{what}; retry in a few seconds"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
