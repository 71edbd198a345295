"""What the command groups share: terminal output, the server options, HTTP calls to the API
(a 422 names the option that sets the field) and how a child process is started."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import signal
import ssl
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bamsprod.app.field_errors import FieldError, first_error
from bamsprod.core.config import escape_text
from bamsprod.core.metric_schema import METRICS, format_value

console = Console()
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_OPTION = typer.Option(DEFAULT_URL, envvar="BAMSPROD_URL", help="the bamsprod server")
TOKEN_OPTION = typer.Option(
    None,
    envvar=["BAMSPROD_API_TOKEN", "BAMSPROD_READ_TOKEN"],
    show_default=False,
    help="bearer token, when the server sets one (default: $BAMSPROD_API_TOKEN, else "
    "$BAMSPROD_READ_TOKEN)",
)


# Characters that change how the text around them reads without showing themselves: bidi
# embeddings, overrides and isolates, marks, the BOM and other zero-width formats, the line and
# paragraph separators (frontend/static/common.js escapes the same on the page).
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
                        "\ufeff\ufff9-\ufffb]")


def shown(value: Any) -> str:
    """User text as a terminal may show it: control characters (``\\x1b``) and invisible
    formatting characters (``\\u202e``) written as escapes."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", escape_text(str(value)))


def plain(value: Any) -> Text:
    """User text (a run name, a path, an error) for a Rich table cell: never read as markup,
    control and invisible characters escaped (``shown``), so nothing reaches the terminal raw."""
    return Text(shown(value))


def safe(value: Any) -> str:
    """User text for a Rich f-string: markup escaped, control and invisible characters too."""
    return escape(shown(value))


def print_rows(headers: Sequence[str], rows: Iterable[Sequence[Any]],
               title: str | None = None) -> None:
    """A table on stdout. In a terminal, a Rich table whose cells wrap rather than cut; piped
    into another program, the header and one tab-separated line per row with every value in
    full (the title goes to stderr), so a name can be grepped and a column cut out."""
    if console.is_terminal:
        table = Table(title=title)
        for name in headers:
            table.add_column(name, overflow="fold", min_width=min(len(name), 12))
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else plain(c) for c in row))
        console.print(table)
        return
    if title:
        err.print(safe(title))
    print("\t".join(headers))
    for row in rows:
        print("\t".join(shown(c.plain if isinstance(c, Text) else c) for c in row))


def check_token(token: str | None) -> None:
    """A token travels in an HTTP header: printable ASCII only (else a usage error naming
    ``--token``, not an encoding traceback or a misleading "cannot reach")."""
    if token and not (token.isascii() and token.isprintable()):
        where = next(i for i, ch in enumerate(token) if not (ch.isascii() and ch.isprintable()))
        raise typer.BadParameter(
            f"must be printable ASCII characters (e.g. from `openssl rand -hex 32`); character "
            f"{where + 1} is not (from --token, or $BAMSPROD_API_TOKEN / $BAMSPROD_READ_TOKEN)",
            param_hint="--token")


# ------------------------------------------------------------------------------- epochs

_TABLE_METRICS = [m for m in METRICS if m.cli]
COLUMNS = ("epoch", *(m.name for m in _TABLE_METRICS))


def format_row(m: dict[str, Any]) -> list[str]:
    return [str(m["epoch"]), *(format_value(c, m.get(c.name)) for c in _TABLE_METRICS)]


def format_line(m: dict[str, Any]) -> str:
    """One epoch as ``key=value`` pairs on one line."""
    return "  ".join(f"{c}={v}" for c, v in zip(COLUMNS, format_row(m), strict=True))


# ------------------------------------------------------------------------------- errors


def option_for(error: FieldError, options: Mapping[str, str]) -> str | None:
    """The option that sets ``error``'s field: the innermost part of its path an option sets
    (``tune.lr_max`` -> ``--lr-max``, ``hparams.kappa`` -> ``--hp``), else its first part."""
    names = [str(p) for p in error.path]
    field = next((n for n in reversed(names) if n in options), names[0] if names else "")
    return options.get(field, field or None)


def bad_parameter(error: FieldError, options: Mapping[str, str]) -> typer.BadParameter:
    """``error`` as Typer's usage error, naming the option (exit code 2)."""
    return typer.BadParameter(escape_text(error.msg), param_hint=option_for(error, options))


# ------------------------------------------------------------------------------- client


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle costs ~40 ms of CPU: once per process, not once per client (a
    # study's progress polls a dozen sweeps every 2 s, beside the workers it waits on).
    return httpx.create_ssl_context()


def client(url: str, token: str | None = None) -> httpx.Client:
    """An HTTP client for the server at ``url``, with the bearer token when there is one."""
    headers = {"X-Requested-With": "bamsprod-cli"}  # not a cross-site form (app.api.security)
    token = token or os.environ.get("BAMSPROD_API_TOKEN")
    check_token(token)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0, verify=_tls())


def request(url: str, method: str, path: str, *, token: str | None = None,
            options: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """One API call; a clear message and exit code 2 on connection or HTTP errors. A 422 names
    the option of ``options`` (field -> ``--option``) that sets the field."""
    try:
        with client(url, token) as c:
            r = c.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach {safe(url)} ({safe(exc)}); "
                  "is `bamsprod up` running? (--url / BAMSPROD_URL)")
        raise typer.Exit(2) from None
    if r.status_code == 401:
        err.print(f"[red]error:[/red] {method} {path}: the server wants a token; pass --token "
                  "or set BAMSPROD_API_TOKEN")
        raise typer.Exit(2)
    if r.status_code == 422:
        try:
            error = first_error(r.json()["detail"])
        except (ValueError, KeyError, TypeError):
            error = FieldError((), r.text)
        raise bad_parameter(error, options or {})
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        err.print(f"[red]error:[/red] {method} {safe(path)}: {r.status_code} {safe(detail)}")
        raise typer.Exit(2 if r.status_code != 404 else 3)
    return r.json() if r.content else None


# ---------------------------------------------------------------------------- processes


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn`` of a child process: its own session, and SIGTERM when its parent dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
