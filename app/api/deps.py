"""Shared route dependencies: the database session and the app's settings."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, TypeAdapter
from sqlmodel import Session

from bamsprod.app.api.security import require_read, require_write
from bamsprod.app.field_errors import FieldError, InvalidField
from bamsprod.app.safejson import scrub
from bamsprod.app.schemas import ErrorDetail
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import check_text


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    """One session per request on the app's database."""
    with session_scope(request.app.state.settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

# Route guards (app.api.security) and the error answers they document in the OpenAPI schema.
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
_ERR = {"model": ErrorDetail}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_ERR, "description": "a token is configured and this one is missing or wrong"},
    403: {**_ERR, "description": "a change from another site, or without a JSON body or an "
          "X-Requested-With header (app.api.csrf.csrf_refusal)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_ERR, "description": "no such run"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {**_ERR, "description": "the run's state forbids it"}
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERR, "description": "the body is not JSON"},
    413: {**_ERR, "description": "request body too large"},
}
# Ids are SQL integers: anything larger can name no row (and would overflow the driver).
MAX_ID = 2**31 - 1
RunId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="run id")]
# A text query parameter: NUL (which PostgreSQL cannot hold) or control characters are a 422.
QueryText = Annotated[str | None, AfterValidator(check_text)]


@cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def json_response(model: Any, data: Any, status_code: int = 200) -> Response:
    """``data`` (plain dicts and lists) validated as ``model`` and serialised in one pass.

    The hot read paths build their answer from column dicts and return it this way, skipping
    ORM objects and FastAPI's second validation of a returned model; the route still declares
    ``response_model`` for the OpenAPI schema.
    """
    adapter = _adapter(model)
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        body = adapter.dump_json(adapter.validate_python(data))
    except (ValueError, UnicodeError):
        # A row stored before today's validation (e.g. a lone surrogate in a name): answer it
        # scrubbed (``app.safejson``) rather than fail the whole list.
        body = adapter.dump_json(adapter.validate_python(scrub(data)))
    return Response(body, status_code=status_code, media_type="application/json")


def unprocessable(loc: tuple[str | int, ...], msg: str, value: Any = None) -> NoReturn:
    """Raise a 422 in FastAPI's usual shape, naming the field at ``loc``."""
    raise RequestValidationError([FieldError(loc, msg, value).detail()])


@contextmanager
def invalid_fields(kind: str = "body") -> Iterator[None]:
    """A service's ``InvalidField`` raised in the block is a 422 naming that field (and the
    others it found wrong) of the request's ``kind`` (``body`` or ``query``)."""
    try:
        yield
    except InvalidField as exc:
        raise RequestValidationError([e.under(kind).detail() for e in exc.errors]) from None


def remove_checkpoints(settings: Settings, run_ids: list[int]) -> None:
    """Delete the checkpoint directories of deleted runs (``Settings.run_checkpoint_dir``, where
    the worker writes them); one that is missing or cannot be removed is skipped."""
    for run_id in run_ids:
        shutil.rmtree(settings.run_checkpoint_dir(run_id), ignore_errors=True)


def wants_csv(request: Request, fmt: str | None) -> bool:
    """CSV when ``format=csv``, or when no format is given and Accept asks for text/csv."""
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


def enqueue(request: Request, run_id: int) -> bool:
    """Hand ``run_id`` to the queue; a broker failure is logged, the run stays ``queued`` in SQL
    (the reconciler re-queues it)."""
    import logging

    try:
        result = request.app.state.enqueue(run_id)
    except Exception:
        logging.getLogger(__name__).exception("enqueue of run %s failed", run_id)
        return False
    return result is not False
