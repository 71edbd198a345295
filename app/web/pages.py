"""The dashboard: HTML pages and static files.

Pages (templates in ``frontend/templates``, scripts in ``frontend/static``, no build step;
installed from a wheel they sit in ``app/frontend``, see ``frontend_dir``):
``/`` runs table, ``/runs/new`` form, ``/runs/{id}`` live run, ``/compare`` groups and the
paper's measures, ``/convex`` the convex example, ``/guide/{name}`` the documentation
(``app.guide``). Any other path a browser asks for gets the not-found page; ``/api/...`` keeps
its JSON answers. Plotly.js is served from the installed
``plotly`` package at ``/static/plotly.min.js`` (gzipped, with an ETag): nothing is loaded from
another host.

The JSON the pages read lives in ``app/api`` like the rest: ``/api/schema/options``
(``app.api.options``, the form's fields and registries) and ``/api/convex`` (``app.api.convex``).

Pages get ``app.api.security``'s Content-Security-Policy (scripts from this server only), so
templates carry data in ``<script type="application/json">`` blocks, never inline code; user
text reaches the page through ``textContent`` only. Each page's script is one ES module (a
template sets ``module``); ``base.html`` preloads the modules it imports (``module_imports``).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from bamsprod.app import guide, store
from bamsprod.app.api.convex import CONVEX_MAX_STEPS
from bamsprod.app.api.deps import MAX_ID
from bamsprod.app.api.options import schema_options
from bamsprod.app.store.engine import session_scope
from bamsprod.core.metric_schema import METRICS, chart_specs


def frontend_dir() -> Path:
    """Templates and static files: ``app/frontend`` in a wheel, else the source tree's ``frontend``.

    The wheel maps the top-level ``frontend/`` to the package ``app.frontend`` (pyproject.toml);
    a checkout or an editable install reads the top-level folder itself.
    """
    app_dir = Path(__file__).resolve().parent.parent
    installed = app_dir / "frontend"
    return installed if (installed / "templates").is_dir() else app_dir.parent / "frontend"


FRONTEND = frontend_dir()
TEMPLATES_DIR = FRONTEND / "templates"
STATIC_DIR = FRONTEND / "static"

router = APIRouter(include_in_schema=False)
# The dashboard's JSON endpoints are reads: guarded by BAMSPROD_READ_TOKEN when it is set.


# ------------------------------------------------------------------------------ static files


def plotly_js_path() -> Path:
    """The plotly.min.js that ships inside the installed ``plotly`` Python package."""
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@lru_cache(maxsize=256)
def _file_version(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: browsers may cache it until the file changes."""
    path = plotly_js_path() if name == "plotly.min.js" else STATIC_DIR / name
    try:
        version = _file_version(str(path), path.stat().st_mtime_ns)
    except OSError:
        return f"/static/{name}"
    return f"/static/{name}?v={version}"


_IMPORT = re.compile(r"""^import\b[^"']*["']\./([\w.-]+\.js)["']""", re.MULTILINE)


@lru_cache(maxsize=64)
def _imports(path: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(_IMPORT.findall(Path(path).read_text(encoding="utf-8")))


def module_imports(entry: str) -> list[str]:
    """``/static/<name>`` of every module ``entry`` imports, directly or through another one.

    For ``<link rel="modulepreload">``: the browser then fetches them all at once rather than
    one level of imports after another. The URLs are the ones the imports resolve to
    (unversioned: a module is one instance per URL, so they must match).
    """
    found: list[str] = []
    todo = [entry]
    while todo:
        path = STATIC_DIR / todo.pop()
        try:
            names = _imports(str(path), path.stat().st_mtime_ns)
        except OSError:
            continue
        for name in names:
            if name != entry and name not in found:
                found.append(name)
                todo.append(name)
    return [f"/static/{name}" for name in sorted(found)]


class VersionedStatic(StaticFiles):
    """Static files; a request carrying ``?v=`` (see ``static_url``) may be cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["Cache-Control"] = (
                "public, max-age=31536000, immutable" if versioned else "no-cache"
            )
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


@lru_cache(maxsize=2)
def _plotly_gzip(path: str, mtime_ns: int) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0)


@router.get("/static/plotly.min.js")
def plotly_js(request: Request) -> Response:
    """Plotly.js from the installed plotly package (never a CDN).

    The package ships only the full bundle (4.8 MB; no partial bundle), so it is sent gzipped
    (compressed once, 1.4 MB), cached for good under ``?v=<hash>``, and revalidated by ETag
    (304) otherwise.
    """
    path = plotly_js_path()
    mtime = path.stat().st_mtime_ns
    etag = f'"{_file_version(str(path), mtime)}"'
    versioned = "v" in request.query_params
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return FileResponse(path, media_type="text/javascript", headers=headers)
    body = _plotly_gzip(str(path), mtime)
    headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript", headers=headers)


# ------------------------------------------------------------------------------------ pages

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.globals["static_url"] = static_url
templates.env.globals["module_imports"] = module_imports
templates.env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # keep registry order


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"page": template.removesuffix(".html"), **context},
        status_code=status_code,
    )


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> Response:
    return _page(request, "runs.html", options=schema_options())


@router.get("/runs/new", response_class=HTMLResponse)
def new_run_page(request: Request) -> Response:
    options = {**schema_options(), "max_sweep_runs": request.app.state.settings.max_sweep_runs}
    return _page(request, "new_run.html", options=options)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> Response:
    """The run's page; any id that names no run (``/runs/abc`` too) gets the not-found page,
    except with a read token set: then every run number gets the same page (whose API calls
    need the token), so a caller without one cannot learn which runs exist."""

    def exists(number: int) -> bool:
        if not 1 <= number <= MAX_ID:  # beyond SQL integers: no such run (not an overflow)
            return False
        if request.app.state.settings.read_token:
            return True
        with session_scope(request.app.state.settings.database_url) as session:
            return store.get_run(session, number) is not None

    number = int(run_id) if run_id.isascii() and run_id.isdigit() and len(run_id) <= 12 else 0
    if not exists(number):
        return not_found_page(request, f"run {run_id[:80]}")
    return _page(request, "run.html", run_id=number, charts=chart_specs(),
                 options=schema_options())


def not_found_page(request: Request, what: str) -> Response:
    """The 404 page: what is missing, and the way back (Jinja escapes ``what``)."""
    return _page(request, "not_found.html", 404, what=what)


COMPARE_QUERY = ("runs", "sweep", "stage", "group_by", "baseline", "target", "metric", "x")
COMPARE_DEFAULTS = {"metric": "test_acc", "x": "epoch"}


def compare_api_url(request: Request) -> str | None:
    """The ``/api/compare`` URL the page will fetch first (preloaded while Plotly loads)."""
    q = request.query_params
    if not (q.get("runs") or q.get("sweep")) or request.app.state.settings.read_token:
        return None  # nothing to fetch, or reads need a token the preload cannot send
    params = [(k, q.get(k) or COMPARE_DEFAULTS.get(k, "")) for k in COMPARE_QUERY]
    if q.get("indiv") == "1":  # the page shows each run: its series come with the groups
        params.append(("include", "runs"))
    return "/api/compare?" + urlencode([(k, v) for k, v in params if v])


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> Response:
    targets = [(m.name, m.label) for m in METRICS if m.target]
    return _page(request, "compare.html", preload=compare_api_url(request), targets=targets,
                 charts=chart_specs())


@router.get("/convex", response_class=HTMLResponse)
def convex_page(request: Request) -> Response:
    return _page(request, "convex.html", max_steps=CONVEX_MAX_STEPS)


@router.get("/guide", response_class=HTMLResponse)
def guide_index(request: Request) -> Response:
    """The documentation's pages (``app.guide``: what the installed package carries)."""
    pages = [(name, guide.title(guide.read(name))) for name in guide.names()]
    return _page(request, "guide.html", pages=pages, body=None, name=None)


@router.get("/guide/{name}", response_class=HTMLResponse)
def guide_page(request: Request, name: str) -> Response:
    try:
        body = guide.html(name)
    except guide.GuideNotFound:
        return not_found_page(request, f"documentation page {name[:80]!r}")
    pages = [(n, guide.title(guide.read(n))) for n in guide.names()]
    return _page(request, "guide.html", pages=pages, body=Markup(body), name=name)


# Paths whose 404 stays JSON: the API and the files pages load.
JSON_PATHS = ("/api/", "/api", "/static/", "/docs-assets/", "/openapi.json")


async def page_not_found(request: Request, exc: Exception) -> Response:
    """An unknown path gets the not-found page; the API (and files) keep FastAPI's JSON."""
    status_code = getattr(exc, "status_code", 500)
    if status_code == 404 and not request.url.path.startswith(JSON_PATHS):
        return not_found_page(request, "page at this address")
    return await http_exception_handler(request, exc)  # type: ignore[arg-type]


def install_pages(app: FastAPI) -> None:
    """Add the dashboard to ``app``: its pages and static files."""
    if not TEMPLATES_DIR.is_dir():
        raise RuntimeError(f"dashboard templates missing: {TEMPLATES_DIR}")
    app.include_router(router)
    app.mount("/static", VersionedStatic(directory=STATIC_DIR), name="static")
    app.add_exception_handler(StarletteHTTPException, page_not_found)
