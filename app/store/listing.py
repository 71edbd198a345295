"""Pages of runs: filters, sort order and keyset paging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col, select

from bamsprod.app.schemas import RUN_SORT_COLUMNS
from bamsprod.app.store.base import RunNotFound, dialect
from bamsprod.app.store.tables import Run


def _tag_filter(session: Session, tag: str) -> Any:
    if dialect(session) == "postgresql":
        return sa.cast(Run.tags, JSONB).contains([tag])
    each = sa.func.json_each(Run.tags).table_valued("value").alias("tag_each")
    return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value == tag))


def _run_page(
    session: Session,
    *,
    state: str | Sequence[str] | None = None,
    optimizer: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
    tag: str | None = None,
    sweep_id: int | None = None,
    name_contains: str | None = None,
    config_hash: str | None = None,
    archived: bool | None = None,
    sort: str = "id",
    order: str = "desc",
) -> tuple[list[Any], list[Any], int]:
    """(WHERE conditions, ORDER BY keys, total count) of a page of runs."""
    if sort not in RUN_SORT_COLUMNS:
        raise ValueError(f"cannot sort on {sort!r}; choose one of {', '.join(RUN_SORT_COLUMNS)}")
    if order not in ("asc", "desc"):
        raise ValueError("order must be 'asc' or 'desc'")
    conds: list[Any] = []
    if state:
        states = [state] if isinstance(state, str) else list(state)
        conds.append(col(Run.state).in_(states))
    for column, value in (
        (Run.optimizer, optimizer),
        (Run.model, model),
        (Run.dataset, dataset),
        (Run.sweep_id, sweep_id),
        (Run.config_hash, config_hash),
    ):
        if value is not None:
            conds.append(column == value)
    if archived is not None:
        conds.append(col(Run.archived) == archived)
    if tag:
        conds.append(_tag_filter(session, tag))
    if name_contains:
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(col(Run.name).ilike(f"%{escaped}%", escape="\\"))
    total = session.exec(select(sa.func.count()).select_from(Run).where(*conds)).one()
    column = Run.__table__.c[sort]
    key = column.asc() if order == "asc" else column.desc()
    tie = col(Run.id).asc() if order == "asc" else col(Run.id).desc()
    # NULLS LAST only where NULLs can occur: a plain ORDER BY is one an index can serve.
    return conds, [key.nulls_last() if column.nullable else key, tie], int(total)


def _after(session: Session, sort: str, order: str, after: int) -> Any:
    """SQL: the runs that come after run ``after`` in ``ORDER BY sort NULLS LAST, id`` (keyset
    paging). ``RunNotFound`` if that run is gone (the client starts again from the top)."""
    t = Run.__table__.c
    column = t[sort]
    row = session.execute(sa.select(column).where(t.id == after)).first()
    if row is None:
        raise RunNotFound(after)
    value = row[0]

    def beyond(a: Any, b: Any) -> Any:
        return a > b if order == "asc" else a < b

    if value is None:  # already in the NULLs at the end
        return sa.and_(column.is_(None), beyond(t.id, after))
    later = sa.or_(beyond(column, value), sa.and_(column == value, beyond(t.id, after)))
    return sa.or_(later, column.is_(None)) if column.nullable else later


def list_runs(session: Session, *, limit: int = 50, offset: int = 0, **filters: Any
              ) -> tuple[list[Run], int]:
    """A page of runs matching every given filter, and the total count of matches.

    Filters: ``state`` (one or several), ``optimizer``, ``model``, ``dataset``, ``tag``,
    ``sweep_id``, ``name_contains``, ``config_hash``, ``archived`` (True: archived runs only,
    False: the others; None: all); ``sort`` (a ``RUN_SORT_COLUMNS`` name)
    and ``order`` (``asc``/``desc``).
    """
    conds, order_by, total = _run_page(session, **filters)
    stmt = select(Run).where(*conds).order_by(*order_by).limit(limit).offset(offset)
    return list(session.exec(stmt)), total


def list_run_rows(
    session: Session, *, limit: int = 50, offset: int = 0, after: int | None = None,
    **filters: Any
) -> tuple[list[dict[str, Any]], int]:
    """``list_runs`` as plain column dicts: no ORM objects (the API's list hot path).

    ``after`` (a run id, the last of the previous page) pages by keyset: the page starts right
    after that run in the sort order, however deep it is. The page's ids are chosen first
    (sorting narrow (key, id) rows, by index where there is one), then only those rows read.
    """
    conds, order_by, total = _run_page(session, **filters)
    if after is not None:
        conds.append(
            _after(session, filters.get("sort", "id"), filters.get("order", "desc"), after)
        )
    t = Run.__table__
    page = sa.select(t.c.id).where(*conds).order_by(*order_by).limit(limit).offset(offset)
    ids = list(session.execute(page).scalars())
    if not ids:
        return [], total
    found = session.execute(sa.select(t).where(t.c.id.in_(ids))).mappings()
    rows = {r["id"]: dict(r) for r in found}
    return [rows[i] for i in ids if i in rows], total
