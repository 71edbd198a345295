"""Access control and security headers.

Tokens (both unset by default, so the embedded default on 127.0.0.1 needs none):

- ``BAMSPROD_API_TOKEN``: every endpoint that changes state (submit a run or a sweep, cancel,
  retry, delete) needs ``Authorization: Bearer <api token>``. A sweep ``dry_run`` changes
  nothing, so it counts as a read.
- ``BAMSPROD_READ_TOKEN``: reads (every other ``/api`` route but ``/api/health``) need the read
  token or the api token. With only a read token set, writes need it too (whoever may not read
  may not write). Browsers' ``EventSource`` cannot send headers, and a token in a URL lands in
  access logs, so the events stream takes instead ``?ticket=``: ``POST
  /api/runs/{id}/events/ticket`` (a read) returns one, signed (HMAC-SHA256 with
  ``BAMSPROD_TICKET_SECRET``, else a key derived from the tokens), good for that run's stream
  for ``ticket_seconds``. A token is never accepted in a URL.

A missing or wrong token is a 401 with ``WWW-Authenticate: Bearer`` (``error="invalid_token"``
when a token was sent); tokens are compared with :func:`hmac.compare_digest`. ``/api/health``,
the HTML pages and the static files stay open: the pages hold no data, and their scripts
(``frontend/static/auth.js``) ask for the token once when an API call answers 401.

:class:`SecurityHeaders` adds ``Content-Security-Policy`` (scripts from this server only),
``X-Content-Type-Options``, ``Referrer-Policy`` and ``X-Frame-Options`` to every response that
does not set them itself. ``/docs`` and ``/redoc`` (``app.web.api_docs``: Swagger UI and ReDoc
from an installed package, no inline script) add only what those two need: web workers from
``blob:`` URLs (ReDoc).

Cross-site requests and Host names: ``app.api.csrf``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bamsprod.app.api.csrf import UNSAFE_METHODS
from bamsprod.app.settings import Settings

__all__ = [
    "CSP",
    "DOCS_CSP",
    "EarlyAuth",
    "SECURITY_HEADERS",
    "RedactQuerySecrets",
    "SecurityHeaders",
    "require_read",
    "install_log_redaction",
    "issue_ticket",
    "redact_query_secrets",
    "require_read_or_ticket",
    "require_sweep_access",
    "require_write",
    "ticket_valid",
    "token_matches",
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
CSP_HEADER = "content-security-policy"
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """ASGI middleware: the headers of :data:`SECURITY_HEADERS` on every HTTP response, unless
    the route set its own (the dashboard pages send their own, stricter-in-places CSP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path.startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = DOCS_CSP if docs and name == CSP_HEADER else value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------- tokens

_bearer = HTTPBearer(
    auto_error=False,
    description="BAMSPROD_API_TOKEN for changes; BAMSPROD_READ_TOKEN (or the api token) for "
    "reads when it is set. Neither is needed when unset (the default).",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def token_matches(given: str | None, *expected: str | None) -> bool:
    """True when ``given`` equals one of the configured (non-empty) ``expected`` tokens.

    Constant time in the token's content (``hmac.compare_digest`` on UTF-8 bytes); every
    configured token is compared, so timing does not tell which one matched.
    """
    if not given:
        return False
    supplied = given.encode()
    ok = False
    for token in expected:
        if token:
            ok |= hmac.compare_digest(supplied, token.encode())
    return ok


def _unauthorized(sent: bool, what: str) -> HTTPException:
    challenge = 'Bearer realm="bamsprod"'
    if sent:
        challenge += ', error="invalid_token"'
    detail = f"{what} needs a valid token: send 'Authorization: Bearer <token>'"
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _write_tokens(s: Settings) -> tuple[str | None, ...]:
    """The tokens that allow a change: the api token, else (only a read token set) that one."""
    return (s.api_token,) if s.api_token else (s.read_token,) if s.read_token else ()


def _check(request: Request, given: str | None, write: bool) -> None:
    s = _settings(request)
    if write:
        tokens = _write_tokens(s)
        what = "this change"
    else:
        tokens = (s.read_token, s.api_token) if s.read_token else ()
        what = "reading"
    if tokens and not token_matches(given, *tokens):
        raise _unauthorized(given is not None, what)


def _bearer_token(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds is not None else None


# The guards are ``async``: they do no I/O, so FastAPI runs them on the event loop instead of
# handing each request to a worker thread and back.


async def require_write(request: Request, creds: Credentials) -> None:
    """Dependency: the api token, when one is configured."""
    _check(request, _bearer_token(creds), write=True)


async def require_read(request: Request, creds: Credentials) -> None:
    """Dependency: the read (or api) token, when a read token is configured."""
    _check(request, _bearer_token(creds), write=False)


async def unreadable_body_auth_error(request: Request) -> HTTPException | None:
    """The 401 a change with a body that is not JSON would get from its route's guard, or None.

    FastAPI decodes the JSON body before it runs the route's dependencies, so without this a
    caller with no token would learn from a 422 what the body should be before being refused.
    """
    if request.method not in UNSAFE_METHODS:
        return None
    guard = require_sweep_access if request.url.path.startswith("/api/sweeps") else require_write
    try:
        await guard(request, await _bearer(request))
    except HTTPException as exc:
        return exc
    return None


_READ_LEVEL_CHANGE = re.compile(r"/api/runs/[^/]+/events/ticket/?")


def _bearer_of(headers: Headers) -> str | None:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


class EarlyAuth:
    """ASGI middleware: a change to ``/api`` without a valid token is refused (401) on its
    headers, before a byte of its body is read, so an unauthenticated client cannot make the
    API buffer (or wait for) a body. The routes' own guards still decide in full; this only
    answers early what they would refuse anyway: the tokens a change needs (a sweep's dry run
    and an event-stream ticket need a read-level one)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _needed(self, scope: Scope) -> tuple[str | None, ...]:
        s = self.settings
        path: str = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1").lower()
        dry_run = path.rstrip("/") == "/api/sweeps" and any(
            part.partition("=")[2] in _TRUE for part in query.split("&")
            if part.partition("=")[0] == "dry_run")
        if dry_run or _READ_LEVEL_CHANGE.fullmatch(path):
            return (s.read_token, s.api_token) if s.read_token else ()
        return _write_tokens(s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in UNSAFE_METHODS
                and scope.get("path", "").startswith("/api")):
            tokens = self._needed(scope)
            given = _bearer_of(Headers(scope=scope))
            if tokens and not token_matches(given, *tokens):
                what = "this change" if tokens == _write_tokens(self.settings) else "reading"
                exc = _unauthorized(given is not None, what)
                response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                        headers=exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------- event-stream tickets

_PROCESS_KEY = secrets.token_bytes(32)


def _ticket_key(s: Settings) -> bytes:
    """``ticket_secret``; else derived from the tokens (so every API process behind one
    balancer agrees); else a random key of this process."""
    if s.ticket_secret:
        return s.ticket_secret.encode()
    if s.api_token or s.read_token:
        seed = f"{s.api_token or ''}\0{s.read_token or ''}".encode()
        return hmac.new(seed, b"bamsprod event-stream tickets", hashlib.sha256).digest()
    return _PROCESS_KEY


def issue_ticket(s: Settings, run_id: int, now: float | None = None) -> str:
    """A signed ticket for reading run ``run_id``'s events: ``<run>.<expiry>.<hmac>``."""
    expires = int((time.time() if now is None else now) + s.ticket_seconds)
    body = f"{run_id}.{expires}"
    sig = hmac.new(_ticket_key(s), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{sig}"


def ticket_valid(s: Settings, ticket: str, run_id: int, now: float | None = None) -> bool:
    """True for an unexpired ticket of this server for exactly ``run_id``."""
    parts = ticket.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isalnum() for p in parts):
        return False
    body = f"{parts[0]}.{parts[1]}"
    want = hmac.new(_ticket_key(s), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want.encode(), parts[2].encode()):
        return False
    now = time.time() if now is None else now
    return parts[0] == str(run_id) and parts[1].isdigit() and int(parts[1]) >= now


async def require_read_or_ticket(request: Request, creds: Credentials) -> None:
    """Like :func:`require_read`, also accepting ``?ticket=`` from ``POST
    /api/runs/{id}/events/ticket`` (``EventSource`` sends no headers). A ticket is short-lived
    and good for one run's stream only, so one left in a log opens nothing else."""
    s = _settings(request)
    ticket = request.query_params.get("ticket")
    given = _bearer_token(creds)
    if given is None and ticket is not None and s.read_token:
        if ticket_valid(s, ticket, request.path_params.get("run_id", -1)):
            return
        raise _unauthorized(True, "reading")
    _check(request, given, write=False)


_TRUE = {"1", "true", "t", "yes", "y", "on"}


async def require_sweep_access(request: Request, creds: Credentials) -> None:
    """POST /api/sweeps: a write, except ``?dry_run=true`` (only counts), which is a read."""
    dry_run = request.query_params.get("dry_run", "").strip().lower() in _TRUE
    _check(request, _bearer_token(creds), write=not dry_run)


# ------------------------------------------------------------------------------ logs

_QUERY_SECRET = re.compile(r"([?&](?:ticket|token|access_token)=)[^&\s\"]*", re.IGNORECASE)


def redact_query_secrets(text: str) -> str:
    """``text`` with the values of ``ticket=``/``token=`` query parameters replaced by ``***``."""
    return _QUERY_SECRET.sub(r"\1***", text)


class RedactQuerySecrets(logging.Filter):
    """Log filter: query secrets out of access-log lines (uvicorn logs the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query_secrets(a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_query_secrets(record.msg)
        return True


def install_log_redaction(logger_name: str = "uvicorn.access") -> None:
    """Add :class:`RedactQuerySecrets` to the access logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
        logger.addFilter(RedactQuerySecrets())
