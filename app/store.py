"""Every database operation the API and the worker use.

State changes are single conditional ``UPDATE`` statements (``... WHERE state = 'queued'``), so
two processes racing for the same run cannot both win: ``claim_run`` returns True to exactly one
caller. ``record_epoch`` writes the epoch row and the run's summary in one transaction and is
idempotent per (run, epoch). Functions that change data commit before returning.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col, select

from app.schemas import METRIC_FIELDS, RUN_SORT_COLUMNS
from app.tables import EpochMetric, Run, Sweep, utcnow
from core.spec import TERMINAL_STATES, RunConfig

__all__ = [
    "RunNotFound",
    "RunStateError",
    "SweepNotFound",
    "cancel_requested",
    "claim_run",
    "compare_run_rows",
    "create_run",
    "create_sweep",
    "delete_run",
    "expire_runs_of",
    "new_run",
    "delete_sweep",
    "finish_run",
    "get_metrics",
    "get_run",
    "get_sweep",
    "list_run_rows",
    "list_runs",
    "list_sweeps",
    "metric_columns",
    "metric_rows",
    "metrics_after_many",
    "poll_runs",
    "reclaim_run",
    "release_run",
    "record_epoch",
    "request_cancel",
    "require_run",
    "requeue_candidates",
    "retry_run",
    "run_row",
    "runs_of_sweep",
    "sweep_state_counts",
    "touch_run",
]


class RunNotFound(LookupError):
    """No run with that id (the API answers 404)."""

    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} not found")
        self.run_id = run_id


class SweepNotFound(LookupError):
    def __init__(self, sweep_id: int):
        super().__init__(f"sweep {sweep_id} not found")
        self.sweep_id = sweep_id


class RunStateError(RuntimeError):
    """The run's state forbids the operation (the API answers 409)."""


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _update(session: Session, run_id: int, where: Any, **values: Any) -> bool:
    """``UPDATE run SET ... WHERE id = run_id AND where``; True when exactly one row changed."""
    stmt = sa.update(Run).where(col(Run.id) == run_id)
    if where is not None:
        stmt = stmt.where(where)
    result = session.exec(stmt.values(**values))  # type: ignore[call-overload]
    return result.rowcount == 1


# ----------------------------------------------------------------------------- create and read


def new_run(config: RunConfig, sweep_id: int | None, now: datetime) -> Run:
    """A queued ``Run`` row for ``config`` (not yet added to a session)."""
    return Run(
        name=config.name,
        tags=list(config.tags),
        state="queued",
        config=config.model_dump(mode="json"),
        schema_version=config.schema_version,
        config_hash=config.config_hash(),
        seed=config.seed,
        optimizer=config.optimizer,
        model=config.model,
        dataset=config.dataset,
        epochs=config.epochs,
        sweep_id=sweep_id,
        created_at=now,
        queued_at=now,
    )


def create_run(session: Session, config: RunConfig, sweep_id: int | None = None) -> Run:
    """Insert a ``queued`` run for ``config`` and commit."""
    run = new_run(config, sweep_id, utcnow())
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def create_sweep(
    session: Session, name: str, grid: dict[str, Any], configs: list[RunConfig],
    before_commit: Callable[[Session, Sweep, list[Run]], None] | None = None,
) -> tuple[Sweep, list[Run]]:
    """Insert a sweep (``grid``: the spec as submitted) and one queued run per config in one
    transaction: the runs go in as one ``executemany`` INSERT, their ids (assigned in insertion
    order) come back in one SELECT, and the returned (detached) runs hold every column.
    ``before_commit`` adds rows of its own to that transaction."""
    now = utcnow()
    sweep = Sweep(name=name, spec=grid, n_runs=len(configs), created_at=now)
    session.add(sweep)
    session.flush()
    runs = [new_run(c, sweep.id, now) for c in configs]
    if runs:
        table = Run.__table__
        session.execute(sa.insert(table), [r.model_dump(exclude={"id"}) for r in runs])
        ids = session.execute(
            sa.select(table.c.id).where(table.c.sweep_id == sweep.id).order_by(table.c.id)
        ).scalars()
        for run, run_id in zip(runs, ids, strict=True):
            run.id = run_id
    if before_commit is not None:
        before_commit(session, sweep, runs)
    session.commit()
    return sweep, runs


def get_run(session: Session, run_id: int) -> Run | None:
    """The run, read fresh from the database, or None."""
    return session.get(Run, run_id, populate_existing=True)


def require_run(session: Session, run_id: int) -> Run:
    """The run, or raise ``RunNotFound``."""
    run = get_run(session, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def get_sweep(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise SweepNotFound(sweep_id)
    return sweep


def list_sweeps(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, and their total."""
    total = session.exec(select(sa.func.count()).select_from(Sweep)).one()
    stmt = select(Sweep).order_by(col(Sweep.id).desc()).limit(limit).offset(offset)
    return list(session.exec(stmt)), int(total)


def runs_of_sweep(session: Session, sweep_id: int) -> list[Run]:
    return list(session.exec(select(Run).where(Run.sweep_id == sweep_id).order_by(col(Run.id))))


def sweep_state_counts(session: Session, sweep_id: int) -> dict[str, int]:
    rows = session.exec(
        select(Run.state, sa.func.count()).where(Run.sweep_id == sweep_id).group_by(Run.state)
    )
    return {state: n for state, n in rows}


def _tag_filter(session: Session, tag: str) -> Any:
    if _dialect(session) == "postgresql":
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
    ``sweep_id``, ``name_contains``, ``config_hash``; ``sort`` (a ``RUN_SORT_COLUMNS`` name)
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


def get_metrics(
    session: Session, run_id: int, after: int | None = None, limit: int | None = None
) -> list[EpochMetric]:
    """The run's epochs in order, only those after epoch ``after`` when given."""
    stmt = select(EpochMetric).where(EpochMetric.run_id == run_id)
    if after is not None:
        stmt = stmt.where(EpochMetric.epoch > after)
    stmt = stmt.order_by(col(EpochMetric.epoch))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.exec(stmt))


def metric_rows(
    session: Session, run_id: int, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """``get_metrics`` as plain column dicts (the API's metrics hot path)."""
    table = EpochMetric.__table__
    stmt = sa.select(table).where(table.c.run_id == run_id).order_by(table.c.epoch)
    if after is not None:
        stmt = stmt.where(table.c.epoch > after)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r) for r in session.execute(stmt).mappings()]


def run_row(session: Session, run_id: int) -> dict[str, Any]:
    """The run's columns as a dict; ``RunNotFound`` if there is none."""
    row = session.execute(sa.select(Run.__table__).where(Run.__table__.c.id == run_id)).first()
    if row is None:
        raise RunNotFound(run_id)
    return dict(row._mapping)


def queued_ahead(session: Session, run: Mapping[str, Any]) -> int | None:
    """How many queued runs a worker takes before ``run`` (queued first, then lower id first);
    None unless ``run`` (a ``run_row``) is queued. One count on the indexed ``state`` column."""
    if run["state"] != "queued":
        return None
    t = Run.__table__.c
    earlier = sa.or_(
        t.queued_at < run["queued_at"], sa.and_(t.queued_at == run["queued_at"], t.id < run["id"])
    )
    stmt = sa.select(sa.func.count()).where(t.state == "queued", earlier)
    return int(session.execute(stmt).scalar_one())


def metrics_for_runs(session: Session, run_ids: Iterable[int]) -> dict[int, list[EpochMetric]]:
    """All epochs of several runs, in one query."""
    ids = list(run_ids)
    out: dict[int, list[EpochMetric]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = (
        select(EpochMetric)
        .where(col(EpochMetric.run_id).in_(ids))
        .order_by(col(EpochMetric.run_id), col(EpochMetric.epoch))
    )
    for m in session.exec(stmt):
        out[m.run_id].append(m)
    return out


COMPARE_RUN_COLUMNS = (
    "id", "name", "state", "seed", "config", "config_hash", "epochs_done", "retries",
    "created_at", "finished_at",
)


def compare_run_rows(session: Session, run_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The columns a comparison needs of each run, in ``run_ids`` order, in one query;
    ``RunNotFound`` for the first id with no run."""
    if not run_ids:
        return []
    t = Run.__table__.c
    stmt = sa.select(*[t[c] for c in COMPARE_RUN_COLUMNS]).where(t.id.in_(list(run_ids)))
    found = {r["id"]: dict(r) for r in session.execute(stmt).mappings()}
    for i in run_ids:
        if i not in found:
            raise RunNotFound(i)
    return [found[i] for i in run_ids]


def _finite_or_none(values: Sequence[Any]) -> list[Any]:
    return [v if v is None or math.isfinite(v) else None for v in values]


def metric_columns(
    session: Session, run_ids: Iterable[int], names: Sequence[str]
) -> dict[int, dict[str, list[Any]]]:
    """Columnar epochs of several runs in one query: ``{run_id: {"epoch": [...], name: [...]}}``
    in epoch order, non-finite values as None. Rows stay tuples: no ORM objects, no dicts."""
    ids = list(run_ids)
    names = list(names)
    empty = {"epoch": [], **{n: [] for n in names}}
    out: dict[int, dict[str, list[Any]]] = {i: {k: [] for k in empty} for i in ids}
    if not ids:
        return out
    t = EpochMetric.__table__.c
    stmt = (
        sa.select(t.run_id, t.epoch, *[t[n] for n in names])
        .where(t.run_id.in_(ids))
        .order_by(t.run_id, t.epoch)
    )
    rows = session.execute(stmt).all()
    keys = ["epoch", *names]
    for run_id, chunk in itertools.groupby(rows, key=lambda r: r[0]):
        columns = list(zip(*chunk, strict=True))[1:]
        out[run_id] = {
            k: list(c) if k == "epoch" else _finite_or_none(c)
            for k, c in zip(keys, columns, strict=True)
        }
    return out


def _cursor_expr(cursors: Mapping[int, int | None]) -> Any:
    """SQL ``CASE run_id WHEN 1 THEN c1 ... END``: each run's 'epochs after' cursor."""
    return sa.case(
        {rid: (-1 if c is None else int(c)) for rid, c in cursors.items()},
        value=EpochMetric.run_id,
        else_=-1,
    )


def metrics_after_many(
    session: Session, run_ids: Iterable[int], cursors: Mapping[int, int | None]
) -> dict[int, list[EpochMetric]]:
    """New epochs of several runs (each after its own cursor epoch), in ONE query."""
    ids = list(run_ids)
    out: dict[int, list[EpochMetric]] = {i: [] for i in ids}
    if not ids:
        return out
    cur = _cursor_expr({i: cursors.get(i) for i in ids})
    stmt = (
        select(EpochMetric)
        .where(col(EpochMetric.run_id).in_(ids), col(EpochMetric.epoch) > cur)
        .order_by(col(EpochMetric.run_id), col(EpochMetric.epoch))
    )
    for m in session.exec(stmt):
        out[m.run_id].append(m)
    return out


def poll_runs(
    session: Session, cursors: Mapping[int, int | None]
) -> dict[int, tuple[Run | None, list[EpochMetric]]]:
    """For the SSE poller, in ONE query: each run (None if gone) and its epochs after its cursor.

    ``run LEFT JOIN epoch_metric ON run_id = run.id AND epoch > cursor(run)``: the run's state
    and its new epochs come from the same statement, so a terminal state is never seen before
    the epochs written ahead of it.
    """
    ids = list(cursors)
    out: dict[int, tuple[Run | None, list[EpochMetric]]] = {i: (None, []) for i in ids}
    if not ids:
        return out
    cur = _cursor_expr(cursors)
    stmt = (
        select(Run, EpochMetric)
        .outerjoin(
            EpochMetric,
            sa.and_(col(EpochMetric.run_id) == col(Run.id), col(EpochMetric.epoch) > cur),
        )
        .where(col(Run.id).in_(ids))
        .order_by(col(Run.id), col(EpochMetric.epoch))
        .execution_options(populate_existing=True)
    )
    for run, metric in session.exec(stmt):
        epochs = out[run.id][1]
        if metric is not None:
            epochs.append(metric)
        out[run.id] = (run, epochs)
    return out


# ------------------------------------------------------------------------------ worker side


def _stale(stale_before: datetime | None) -> Any:
    """SQL: the run is ``running`` and its heartbeat is older than ``stale_before``."""
    if stale_before is None:
        return sa.false()
    old = sa.or_(col(Run.heartbeat_at).is_(None), col(Run.heartbeat_at) < stale_before)
    return sa.and_(col(Run.state) == "running", old)


def claim_run(session: Session, run_id: int, worker_host: str, device: str) -> bool:
    """Atomically move a ``queued`` run to ``running``; True for exactly one caller."""
    now = utcnow()
    ok = _update(
        session,
        run_id,
        col(Run.state) == "queued",
        state="running",
        started_at=now,
        heartbeat_at=now,
        worker_host=worker_host,
        device=device,
        attempts=Run.attempts + 1,
    )
    session.commit()
    return ok


def reclaim_run(
    session: Session, run_id: int, worker_host: str, device: str, stale_before: datetime
) -> bool:
    """Take over a ``running`` run whose heartbeat is older than ``stale_before`` (lost worker)."""
    now = utcnow()
    ok = _update(
        session,
        run_id,
        _stale(stale_before),
        heartbeat_at=now,
        worker_host=worker_host,
        device=device,
        attempts=Run.attempts + 1,
    )
    session.commit()
    return ok


def release_run(session: Session, run_id: int) -> bool:
    """Hand a ``running`` run back to the queue (worker shutdown); its epochs stay, so the next
    worker resumes from its checkpoint. The attempt is given back too: a clean hand-over is not
    a failed try, so the next claim does not count twice. False if it was not running."""
    ok = _update(
        session,
        run_id,
        col(Run.state) == "running",
        state="queued",
        queued_at=utcnow(),
        heartbeat_at=None,
        worker_host=None,
        attempts=sa.case((col(Run.attempts) > 0, Run.attempts - 1), else_=0),
    )
    session.commit()
    return ok


def touch_run(session: Session, run_id: int, worker_host: str | None = None) -> bool:
    """Refresh a running run's heartbeat (a worker thread beats every few seconds).

    With ``worker_host``, only while that worker still holds the run: False tells a worker that
    the run was taken from it (cancelled, deleted, or re-claimed after it looked dead).
    """
    where = col(Run.state) == "running"
    if worker_host is not None:
        where = sa.and_(where, col(Run.worker_host) == worker_host)
    ok = _update(session, run_id, where, heartbeat_at=utcnow())
    session.commit()
    return ok


def expire_runs_of(session: Session, worker_host: str) -> list[int]:
    """Mark stale every ``running`` run held under ``worker_host``; returns their ids.

    A worker that starts calls this with its own node name: whatever that name held was left
    by a process that is gone (a crash, a kill, ``bamsprod up`` restarted), so the reconciler
    may take it back at once instead of waiting for the heartbeat to age.
    """
    held = col(Run.state) == "running", col(Run.worker_host) == worker_host
    ids = [int(i) for i in session.exec(select(Run.id).where(*held)) if i is not None]
    if ids:
        session.exec(  # type: ignore[call-overload]
            sa.update(Run).where(col(Run.id).in_(ids), *held).values(heartbeat_at=None)
        )
    session.commit()
    return ids


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def record_epoch(session: Session, run_id: int, metrics: Mapping[str, Any]) -> None:
    """Write one epoch (``EpochMetrics.to_dict()``) and the run's summary in one transaction.

    Idempotent: a repeated (run, epoch) overwrites the row, never duplicates it. Non-finite
    values are stored as NULL. Raises ``RunNotFound`` if the run is gone.
    """
    epoch = int(metrics["epoch"])
    row: dict[str, Any] = {k: _clean_float(metrics.get(k)) for k in METRIC_FIELDS}
    layers = metrics.get("quant_error_layers") or {}
    row["quant_error_layers"] = {str(k): _clean_float(v) for k, v in layers.items()}
    now = utcnow()
    values = {"run_id": run_id, "epoch": epoch, "created_at": now, **row}
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    stmt = insert(EpochMetric).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "epoch"], set_={**row, "created_at": now}
    )
    try:
        try:
            session.exec(stmt)  # type: ignore[call-overload]
        except sa.exc.IntegrityError as exc:  # the foreign key: the run was deleted
            raise RunNotFound(run_id) from exc
        # Recompute the summary from the rows, so overwrites and out-of-order epochs stay right.
        n, last_epoch = session.exec(
            select(sa.func.count(), sa.func.max(EpochMetric.epoch)).where(
                EpochMetric.run_id == run_id
            )
        ).one()
        last = session.exec(
            select(EpochMetric.test_acc, EpochMetric.train_loss, EpochMetric.quant_error).where(
                EpochMetric.run_id == run_id, EpochMetric.epoch == last_epoch
            )
        ).one()
        best = session.exec(
            select(EpochMetric.test_acc, EpochMetric.epoch)
            .where(EpochMetric.run_id == run_id, col(EpochMetric.test_acc).is_not(None))
            .order_by(col(EpochMetric.test_acc).desc(), col(EpochMetric.epoch).asc())
            .limit(1)
        ).first()
        _update(
            session,
            run_id,
            None,
            epochs_done=n,
            last_epoch=last_epoch,
            last_test_acc=last[0],
            last_train_loss=last[1],
            final_quant_error=last[2],
            best_test_acc=best[0] if best else None,
            best_epoch=best[1] if best else None,
            heartbeat_at=now,
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise


def finish_run(
    session: Session,
    run_id: int,
    state: str,
    error: str | None = None,
    diverged_epoch: int | None = None,
    device: str | None = None,
) -> bool:
    """End a ``running`` run in terminal ``state``; False if it was not running. ``device``,
    when given, replaces the claim's device with what trained it (device and optimizer path)."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state!r} is not a terminal state ({', '.join(TERMINAL_STATES)})")
    extra = {"device": device[:64]} if device else {}
    ok = _update(
        session,
        run_id,
        col(Run.state) == "running",
        state=state,
        finished_at=utcnow(),
        error=error,
        diverged_epoch=diverged_epoch,
        **extra,
    )
    session.commit()
    return ok


def cancel_requested(session: Session, run_id: int) -> bool:
    """True when the run should stop: cancel was requested, or the run is gone or not running."""
    row = session.exec(select(Run.cancel_requested, Run.state).where(Run.id == run_id)).first()
    session.commit()  # end the read transaction; the worker polls this often
    if row is None:
        return True
    requested, state = row
    return bool(requested) or state != "running"


def requeue_candidates(
    session: Session, stale_before: datetime, queued_before: datetime | None = None
) -> list[int]:
    """Runs whose task may be lost: ``queued`` since before ``queued_before`` (default
    ``stale_before``) and ``running`` with a heartbeat older than ``stale_before``."""
    queued_before = queued_before or stale_before
    stmt = (
        select(Run.id)
        .where(
            sa.or_(
                sa.and_(col(Run.state) == "queued", col(Run.queued_at) < queued_before),
                _stale(stale_before),
            )
        )
        .order_by(col(Run.id))
    )
    ids = list(session.exec(stmt))
    session.commit()
    return [int(i) for i in ids if i is not None]


# ---------------------------------------------------------------------------- user actions


def request_cancel(session: Session, run_id: int, stale_before: datetime | None = None) -> Run:
    """Cancel: a queued run, or a running one whose heartbeat is older than ``stale_before``
    (its worker is gone), ends ``cancelled`` now; a live running one is flagged for its worker.

    Raises ``RunNotFound``, or ``RunStateError`` when the run has finished other than cancelled.
    """
    now = utcnow()
    if not _update(
        session,
        run_id,
        sa.or_(col(Run.state) == "queued", _stale(stale_before)),
        state="cancelled",
        cancel_requested=True,
        finished_at=now,
    ):
        _update(session, run_id, col(Run.state) == "running", cancel_requested=True)
    session.commit()
    run = require_run(session, run_id)
    # Cancelling a cancelled run is a no-op; any other end (even one reached after a cancel
    # request, when the worker finished first) is final.
    if run.state in TERMINAL_STATES and run.state != "cancelled":
        raise RunStateError(f"run {run_id} has already finished ({run.state})")
    return run


_RESET_SUMMARY: dict[str, Any] = {
    "epochs_done": 0,
    "last_epoch": None,
    "last_test_acc": None,
    "last_train_loss": None,
    "best_test_acc": None,
    "best_epoch": None,
    "final_quant_error": None,
    "diverged_epoch": None,
}


def retry_run(session: Session, run_id: int) -> Run:
    """Queue a finished run again as a fresh attempt: its epochs and summary are cleared and
    ``retries`` goes up by one (workers key checkpoints on it). ``RunStateError`` unless the
    run is in a terminal state."""
    ok = _update(
        session,
        run_id,
        col(Run.state).in_(TERMINAL_STATES),
        state="queued",
        queued_at=utcnow(),
        started_at=None,
        finished_at=None,
        heartbeat_at=None,
        worker_host=None,
        device=None,
        error=None,
        cancel_requested=False,
        retries=Run.retries + 1,
        **_RESET_SUMMARY,
    )
    if ok:
        session.exec(sa.delete(EpochMetric).where(col(EpochMetric.run_id) == run_id))  # type: ignore[call-overload]
    session.commit()
    run = require_run(session, run_id)
    if not ok:
        raise RunStateError(f"run {run_id} is {run.state}; only finished runs can be retried")
    return run


def delete_run(session: Session, run_id: int, stale_before: datetime | None = None) -> None:
    """Delete a run and (by cascade) its epochs; ``RunStateError`` while it is running, unless
    its heartbeat is older than ``stale_before`` (its worker is gone)."""
    result = session.exec(  # type: ignore[call-overload]
        sa.delete(Run).where(
            col(Run.id) == run_id, sa.or_(col(Run.state) != "running", _stale(stale_before))
        )
    )
    session.commit()
    if result.rowcount == 1:
        return
    run = require_run(session, run_id)
    raise RunStateError(f"run {run_id} is {run.state}; cancel it before deleting")


LIVE_STATES = ("queued", "running")


def delete_sweep(session: Session, sweep_id: int) -> list[int]:
    """Delete a sweep and its runs (their epochs by cascade); returns the deleted run ids.

    ``SweepNotFound``, or ``RunStateError`` (nothing deleted) while any of its runs is queued or
    running: cancel them first. The check and the delete share one transaction; a run retried
    meanwhile is left alone and the sweep stays.
    """
    get_sweep(session, sweep_id)
    live = session.exec(
        select(sa.func.count()).where(Run.sweep_id == sweep_id, col(Run.state).in_(LIVE_STATES))
    ).one()
    if live:
        session.rollback()
        raise RunStateError(
            f"sweep {sweep_id} has {live} queued or running runs; cancel them first"
        )
    ids = [int(i) for i in session.exec(
        select(Run.id).where(Run.sweep_id == sweep_id, col(Run.state).not_in(LIVE_STATES))
    )]
    session.exec(  # type: ignore[call-overload]
        sa.delete(Run).where(col(Run.sweep_id) == sweep_id, col(Run.state).not_in(LIVE_STATES))
    )
    left = session.exec(select(sa.func.count()).where(Run.sweep_id == sweep_id)).one()
    if left:
        session.rollback()
        raise RunStateError(f"sweep {sweep_id} has a run queued meanwhile; cancel it first")
    session.exec(sa.delete(Sweep).where(col(Sweep.id) == sweep_id))  # type: ignore[call-overload]
    session.commit()
    return ids
