"""The FastAPI app factory: ``uvicorn --factory app.main:create_app``.

Nothing is built at import. ``create_app`` migrates the database (Alembic ``upgrade head``),
wires the queue client (``app.queue.enqueue_run`` unless one is injected) and mounts the API,
its documentation (``app.api_docs``) and the dashboard (``app.pages``).
Tokens and security headers: see ``app.security``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bamsprod.app import store
from bamsprod.app.api import api_router
from bamsprod.app.api.convex import ConvexResults
from bamsprod.app.api.events import Broadcaster
from bamsprod.app.api.health import HealthChecks
from bamsprod.app.api_docs import install_api_docs
from bamsprod.app.csrf import CSRFGuard
from bamsprod.app.db import init_db
from bamsprod.app.db_errors import UNAVAILABLE, database_unavailable
from bamsprod.app.field_errors import FieldError
from bamsprod.app.middleware import HeadAsGet, SingleHeaders
from bamsprod.app.safejson import dumps
from bamsprod.app.security import (
    EarlyAuth,
    SecurityHeaders,
    install_log_redaction,
    unreadable_body_auth_error,
)
from bamsprod.app.settings import Settings, get_settings
from bamsprod.core.plugins import registry

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 to request bodies over ``max_bytes``: by Content-Length, else (a chunked body)
    by reading it here first, up to the limit, and handing the app the buffered body. (Raising
    while the app reads would be caught by FastAPI's body parsing and answered 400.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = [v for n, v in scope.get("headers", []) if n == b"content-length"]
        if any(v.isdigit() and int(v) > self.max_bytes for v in lengths):
            await self._reject(send)
            return
        if not lengths:
            receive = await self._buffered(receive)
            if receive is None:
                await self._reject(send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _buffered(self, receive: Receive) -> Receive | None:
        """``receive`` with the whole body read ahead (None when it is over the limit)."""
        chunks: list[bytes] = []
        size = 0
        ahead: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: pass that on
                ahead.append(message)
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        ahead.insert(0, {"type": "http.request", "body": b"".join(chunks), "more_body": False})

        async def replay() -> Message:
            return ahead.pop(0) if ahead else await receive()

        return replay

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"},
            status_code=413,
        )
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


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
    With ``pages`` the dashboard (``app.pages.install_pages``) is mounted too, when present.
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
        docs_url=None,  # app.api_docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    install_log_redaction()  # no ?ticket= in access logs
    app.state.enqueue = enqueue or _default_enqueue
    app.state.broker_check = broker_check
    app.state.workers_seen = workers_seen
    app.state.broadcaster = Broadcaster(settings.database_url, settings.sse_poll_seconds)
    app.state.health_checks = HealthChecks()
    app.state.convex = ConvexResults()
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # gzip for JSON and CSV; Starlette never compresses text/event-stream (SSE must flush).
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(EarlyAuth, settings=settings)  # before any body is read
    app.add_middleware(CSRFGuard)
    app.add_middleware(HeadAsGet)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SingleHeaders)  # before any check reads Host, Authorization or Origin
    app.add_middleware(SecurityHeaders)  # outermost: 400s, 403s and 413s get the headers too

    @app.exception_handler(store.RunNotFound)
    @app.exception_handler(store.SweepNotFound)
    async def _not_found(_: Request, exc: LookupError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    for unavailable in UNAVAILABLE:  # a locked, full or unreachable database: 503
        app.add_exception_handler(unavailable, database_unavailable)

    @app.exception_handler(store.RunStateError)
    async def _conflict(_: Request, exc: store.RunStateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            denied = await unreadable_body_auth_error(request)  # the token is checked first
            if denied is not None:
                return JSONResponse({"detail": denied.detail}, status_code=denied.status_code,
                                    headers=denied.headers)
        # The rejected input goes back in the answer; it may hold NaN or a lone surrogate,
        # which plain JSON cannot carry, so it is scrubbed (``app.safejson``): never a 500.
        # A whole-mapping check (hparams, model_args) names its entry: it joins the loc.
        errors = [{**e, "loc": list(FieldError.from_dict(e).full_loc)} for e in exc.errors()]
        return Response(dumps({"detail": errors}), status_code=422,
                        media_type="application/json")

    app.include_router(api_router)
    install_api_docs(app)
    if pages and importlib.util.find_spec("bamsprod.app.pages") is not None:
        from bamsprod.app.pages import install_pages

        install_pages(app)
    return app
