"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with no CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsDelivr: offline (these machines, many
labs) ``/docs`` is blank. Here both come from the installed ``fastapi-offline`` package, which
carries their release bundles (``swagger-ui-bundle.js``, ``swagger-ui.css``,
``redoc.standalone.js``, each with its licence header), served under ``/docs-assets/`` like
Plotly.js is (gzipped once, cached under ``?v=``), ReDoc's one CDN address (its logo) taken
out (``PATCHES``). The pages hold no inline script, so they
keep the strict Content-Security-Policy of every page (``app.api.security``): Swagger UI starts
from ``/docs-assets/swagger-init.js``, ReDoc from its ``<redoc spec-url>`` element.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from html import escape
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

__all__ = ["ASSETS", "assets_dir", "install_api_docs"]

# The files served from the package, and their media types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}
# The one thing a bundle fetches from elsewhere: ReDoc's sidebar logo (an <img> from its CDN,
# which the pages' policy would block, with a console error). ``data:,`` fails to decode, and
# ReDoc's own onError handler then leaves the logo out.
PATCHES = {"redoc.standalone.js": [(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"data:,")]}
# Swagger UI's start, as a file: the pages allow scripts from this server only.
SWAGGER_INIT = """\
const el = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: el.dataset.openapi,
  dom_id: "#swagger-ui",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
"""


def assets_dir() -> Path:
    """The ``static`` folder of the installed ``fastapi_offline`` package."""
    spec = find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package is not installed (pip install "
                           "fastapi-offline): /docs and /redoc need its files")
    return Path(spec.origin).parent / "static"


@lru_cache(maxsize=8)
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """(body, gzipped body, version) of one asset; read once per process."""
    body = (assets_dir() / name).read_bytes() if name in ASSETS else SWAGGER_INIT.encode()
    for before, after in PATCHES.get(name, []):
        body = body.replace(before, after)
    version = hashlib.sha256(body).hexdigest()[:10]
    return body, gzip.compress(body, compresslevel=9, mtime=0), version


def _url(name: str) -> str:
    return f"/docs-assets/{name}?v={_asset(name)[2]}"


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n{head}</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def install_api_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their files to ``app`` (created with ``docs_url=None`` and
    ``redoc_url=None``)."""
    openapi = escape(app.openapi_url or "/openapi.json")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        head = f'<link rel="stylesheet" href="{_url("swagger-ui.css")}">\n'
        body = (f'<div id="swagger-ui" data-openapi="{openapi}"></div>\n'
                f'<script src="{_url("swagger-ui-bundle.js")}"></script>\n'
                f'<script src="{_url("swagger-init.js")}"></script>\n')
        return _page(f"{title} - API (Swagger UI)", head, body)

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        body = (f'<redoc spec-url="{openapi}"></redoc>\n'
                f'<script src="{_url("redoc.standalone.js")}"></script>\n')
        return _page(f"{title} - API (ReDoc)", "", body)

    @app.get("/docs-assets/{name}", include_in_schema=False)
    def docs_asset(name: str, request: Request) -> Response:
        if name not in ASSETS and name != "swagger-init.js":
            raise HTTPException(404, f"no documentation asset {name!r}")
        body, zipped, version = _asset(name)
        etag = f'"{version}"'
        headers = {
            "Cache-Control": ("public, max-age=31536000, immutable"
                              if "v" in request.query_params else "no-cache"),
            "ETag": etag,
            "Vary": "Accept-Encoding",
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        media = ASSETS.get(name, "text/javascript")
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(zipped, media_type=media,
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(body, media_type=media, headers=headers)
