"""Alembic migrations: upgrade head creates the schema the models describe; downgrade works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bamsprod.app.db import (
    current_revision,
    downgrade_db,
    get_engine,
    head_revision,
    init_db,
    is_sqlite,
)
from bamsprod.app.tables import metadata

TABLES = {"run", "epoch_metric", "sweep", "tune_trial", "tune_stage"}


def tables(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names()) - {"alembic_version"}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_head_matches_models_and_downgrade_base(empty_db_url, kind: str) -> None:
    url = empty_db_url(kind)
    assert tables(url) == set() and current_revision(url) is None
    init_db(url)
    assert tables(url) == TABLES
    assert current_revision(url) == head_revision()
    with get_engine(url).connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == [], f"models and migrations disagree: {diff}"
    indexes = {i["name"]: i for i in sa.inspect(get_engine(url)).get_indexes("epoch_metric")}
    assert indexes["ux_epoch_metric_run_epoch"]["column_names"] == ["run_id", "epoch"]
    assert indexes["ux_epoch_metric_run_epoch"]["unique"]
    if is_sqlite(url):
        with get_engine(url).connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    init_db(url)  # idempotent
    downgrade_db(url, "base")
    assert tables(url) == set() and current_revision(url) is None
    init_db(url)
    assert tables(url) == TABLES


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_start_up_migrates_once(empty_db_url, kind: str) -> None:
    """API and worker starting together: both call init_db, neither fails."""
    url = empty_db_url(kind)
    code = textwrap.dedent(
        f"""
        from bamsprod.app.db import init_db
        init_db({url!r})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert tables(url) == TABLES and current_revision(url) == head_revision()


def old_run(conn: sa.Connection, config, sweep_id: int | None = None) -> int:
    """Insert a queued run for ``config`` with only the columns the database has now (an older
    revision's ``run`` table lacks the newer ones); returns its id."""
    from bamsprod.app.store import new_run
    from bamsprod.app.tables import Run, utcnow

    have = {c["name"] for c in sa.inspect(conn).get_columns("run")}
    row = new_run(config, sweep_id, utcnow())
    values = {c.name: getattr(row, c.name) for c in Run.__table__.columns
              if c.name in have and c.name != "id"}
    return int(conn.execute(Run.__table__.insert().values(**values)).inserted_primary_key[0])


def test_sqlite_autoincrement_rebuild_keeps_every_row(empty_db_url) -> None:
    """0002 rebuilds run and sweep on SQLite: epochs (ON DELETE CASCADE children) and sweep
    links survive, foreign keys are on again afterwards, and a deleted newest id is not reused."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.db import alembic_config, session_scope
    from bamsprod.core.spec import RunConfig

    url = empty_db_url("sqlite")
    command.upgrade(alembic_config(url), "0001")
    with get_engine(url).begin() as conn:  # rows as revision 0001's tables hold them
        conn.execute(sa.text("INSERT INTO sweep (name, spec, n_runs, created_at) "
                             "VALUES ('s', '{}', 2, '2026-01-01 00:00:00')"))
        ids = [old_run(conn, RunConfig(seed=i), sweep_id=1) for i in (0, 1)]
        conn.execute(sa.text("UPDATE run SET state = 'running', worker_host = 'w' "
                             "WHERE id = :r"), {"r": ids[0]})
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": ids[0]})
    init_db(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 1
        assert conn.execute(sa.text("SELECT sweep_id FROM run")).scalars().all() == [1, 1]
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'run'")).scalar()
        assert "AUTOINCREMENT" in sql
    with session_scope(url) as s:
        store.request_cancel(s, ids[1])
        store.delete_run(s, ids[1])
        assert store.create_run(s, RunConfig()).id == ids[1] + 1


def test_val_metrics_migration_keeps_old_epochs_and_adds_columns(empty_db_url) -> None:
    """0003 adds val_loss/val_acc: an epoch stored before reads back with them NULL."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.db import alembic_config, session_scope
    from bamsprod.core.spec import RunConfig

    url = empty_db_url("sqlite")
    command.upgrade(alembic_config(url), "0002_autoincrement")
    with get_engine(url).begin() as conn:
        run_id = old_run(conn, RunConfig())
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": run_id})
    init_db(url)
    with session_scope(url) as s:
        store.claim_run(s, run_id, "w", "cpu")
        store.record_epoch(s, run_id, {"epoch": 2, "test_acc": 0.6, "val_acc": 0.7})
        rows = {m.epoch: m for m in store.metrics_for_runs(s, [run_id])[run_id]}
    assert rows[1].val_acc is None and rows[1].test_acc == 0.5
    assert rows[2].val_acc == 0.7
