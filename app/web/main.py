"""The FastAPI app factory: ``uvicorn --factory app.web.main:create_app``.

Nothing is built at import. ``create_app`` migrates the database (Alembic ``upgrade head``),
wires the queue client (``app.queue.enqueue_run`` unless one is injected) and mounts the API,
its documentation (``app.web.api_docs``) and the dashboard (``app.web.pages``), in named steps:
``_set_state``, ``_add_middleware``, ``_add_error_handlers``. The middleware lives beside it:
tokens and security headers in ``app.api.security``, CSRF in ``app.api.csrf``, the body
limit, single headers and ``HEAD`` in ``app.web.middleware``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from bamsprod.app import store
from bamsprod.app.api import api_router
from bamsprod.app.api.convex import ConvexResults
from bamsprod.app.api.csrf import CSRFGuard
from bamsprod.app.api.events import Broadcaster
from bamsprod.app.api.health import HealthChecks
from bamsprod.app.api.security import (
    EarlyAuth,
    SecurityHeaders,
    install_log_redaction,
    unreadable_body_auth_error,
)
from bamsprod.app.field_errors import FieldError
from bamsprod.app.safejson import dumps
from bamsprod.app.settings import Settings, get_settings
from bamsprod.app.store.engine import init_db
from bamsprod.app.web.api_docs import install_api_docs
from bamsprod.app.web.db_errors import UNAVAILABLE, database_unavailable
from bamsprod.app.web.middleware import BodySizeLimit, HeadAsGet, SingleHeaders
from bamsprod.app.web.pages import install_pages
from bamsprod.core.plugins import registry

log = logging.getLogger(__name__)


def _default_enqueue(run_id: int) -> Any:
    # Imported on use: the API needs no broker connection to start or to be tested.
    return importlib.import_module("bamsprod.app.queue").enqueue_run(run_id)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.broadcaster.stop()


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: Callable[[int], Any] | None = None,
    broker_check: Callable[[], Any] | None = None,
    workers_seen: Callable[[], Any] | None = None,
    migrate: bool = True,
    pages: bool = True,
) -> FastAPI:
    """Build the app for ``settings`` (default: the environment's).

    ``enqueue(run_id)`` queues a run (default ``app.queue.enqueue_run``); ``broker_check()`` and
    ``workers_seen()`` feed /api/health (default ``app.queue.broker_ok`` / ``workers_seen``).
    With ``pages`` (the default) the dashboard (``app.web.pages.install_pages``) is mounted too.
    """
    settings = settings or get_settings()
    settings.ensure_dirs()
    if migrate:
        init_db(settings.database_url)
    registry()  # load the plugins now: a broken one is logged at start and listed in health

    app = FastAPI(
        title="bamsprod",
        summary="Run and compare optimizer experiments on binary neural networks.",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,  # app.web.api_docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_log_redaction()  # no ?ticket= in access logs
    _set_state(app, settings, enqueue=enqueue, broker_check=broker_check,
               workers_seen=workers_seen)
    _add_middleware(app, settings)
    _add_error_handlers(app)
    app.include_router(api_router)
    install_api_docs(app)
    if pages:
        install_pages(app)
    return app


def _set_state(app: FastAPI, settings: Settings, *, enqueue: Callable[[int], Any] | None,
               broker_check: Callable[[], Any] | None,
               workers_seen: Callable[[], Any] | None) -> None:
    """What the routes read from ``request.app.state``."""
    app.state.settings = settings
    app.state.enqueue = enqueue or _default_enqueue
    app.state.broker_check = broker_check
    app.state.workers_seen = workers_seen
    app.state.broadcaster = Broadcaster(settings.database_url, settings.sse_poll_seconds)
    app.state.health_checks = HealthChecks()
    app.state.convex = ConvexResults()


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """The middleware stack; each one added wraps those before it, so the last is outermost."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # gzip for JSON and CSV; Starlette never compresses text/event-stream (SSE must flush).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(EarlyAuth, settings=settings)  # before any body is read
    app.add_middleware(CSRFGuard)
    app.add_middleware(HeadAsGet)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SingleHeaders)  # before any check reads Host, Authorization or Origin
    app.add_middleware(SecurityHeaders)  # outermost: 400s, 403s and 413s get the headers too


def _add_error_handlers(app: FastAPI) -> None:
    """The store's errors as HTTP answers (404, 409, 503), and 422s that name the field."""
    app.add_exception_handler(store.RunNotFound, _not_found)
    app.add_exception_handler(store.SweepNotFound, _not_found)
    app.add_exception_handler(store.RunStateError, _conflict)
    for unavailable in UNAVAILABLE:  # a locked, full or unreachable database: 503
        app.add_exception_handler(unavailable, database_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)


async def _not_found(_: Request, exc: LookupError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def _conflict(_: Request, exc: store.RunStateError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        denied = await unreadable_body_auth_error(request)  # the token is checked first
        if denied is not None:
            return JSONResponse({"detail": denied.detail}, status_code=denied.status_code,
                                headers=denied.headers)
    # The rejected input goes back in the answer; it may hold NaN or a lone surrogate, which
    # plain JSON cannot carry, so it is scrubbed (``app.safejson``): never a 500. A
    # whole-mapping check (hparams, model_args) names its entry: it joins the loc.
    errors = [{**e, "loc": list(FieldError.from_dict(e).full_loc)} for e in exc.errors()]
    return Response(dumps({"detail": errors}), status_code=422, media_type="application/json")
