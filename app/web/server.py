"""The HTTP server: uvicorn, with the limits a server facing slow or hostile clients needs.

``bamsprod serve`` and ``bamsprod up`` run the API through :func:`run`, whose connections are
:class:`BoundedProtocol` (uvicorn's httptools protocol) with:

- a header timeout (``BAMSPROD_HEADER_TIMEOUT_SECONDS``, 10 s): a connection that has not sent
  a whole request head by then (from its start, or from its request's first byte) is closed,
  with a 408 where nothing was answered yet;
- a body timeout (``BAMSPROD_BODY_TIMEOUT_SECONDS``, 30 s): the same for a request body that
  has not arrived in full (the app then sees the client leave, and its buffers go);
- a cap on open connections (``BAMSPROD_MAX_CONNECTIONS``, 512): one more is answered 503
  with ``Retry-After`` and closed before anything of it is read.

Unauthenticated changes are refused on their headers, before any body is read
(``app.api.security.EarlyAuth``), so a client without a token cannot make the API buffer bodies.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bamsprod.app.settings import Settings, get_settings

__all__ = ["BoundedProtocol", "run"]

PROTOCOL = "bamsprod.app.web.server:BoundedProtocol"


def _answer(status: int, reason: str, detail: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# After answering a request whose body is still arriving, close its connection this soon.
LINGER_SECONDS = 2.0
# Trim the heap once this many body bytes came in and no body is arriving any more.
TRIM_BYTES = 4 * 2**20

TOO_MANY = _answer(503, "Service Unavailable", "too many open connections; retry shortly", 5)
HEAD_TIMEOUT = _answer(408, "Request Timeout", "the request head did not arrive in time")
BODY_TIMEOUT = _answer(408, "Request Timeout", "the request body did not arrive in time")


def _trim_heap() -> None:
    """Hand freed heap memory back to the system: collect the cycles that may still hold
    abandoned bodies (an exception's traceback keeps its frames), then ask glibc to return
    free pages (it keeps them otherwise, and the process's RSS would stay grown)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts and a connection cap (see the
    module docstring)."""

    limits: Settings | None = None
    _open_bodies = 0  # requests of this process whose body is still arriving
    _body_bytes = 0  # body bytes received since the heap was last trimmed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if BoundedProtocol.limits is None:
            BoundedProtocol.limits = get_settings()
        self._timer: asyncio.TimerHandle | None = None
        self._in_body = False

    def _arm(self, seconds: float, answer: bytes) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, answer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, answer: bytes) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(answer)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = BoundedProtocol.limits
        assert limits is not None
        if len(self.connections) > limits.max_connections:
            transport.write(TOO_MANY)
            transport.close()
            return
        self._arm(limits.header_timeout_seconds, HEAD_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._end_body()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        assert BoundedProtocol.limits is not None
        self._arm(BoundedProtocol.limits.header_timeout_seconds, HEAD_TIMEOUT)

    def on_headers_complete(self) -> None:
        assert BoundedProtocol.limits is not None
        self._arm(BoundedProtocol.limits.body_timeout_seconds, BODY_TIMEOUT)
        self._in_body = True
        BoundedProtocol._open_bodies += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._end_body()
        super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        BoundedProtocol._body_bytes += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_body and not self.transport.is_closing():
            # Answered before its body came (a 401 on the headers): the rest is not wanted.
            # Close soon, once the client has had time to read the answer.
            self._arm(LINGER_SECONDS, b"")

    def _end_body(self) -> None:
        if self._in_body:
            self._in_body = False
            BoundedProtocol._open_bodies -= 1
            if BoundedProtocol._open_bodies == 0 and BoundedProtocol._body_bytes > TRIM_BYTES:
                BoundedProtocol._body_bytes = 0
                self.loop.call_later(0.5, _trim_heap)  # once the app has let go of the body


def run(host: str, port: int, workers: int = 1) -> None:
    """Serve ``bamsprod.app.web.main:create_app`` with :class:`BoundedProtocol` (uvicorn's default
    protocol when httptools is missing)."""
    import importlib.util

    import uvicorn

    http = PROTOCOL if importlib.util.find_spec("httptools") is not None else "auto"
    uvicorn.run("bamsprod.app.web.main:create_app", factory=True, host=host, port=port,
                workers=workers, http=http)


# ``bamsprod up``'s API child: python -m bamsprod.app.web.server HOST PORT
if __name__ == "__main__":
    import sys

    run(sys.argv[1], int(sys.argv[2]))
