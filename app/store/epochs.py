"""Epochs: ``record_epoch`` writes one, its evaluation points and the run's summary in one
transaction (idempotent per run and epoch); the reads serve the API, compare and SSE hot paths
in one query each."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from bamsprod.app.schemas import METRIC_FIELDS
from bamsprod.app.store.base import RunLost, RunNotFound, dialect, held, update_run
from bamsprod.app.store.tables import EpochMetric, EvalPoint, Run, utcnow

# An evaluation point's columns besides its run, in the order the API and CSV give them.
EVAL_FIELDS = ("step", "epoch", "train_seconds", "val_loss", "val_acc", "eval_seconds")


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _upsert_points(session: Session, run_id: int, points: Sequence[Mapping[str, Any]]) -> None:
    """Insert or overwrite evaluation points (``EvalPoint.to_dict()``), keyed by run and step."""
    if not points:
        return
    rows = [
        {"run_id": run_id, "step": int(p["step"]), "epoch": float(p["epoch"]),
         **{k: _clean_float(p.get(k)) for k in EVAL_FIELDS[2:]}}
        for p in points
    ]
    insert = postgresql.insert if dialect(session) == "postgresql" else sqlite.insert
    stmt = insert(EvalPoint).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "step"],
        set_={k: stmt.excluded[k] for k in EVAL_FIELDS[1:]},
    )
    session.exec(stmt)  # type: ignore[call-overload]


def record_epoch(session: Session, run_id: int, metrics: Mapping[str, Any],
                 lease: str | None = None) -> None:
    """Write one epoch (``EpochMetrics.to_dict()``), its evaluation points (``evals``) and the
    run's summary in one transaction.

    Idempotent: a repeated (run, epoch) overwrites the row and its points, never duplicates
    them. Non-finite values are stored as NULL. Raises ``RunNotFound`` if the run is gone; with
    ``lease`` (a worker's), ``RunLost`` unless the run is ``running`` under that lease, and
    nothing is written.
    """
    epoch = int(metrics["epoch"])
    row: dict[str, Any] = {k: _clean_float(metrics.get(k)) for k in METRIC_FIELDS}
    layers = metrics.get("quant_error_layers") or {}
    row["quant_error_layers"] = {str(k): _clean_float(v) for k, v in layers.items()}
    now = utcnow()
    values = {"run_id": run_id, "epoch": epoch, "created_at": now, **row}
    insert = postgresql.insert if dialect(session) == "postgresql" else sqlite.insert
    stmt = insert(EpochMetric).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "epoch"], set_={**row, "created_at": now}
    )
    try:
        try:
            session.exec(stmt)  # type: ignore[call-overload]
            _upsert_points(session, run_id, metrics.get("evals") or ())
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
        summarised = update_run(
            session,
            run_id,
            None if lease is None else held(lease),
            epochs_done=n,
            last_epoch=last_epoch,
            last_test_acc=last[0],
            last_train_loss=last[1],
            final_quant_error=last[2],
            best_test_acc=best[0] if best else None,
            best_epoch=best[1] if best else None,
            heartbeat_at=now,
        )
        if not summarised and lease is not None:
            raise RunLost(run_id)  # another worker holds the run now: roll the epoch back
        session.commit()
    except BaseException:
        session.rollback()
        raise


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


def eval_rows(
    session: Session, run_id: int, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The run's evaluation points in step order, only those after step ``after`` when given."""
    t = EvalPoint.__table__.c
    stmt = sa.select(t.run_id, *[t[k] for k in EVAL_FIELDS]).where(t.run_id == run_id)
    if after is not None:
        stmt = stmt.where(t.step > after)
    stmt = stmt.order_by(t.step)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r) for r in session.execute(stmt).mappings()]


def eval_columns(session: Session, run_ids: Iterable[int]) -> dict[int, dict[str, list[Any]]]:
    """Columnar evaluation points of several runs in one query, in step order:
    ``{run_id: {"step": [...], "epoch": [...], ...}}``; a run without points has empty lists."""
    ids = list(run_ids)
    out: dict[int, dict[str, list[Any]]] = {i: {k: [] for k in EVAL_FIELDS} for i in ids}
    if not ids:
        return out
    t = EvalPoint.__table__.c
    stmt = (
        sa.select(t.run_id, *[t[k] for k in EVAL_FIELDS])
        .where(t.run_id.in_(ids))
        .order_by(t.run_id, t.step)
    )
    for run_id, chunk in itertools.groupby(session.execute(stmt).all(), key=lambda r: r[0]):
        columns = list(zip(*chunk, strict=True))[1:]
        out[run_id] = {k: list(c) for k, c in zip(EVAL_FIELDS, columns, strict=True)}
    return out


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


def _finite_or_none(values: Sequence[Any]) -> list[Any]:
    # All finite (the common case): their sum is finite, and NaN or inf anywhere makes it not.
    try:
        total = sum(values)
    except TypeError:  # a None among them
        total = sum(v for v in values if v is not None)
    if math.isfinite(total):
        return list(values)
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
