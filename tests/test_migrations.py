"""Alembic migrations: upgrade head creates the schema the models describe; downgrade works."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bamsprod.app.store.engine import (
    current_revision,
    downgrade_db,
    get_engine,
    head_revision,
    init_db,
    is_sqlite,
)
from bamsprod.app.store.tables import metadata
from bamsprod.core.config import RunConfig

TABLES = {"run", "epoch_metric", "eval_point", "sweep", "tune_trial", "tune_stage"}


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
        from bamsprod.app.store.engine import init_db
        init_db({url!r})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert tables(url) == TABLES and current_revision(url) == head_revision()


def old_runs(url: str, configs: list, sweep: bool = False) -> list[int]:
    """Runs (in a new sweep with ``sweep``) inserted as an older revision's ``run`` table holds
    them: only the columns it has, since the models describe the newest."""
    from bamsprod.app.store import new_run
    from bamsprod.app.store.tables import Run, Sweep, utcnow

    have = {c["name"] for c in sa.inspect(get_engine(url)).get_columns("run")}
    now = utcnow()
    with get_engine(url).begin() as conn:
        sweep_id = None
        if sweep:
            row = Sweep(name="s", definition={}, n_runs=len(configs), created_at=now)
            values = row.model_dump(exclude={"id"})
            table = Sweep.__table__
            if "definition" not in {c["name"] for c in sa.inspect(conn).get_columns("sweep")}:
                values["spec"] = values.pop("definition")  # its name before 0010
                table = sa.Table("sweep", sa.MetaData(), *[
                    sa.Column("spec" if c.name == "definition" else c.name, c.type,
                              primary_key=c.primary_key)
                    for c in Sweep.__table__.columns])
            insert = sa.insert(table).values(values)
            sweep_id = conn.execute(insert).inserted_primary_key[0]
        ids = []
        for config in configs:
            values = new_run(config, sweep_id, now).model_dump(exclude={"id"})
            values = {k: v for k, v in values.items() if k in have}
            ids.append(conn.execute(sa.insert(Run.__table__).values(values)).inserted_primary_key[0])
    return ids


def test_sqlite_autoincrement_rebuild_keeps_every_row(empty_db_url) -> None:
    """0002 rebuilds run and sweep on SQLite: epochs (ON DELETE CASCADE children) and sweep
    links survive, foreign keys are on again afterwards, and a deleted newest id is not reused."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.store.engine import alembic_config, session_scope
    from bamsprod.core.config import RunConfig

    url = empty_db_url("sqlite")
    command.upgrade(alembic_config(url), "0001")
    runs = old_runs(url, [RunConfig(seed=0), RunConfig(seed=1)], sweep=True)
    with get_engine(url).begin() as conn:  # a running run and its epoch, as 0001 holds them
        conn.execute(sa.text("UPDATE run SET state = 'running', worker_host = 'w' "
                             "WHERE id = :r"), {"r": runs[0]})
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": runs[0]})
    init_db(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 1
        assert conn.execute(sa.text("SELECT sweep_id FROM run")).scalars().all() == [1, 1]
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'run'")).scalar()
        assert "AUTOINCREMENT" in sql
    with session_scope(url) as s:
        store.request_cancel(s, runs[1])
        store.delete_run(s, runs[1])
        assert store.create_run(s, RunConfig()).id == runs[1] + 1


def test_val_metrics_migration_keeps_old_epochs_and_adds_columns(empty_db_url) -> None:
    """0003 adds val_loss/val_acc: an epoch stored before reads back with them NULL."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.store.engine import alembic_config, session_scope
    from bamsprod.core.config import RunConfig

    url = empty_db_url("sqlite")
    command.upgrade(alembic_config(url), "0002_autoincrement")
    [run_id] = old_runs(url, [RunConfig()])
    with get_engine(url).begin() as conn:
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


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_plugins_migration_gives_old_runs_an_empty_record_and_keeps_epochs(
        empty_db_url, kind: str) -> None:
    """0006 adds run.plugins: a run stored before reads back with ``[]`` (built-ins only), and
    going down again keeps every run and epoch."""
    from alembic import command

    from bamsprod.app.store.engine import alembic_config

    url = empty_db_url(kind)
    command.upgrade(alembic_config(url), "0005_tuning")
    [old] = old_runs(url, [RunConfig()])
    with get_engine(url).begin() as conn:  # an epoch row as revision 0005's table holds it
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": old})
    command.upgrade(alembic_config(url), "0006_plugins")
    assert current_revision(url) == "0006_plugins"
    with get_engine(url).connect() as conn:
        plugins = conn.execute(sa.text("SELECT plugins FROM run WHERE id = :r"),
                               {"r": old}).scalar()
    assert (json.loads(plugins) if isinstance(plugins, str) else plugins) == []
    downgrade_db(url, "0005_tuning")
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM run")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 1
        cols = {c["name"] for c in sa.inspect(conn).get_columns("run")}
    assert "plugins" not in cols


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_eval_points_migration_keeps_old_runs_and_epochs(empty_db_url, kind: str) -> None:
    """0007 adds eval_point, epoch_metric.eval_seconds and run.environment: a run and an epoch
    stored before read back with them empty; downgrading drops them and keeps the epochs."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.store.engine import alembic_config, session_scope
    from bamsprod.core.config import RunConfig

    url = empty_db_url(kind)
    command.upgrade(alembic_config(url), "0005_tuning")
    [run_id] = old_runs(url, [RunConfig()])
    with get_engine(url).begin() as conn:  # a running run and its epoch, as 0005 holds them
        conn.execute(sa.text("UPDATE run SET state = 'running', worker_host = 'w' "
                             "WHERE id = :r"), {"r": run_id})
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, val_acc, quant_error_layers, "
            "created_at) VALUES (:r, 1, 0.5, 0.4, '{}', '2026-01-01 00:00:00')"
        ), {"r": run_id})
    init_db(url)
    with get_engine(url).connect() as conn:  # SQL NULL, not the JSON text 'null'
        env = conn.execute(sa.text("SELECT environment IS NULL FROM run")).scalar()
    assert env in (1, True)
    with session_scope(url) as s:
        [old] = store.metrics_for_runs(s, [run_id])[run_id]
        assert old.eval_seconds is None and old.val_acc == 0.4
        assert store.eval_rows(s, run_id) == []
        point = {"step": 20, "epoch": 2.0, "train_seconds": 3.0, "val_loss": 0.9,
                 "val_acc": 0.6, "eval_seconds": 0.1}
        store.record_epoch(s, run_id, {"epoch": 2, "val_acc": 0.6, "eval_seconds": 0.2,
                                       "evals": [point]})
        assert store.eval_rows(s, run_id) == [{"run_id": run_id, **point}]
    downgrade_db(url, "0005_tuning")
    assert "eval_point" not in tables(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 2


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_phase_and_archive_migration_keeps_old_runs_in_the_table(empty_db_url, kind: str) -> None:
    """0008 adds run.phase and run.archived: a run stored before reads back with no phase, not
    archived (so the runs table still lists it); going down keeps every run and epoch."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.store.engine import alembic_config, session_scope

    url = empty_db_url(kind)
    command.upgrade(alembic_config(url), "0007_eval_points")
    [old] = old_runs(url, [RunConfig()])
    with get_engine(url).begin() as conn:  # an epoch row as revision 0007's table holds it
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": old})
    init_db(url)
    with session_scope(url) as s:
        rows, total = store.list_run_rows(s, archived=False)
        assert total == 1 and rows[0]["phase"] is None and rows[0]["archived"] is False
    downgrade_db(url, "0007_eval_points")
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM run")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 1
        cols = {c["name"] for c in sa.inspect(conn).get_columns("run")}
    assert "phase" not in cols and "archived" not in cols


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sweep_definition_migration_keeps_the_body_and_its_runs(empty_db_url, kind: str) -> None:
    """0010 renames sweep.spec to sweep.definition in place: the stored body reads back under
    its new name, the sweep's runs and their epochs stay, and going down restores ``spec``."""
    from alembic import command

    from bamsprod.app import store
    from bamsprod.app.store.engine import alembic_config, session_scope

    url = empty_db_url(kind)
    command.upgrade(alembic_config(url), "0009_run_phase_archived")
    runs = old_runs(url, [RunConfig(seed=0), RunConfig(seed=1)], sweep=True)
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE sweep SET spec = :b"), {"b": '{"grid": {"seed": [0, 1]}}'})
        conn.execute(sa.text(
            "INSERT INTO epoch_metric (run_id, epoch, test_acc, quant_error_layers, created_at) "
            "VALUES (:r, 1, 0.5, '{}', '2026-01-01 00:00:00')"
        ), {"r": runs[0]})
    init_db(url)
    with session_scope(url) as s:
        assert store.get_sweep(s, 1).definition == {"grid": {"seed": [0, 1]}}
    downgrade_db(url, "0009_run_phase_archived")
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM run WHERE sweep_id = 1")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM epoch_metric")).scalar() == 1
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sweep")}
    assert "spec" in cols and "definition" not in cols
