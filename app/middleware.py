"""Small HTTP rules every request meets before the app: one ``Host`` (and one
``Authorization`` and ``Origin``), and ``HEAD`` wherever ``GET`` is answered.

- :class:`SingleHeaders`: a request carrying ``Host``, ``Authorization`` or ``Origin`` more than
  once is refused (400). Which copy a check reads would otherwise decide what it lets through
  (the first wins here; a proxy in front may pick the last).
- :class:`HeadAsGet`: ``HEAD`` runs the ``GET`` route and sends its status and headers without
  the body (RFC 9110); a stream (server-sent events) is ended right after its headers.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "SingleHeaders"]

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
