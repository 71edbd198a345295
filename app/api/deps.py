"""Shared route dependencies: the database session and the app's settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session

from app.db import session_scope
from app.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    """One session per request on the app's database."""
    with session_scope(request.app.state.settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def unprocessable(loc: tuple[str | int, ...], msg: str, value: Any = None) -> NoReturn:
    """Raise a 422 in FastAPI's usual shape, naming the field at ``loc``."""
    raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


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
