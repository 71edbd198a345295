"""Cross-site request forgery and DNS rebinding.

:class:`CSRFGuard` refuses the changes a foreign web page could make a browser send (see
:func:`csrf_refusal`); ``create_app`` adds Starlette's ``TrustedHostMiddleware`` with
``settings.allowed_hosts`` so a rebound DNS name gets 400; :func:`exposure_warning` is what
``bamsprod serve``/``up`` print when they listen beyond this machine with no API token.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from bamsprod.app.settings import Settings

__all__ = ["CSRFGuard", "LOCAL_HOSTS", "UNSAFE_METHODS", "csrf_refusal", "exposure_warning"]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CUSTOM_HEADERS = (b"x-requested-with", b"authorization")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _same_origin(origin: str, host: str) -> bool:
    """True when the ``Origin`` header names this server's ``Host`` (scheme's default port
    ignored)."""
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme, "")

    def norm(netloc: str) -> str:
        netloc = netloc.lower()
        return netloc.removesuffix(f":{default}") if default else netloc

    return norm(parts.netloc) == norm(host)


def csrf_refusal(method: str, headers: Headers) -> str | None:
    """Why a state-changing request must be refused as possibly forged by another site, or None.

    Browsers let any page send a cross-site POST with a form-like body (text/plain, form data)
    and no custom headers, with the user's network position (and cookies). Such a request to
    this API is refused: it needs ``Content-Type: application/json`` or a custom header
    (``X-Requested-With`` or ``Authorization``), which a foreign page cannot add without a CORS
    preflight that this server never grants; and an ``Origin`` (or ``Sec-Fetch-Site``) naming
    another site is refused outright.
    """
    if method not in UNSAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, headers.get("host", "")):
        return f"cross-origin request from {origin[:100]!r} refused"
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused"
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or any(h.decode() in headers for h in CUSTOM_HEADERS):
        return None
    return ("a change needs a JSON body (Content-Type: application/json) or an "
            "'X-Requested-With' header")


class CSRFGuard:
    """ASGI middleware: 403 for the ``/api`` requests :func:`csrf_refusal` refuses."""

    def __init__(self, app: ASGIApp, prefix: str = "/api") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            reason = csrf_refusal(scope["method"], Headers(scope=scope))
            if reason is not None:
                response = JSONResponse({"detail": reason}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, settings: Settings) -> str | None:
    """A warning when the API listens beyond this machine with no token to guard changes."""
    if host in LOCAL_HOSTS or host.startswith("127.") or settings.api_token:
        return None
    return (f"bamsprod listens on {host} with no BAMSPROD_API_TOKEN: anyone who can reach it "
            "can submit, cancel and delete runs. Set BAMSPROD_API_TOKEN (openssl rand -hex 32) "
            "and BAMSPROD_ALLOWED_HOSTS to the names clients use.")
