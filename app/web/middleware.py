"""Small HTTP rules every request meets before the app: one ``Host`` (and one
``Authorization`` and ``Origin``), ``HEAD`` wherever ``GET`` is answered, and a bounded body.

- :class:`SingleHeaders`: a request carrying ``Host``, ``Authorization`` or ``Origin`` more than
  once is refused (400). Which copy a check reads would otherwise decide what it lets through
  (the first wins here; a proxy in front may pick the last).
- :class:`HeadAsGet`: ``HEAD`` runs the ``GET`` route and sends its status and headers without
  the body (RFC 9110); a stream (server-sent events) is ended right after its headers.
- :class:`BodySizeLimit`: a request body over ``Settings.max_body_bytes`` is answered 413,
  whether it announces its length or arrives chunked.

The token and CSRF checks and the security headers are their siblings, in ``app.api.security``
and ``app.api.csrf``; ``app.web.main`` stacks them all.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "HeadAsGet", "SingleHeaders"]

ONCE = (b"host", b"authorization", b"origin")
_DISCONNECT: Message = {"type": "http.disconnect"}


class SingleHeaders:
    """ASGI middleware: 400 for a request with a repeated ``Host``, ``Authorization`` or
    ``Origin`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            counts = Counter(name for name, _ in scope.get("headers", ()) if name in ONCE)
            repeated = sorted(n.decode() for n, c in counts.items() if c > 1)
            if repeated and scope["type"] == "http":
                response = JSONResponse(
                    {"detail": f"the {repeated[0]} header must be sent once"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeadAsGet:
    """ASGI middleware: answer ``HEAD`` as ``GET`` without the body (see the module
    docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = asyncio.Event()

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.start" and not answered.is_set():
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                answered.set()

        async def receive_head() -> Message:
            # Once the headers are out, the app is told the client left: a stream stops.
            if answered.is_set():
                return _DISCONNECT
            incoming = asyncio.ensure_future(receive())
            waiting = asyncio.ensure_future(answered.wait())
            done, _ = await asyncio.wait({incoming, waiting},
                                         return_when=asyncio.FIRST_COMPLETED)
            if incoming in done:
                waiting.cancel()
                return incoming.result()
            incoming.cancel()
            return _DISCONNECT

        await self.app({**scope, "method": "GET"}, receive_head, send_head)


class BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` once a body passes the limit."""


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
        await response({"type": "http"}, _disconnected, send)


async def _disconnected() -> Message:
    return _DISCONNECT
