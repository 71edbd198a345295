"""GET /api/health: database reachable, broker reachable, workers seen, and the API's plugins
(a broken one with its error; it never makes the service unhealthy)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response, status

from bamsprod.app.db import get_engine
from bamsprod.app.schemas import Health, HealthPart
from bamsprod.app.security import token_matches
from bamsprod.core.plugins import registry

router = APIRouter(tags=["health"])


def _db_check(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _queue_fn(name: str) -> Callable[[], Any]:
    def call() -> Any:
        return getattr(importlib.import_module("bamsprod.app.queue"), name)()

    return call


async def _guarded(fn: Callable[[], Any], timeout: float) -> tuple[Any, str | None]:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn), timeout), None
    except TimeoutError:
        return None, f"no answer within {timeout:g} s"
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _may_see_details(request: Request) -> bool:
    """Details for everyone on an open instance; with tokens set, for a valid token only."""
    s = request.app.state.settings
    if not (s.api_token or s.read_token):
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(given.strip(), s.api_token, s.read_token)


@router.get("/health", response_model=Health,
            responses={503: {"model": Health}})
async def health(request: Request, response: Response) -> Health:
    """200 when the database answers (``status`` is ``degraded`` if the broker does not);
    503 when the database does not. Never a 500. With tokens set, the parts, errors and worker
    names only go to a caller with a valid token; others get ``status`` alone."""
    state = request.app.state
    timeout = state.settings.health_timeout_seconds
    _, db_err = await _guarded(lambda: _db_check(state.settings.database_url), timeout)
    broker_fn = state.broker_check or _queue_fn("broker_ok")
    workers_fn = state.workers_seen or _queue_fn("workers_seen")
    (broker, broker_err), (workers, _) = await asyncio.gather(
        _guarded(broker_fn, timeout), _guarded(workers_fn, timeout)
    )
    if isinstance(broker, tuple):  # (ok, detail)
        broker, broker_err = broker[0], broker_err or broker[1]
    broker_ok = bool(broker) and broker_err is None
    if not broker_ok and broker_err is None:
        broker_err = "broker unreachable"
    names = [str(w) for w in workers] if isinstance(workers, list | tuple | set) else []
    seen = (
        int(workers) if isinstance(workers, int) and not isinstance(workers, bool) else len(names)
    )
    if db_err is not None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    overall = "ok" if db_err is None and broker_ok else ("degraded" if db_err is None else "down")
    if not _may_see_details(request):
        # A protected instance tells strangers only whether it is up: no host, port or name.
        return Health(status=overall)
    # Loaded at start (create_app): every plugin, and a built-in only when it is broken.
    plugins = [e.describe() for e in registry().entries if not (e.builtin and e.ok)]
    return Health(
        status=overall,
        database=HealthPart(ok=db_err is None, detail=db_err),
        broker=HealthPart(ok=broker_ok, detail=broker_err),
        workers=names,
        workers_seen=seen,
        plugins=plugins,
    )
