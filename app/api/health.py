"""GET /api/health: database reachable, broker reachable, workers seen, and the API's plugins
(a broken one with its error; it never makes the service unhealthy)."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response, status

from bamsprod.app.api.security import token_matches
from bamsprod.app.schemas import Health, HealthPart
from bamsprod.app.store.engine import get_engine
from bamsprod.core.plugins import registry

router = APIRouter(tags=["health"])


def _db_check(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _queue_fn(name: str) -> Callable[[], Any]:
    def call() -> Any:
        return getattr(importlib.import_module("bamsprod.app.queue"), name)()

    return call


# A check's answer is reused for this long: a burst of health calls costs one check.
CACHE_SECONDS = 1.0


def _capture(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


class HealthChecks:
    """The checks behind /api/health, on threads of their own (never the event-stream
    poller's or the request threads'), one at a time per part: a caller that comes while a
    check runs waits for that one (its timeout at most) instead of starting another, and an
    answer is reused for ``CACHE_SECONDS``. So a flood of health calls during a broker or
    database hang holds at most one thread and one database connection per part."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="bamsprod-health")
        self.running: dict[str, asyncio.Future[tuple[Any, str | None]]] = {}
        self.answers: dict[str, tuple[float, tuple[Any, str | None]]] = {}

    async def check(self, name: str, fn: Callable[[], Any], timeout: float
                    ) -> tuple[Any, str | None]:
        answer = self.answers.get(name)
        if answer is not None and time.monotonic() - answer[0] < CACHE_SECONDS:
            return answer[1]
        loop = asyncio.get_running_loop()
        future = self.running.get(name)
        if future is None or future.done() or future.get_loop() is not loop:
            future = loop.run_in_executor(self.executor, _capture, fn)
            self.running[name] = future
            future.add_done_callback(
                lambda f: f.cancelled() or self.answers.__setitem__(
                    name, (time.monotonic(), f.result())))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None, f"no answer within {timeout:g} s"


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
    """200 when the database answers (``status`` is ``degraded`` if the broker does not, or no
    worker is alive); 503 when the database does not. Never a 500. With tokens set, the parts,
    errors and worker names only go to a caller with a valid token; others get ``status``
    alone."""
    state = request.app.state
    timeout = state.settings.health_timeout_seconds
    checks: HealthChecks = state.health_checks
    url = state.settings.database_url
    broker_fn = state.broker_check or _queue_fn("broker_ok")
    workers_fn = state.workers_seen or _queue_fn("workers_seen")
    (_, db_err), (broker, broker_err), (workers, workers_err) = await asyncio.gather(
        checks.check("database", lambda: _db_check(url), timeout),
        checks.check("broker", broker_fn, timeout),
        checks.check("workers", workers_fn, timeout),
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
    worker_err = workers_err or (None if seen else
                                 "no worker alive: none has announced itself lately (stopped, "
                                 "killed or not started)")
    if db_err is not None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    overall = ("down" if db_err is not None else
               "ok" if broker_ok and worker_err is None else "degraded")
    if not _may_see_details(request):
        # A protected instance tells strangers only whether it is up: no host, port or name.
        return Health(status=overall)
    # Loaded at start (create_app): every plugin, and a built-in only when it is broken.
    plugins = [e.describe() for e in registry().entries if not (e.builtin and e.ok)]
    return Health(
        status=overall,
        database=HealthPart(ok=db_err is None, detail=db_err),
        broker=HealthPart(ok=broker_ok, detail=broker_err),
        worker=HealthPart(ok=worker_err is None, detail=worker_err),
        workers=names,
        workers_seen=seen,
        plugins=plugins,
    )
