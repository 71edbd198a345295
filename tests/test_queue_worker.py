"""The queue and the worker against real Redis, SQLite/PostgreSQL and Celery worker processes."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from service_fixtures import wait_for
from sqlalchemy.exc import IntegrityError, OperationalError

from bamsprod.app import queue, store
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import TERMINAL_STATES, RunConfig
from bamsprod.worker.db import with_db_retry
from bamsprod.worker.reconciler import reconcile_once
from bamsprod.worker.tasks import execute_run

pytestmark = [pytest.mark.service, pytest.mark.slow]

TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 256}


def tiny(**kw: object) -> RunConfig:
    return RunConfig(**{**TINY, **kw})


def submit(s: Settings, config: RunConfig, *, enqueue: bool = True) -> int:
    with session_scope(s.database_url) as session:
        run_id = store.create_run(session, config).id
    if enqueue:
        assert queue.enqueue_run(run_id)
    return int(run_id)


def run_row(s: Settings, run_id: int):  # type: ignore[no-untyped-def]
    with session_scope(s.database_url) as session:
        return store.get_run(session, run_id)


def epochs_of(s: Settings, run_id: int) -> list[int]:
    with session_scope(s.database_url) as session:
        return [m.epoch for m in store.get_metrics(session, run_id)]


def wait_state(s: Settings, run_id: int, states: tuple[str, ...], timeout: float = 60.0):  # type: ignore[no-untyped-def]
    def check():  # type: ignore[no-untyped-def]
        run = run_row(s, run_id)
        return run if run.state in states else None

    return wait_for(check, timeout, f"run {run_id} to reach {states}")


def test_submitted_run_completes_on_worker(service_settings: Settings, start_worker) -> None:
    from fastapi.testclient import TestClient

    from bamsprod.app.web.main import create_app

    s = service_settings
    w = start_worker(s, "w1")
    with TestClient(create_app(s)) as client:  # the real app, with the real enqueue_run
        r = client.post("/api/runs", json=tiny(epochs=2, evals_per_epoch=3).model_dump(mode="json"))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        health = client.get("/api/health").json()
        assert health["broker"]["ok"] and w.name in health["workers"], health
    run = wait_state(s, run_id, TERMINAL_STATES)
    assert run.state == "succeeded", (run.error, w.output()[-3000:])
    assert epochs_of(s, run_id) == [1, 2]
    assert run.epochs_done == 2 and run.best_test_acc is not None
    assert run.worker_host == w.name and run.attempts == 1
    assert run.device == "cpu · fused"  # the device and the optimizer path that trained it
    assert run.started_at >= run.created_at and run.finished_at >= run.started_at
    assert not (s.checkpoint_dir / str(run_id)).exists()  # removed when the run ended
    # Three evaluation points an epoch, written with their epochs: digits' 1293 training
    # examples make 6 batches of 256 (the last 13), evaluated after 2, 4 and 6.
    with session_scope(s.database_url) as session:
        points = store.eval_rows(session, run_id)
        epochs = store.get_metrics(session, run_id)
    assert [p["step"] for p in points] == [2, 4, 6, 8, 10, 12]
    assert [p["epoch"] for p in points] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert [points[2]["val_acc"], points[5]["val_acc"]] == [m.val_acc for m in epochs]
    assert points[5]["train_seconds"] == pytest.approx(sum(m.seconds for m in epochs))
    assert all(m.eval_seconds > 0 for m in epochs)
    # Where it trained: this machine's torch, Python, CPU and the worker's thread count.
    import platform

    import torch

    from bamsprod.core.environment import cpu_name

    env = run.environment
    assert (env["torch"], env["python"]) == (torch.__version__, platform.python_version())
    assert env["device_name"] == cpu_name() and env["threads"] >= 1
    assert env["bamsprod"]["version"] and len(env["bamsprod"]["commit"] or "x" * 40) == 40


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_sweep_of_six_runs_on_two_workers(service_settings: Settings, start_worker) -> None:
    s = service_settings
    workers = [start_worker(s, "w1"), start_worker(s, "w2")]
    configs = [tiny(epochs=2, seed=seed, optimizer=opt) for opt in ("bamsprod", "adam")
               for seed in range(3)]
    with session_scope(s.database_url) as session:
        _, runs = store.create_sweep(session, "six", {"seed": [0, 1, 2]}, configs)
        run_ids = [int(r.id) for r in runs]
    for run_id in run_ids:
        assert queue.enqueue_run(run_id)

    def all_done() -> bool:
        return all(run_row(s, i).state in TERMINAL_STATES for i in run_ids)

    wait_for(all_done, 180, "the sweep to finish")
    hosts = set()
    for run_id in run_ids:
        run = run_row(s, run_id)
        assert run.state == "succeeded", run.error
        assert run.attempts == 1  # claimed exactly once
        assert epochs_of(s, run_id) == [1, 2]  # every epoch, once
        hosts.add(run.worker_host)
    with session_scope(s.database_url) as session:
        n_rows = session.exec(sa.text("SELECT count(*) FROM epoch_metric")).one()[0]
    assert n_rows == 12
    assert hosts == {w.name for w in workers}  # prefetch 1: both workers took runs


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_cancel_stops_a_long_run_within_seconds(service_settings: Settings, start_worker
                                                ) -> None:
    s = service_settings
    start_worker(s, "w1")
    run_id = submit(s, tiny(epochs=500, batch_size=32))
    wait_for(lambda: epochs_of(s, run_id), 60, f"run {run_id}'s first epoch")
    with session_scope(s.database_url) as session:
        store.request_cancel(session, run_id)
    t0 = time.monotonic()
    run = wait_state(s, run_id, TERMINAL_STATES, timeout=10)
    elapsed = time.monotonic() - t0
    assert run.state == "cancelled"
    assert elapsed < 5, f"cancel took {elapsed:.1f}s"
    assert 1 <= run.epochs_done < 500
    assert not (s.checkpoint_dir / str(run_id)).exists()


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_worker_shutdown_hands_the_run_back_and_it_resumes(service_settings: Settings,
                                                           start_worker) -> None:
    s = service_settings
    first = start_worker(s, "w1")
    run_id = submit(s, tiny(epochs=500, batch_size=32))
    wait_for(lambda: epochs_of(s, run_id), 60, f"run {run_id}'s first epoch")
    t0 = time.monotonic()
    assert first.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10, "the worker did not stop within a batch or so"
    run = run_row(s, run_id)
    assert run.state == "queued" and run.epochs_done >= 1  # handed back, epochs kept
    assert (s.checkpoint_dir / str(run_id)).is_dir()
    with session_scope(s.database_url) as session:
        kept = {m.epoch: m.created_at for m in store.get_metrics(session, run_id)}
    start_worker(s, "w2")  # takes the message the first worker re-sent when it let go
    wait_for(lambda: run_row(s, run_id).epochs_done > max(kept), 60, "the run to go on")
    with session_scope(s.database_url) as session:
        store.request_cancel(session, run_id)
        rows = {m.epoch: m.created_at for m in store.get_metrics(session, run_id)}
    assert all(rows[e] == kept[e] for e in kept)  # resumed after them, not trained again
    run = wait_state(s, run_id, TERMINAL_STATES, timeout=10)
    assert run.state == "cancelled" and run.attempts == 1  # a clean hand-over is no new try


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_redelivered_task_trains_a_run_once(service_settings: Settings, start_worker) -> None:
    s = service_settings
    w = start_worker(s, "w1")
    run_id = submit(s, tiny(epochs=2))
    assert queue.enqueue_run(run_id)  # the same task delivered twice
    run = wait_state(s, run_id, TERMINAL_STATES)
    assert run.state == "succeeded" and run.attempts == 1
    assert epochs_of(s, run_id) == [1, 2]
    wait_for(lambda: queue.queue_depth() == 0 and "skipping this delivery" in w.output(),
             30, "the second delivery to be consumed and skipped")
    assert w.output().count("skipping this delivery") == 1
    # Delivered again after it ended: nothing happens.
    assert execute_run(run_id, settings=s) == "skipped"
    assert run_row(s, run_id).attempts == 1


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_task_for_a_running_run_does_not_train_it(service_settings: Settings) -> None:
    s = service_settings
    run_id = submit(s, tiny(epochs=1), enqueue=False)
    with session_scope(s.database_url) as session:
        assert store.claim_run(session, run_id, "other@host", "cpu")
    assert execute_run(run_id, hostname="me@host", settings=s) == "skipped"
    run = run_row(s, run_id)
    assert run.state == "running" and run.worker_host == "other@host" and run.attempts == 1
    assert epochs_of(s, run_id) == []


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_stale_running_run_is_reclaimed_and_resumed(service_settings: Settings) -> None:
    from bamsprod.core.train import train

    s = service_settings.model_copy(update={"stale_running_seconds": 2.0})
    run_id = submit(s, tiny(epochs=3), enqueue=False)
    # A worker trained epoch 1 (row and checkpoint written), then died: its heartbeat stops.
    config = RunConfig.model_validate(run_row(s, run_id).config)  # as the worker reads it
    done: list[int] = []
    first = train(config, checkpoint_dir=s.checkpoint_dir / str(run_id),
                  on_epoch=lambda m: done.append(m.epoch), should_stop=lambda: bool(done))
    assert first.state == "cancelled" and first.epochs_done == 1
    with session_scope(s.database_url) as session:
        assert store.claim_run(session, run_id, "dead@host", "cpu")
        store.record_epoch(session, run_id, first.history[0].to_dict())
        epoch1_written = store.get_metrics(session, run_id)[0].created_at
    assert execute_run(run_id, hostname="alive@host", settings=s) == "skipped"  # still fresh
    time.sleep(2.1)
    assert execute_run(run_id, hostname="alive@host", settings=s) == "succeeded"
    run = run_row(s, run_id)
    assert run.worker_host == "alive@host" and run.attempts == 2
    with session_scope(s.database_url) as session:
        rows = store.get_metrics(session, run_id)
    # Resumed from the checkpoint, not restarted: epoch 1 was not trained (written) again, and
    # epochs 2 and 3 are what an uninterrupted run gives.
    assert [m.epoch for m in rows] == [1, 2, 3]
    assert rows[0].created_at == epoch1_written
    # One evaluation point an epoch; its training seconds run on from the first worker's.
    with session_scope(s.database_url) as session:
        points = store.eval_rows(session, run_id)
    assert [p["epoch"] for p in points] == [1.0, 2.0, 3.0]
    assert [p["val_acc"] for p in points] == [m.val_acc for m in rows]
    assert [p["train_seconds"] for p in points] == pytest.approx(
        [rows[0].seconds, rows[0].seconds + rows[1].seconds, sum(m.seconds for m in rows)])
    reference = train(config)
    assert [m.train_loss for m in rows] == pytest.approx([m.train_loss for m in reference.history])
    assert [m.test_acc for m in rows] == pytest.approx([m.test_acc for m in reference.history])


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_bad_config_and_missing_data_fail_without_retry(service_settings: Settings) -> None:
    s = service_settings
    bad_data = submit(s, tiny(epochs=1, dataset="cifar10", data_dir=str(s.home / "nowhere")),
                      enqueue=False)
    assert execute_run(bad_data, settings=s) == "failed"
    run = run_row(s, bad_data)
    assert run.state == "failed" and "cifar10" in run.error.lower()
    assert run.attempts == 1

    unreadable = submit(s, tiny(epochs=1), enqueue=False)
    with session_scope(s.database_url) as session:
        run = store.get_run(session, unreadable)
        run.config = {**run.config, "optimizer": "no-such-optimizer"}
        session.add(run)
        session.commit()
    assert execute_run(unreadable, settings=s) == "failed"
    run = run_row(s, unreadable)
    assert run.state == "failed" and "invalid run config" in run.error
    assert execute_run(12345, settings=s) == "missing"


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_reconciler_requeues_a_run_whose_message_was_lost(service_settings: Settings,
                                                          start_worker) -> None:
    s = service_settings.model_copy(update={"reconcile_seconds": 1.0})
    run_id = submit(s, tiny(epochs=1), enqueue=False)  # committed, but no message sent
    start_worker(s, "w1")
    run = wait_state(s, run_id, TERMINAL_STATES, timeout=60)
    assert run.state == "succeeded" and run.attempts == 1


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_reconcile_once_does_not_flood_a_backlog(service_settings: Settings) -> None:
    s = service_settings.model_copy(update={"reconcile_seconds": 0.0})
    ids = [submit(s, tiny(epochs=1)) for _ in range(3)]  # each has its message
    assert queue.queue_depth() == 3
    assert reconcile_once(s) == []  # the broker still holds a message per queued run
    lost = submit(s, tiny(epochs=1), enqueue=False)
    assert reconcile_once(s) == [*ids, lost]  # a message is missing: all queued re-sent
    assert queue.queue_depth() == 7


def test_workers_seen_and_broker_ok_report_unreachable_broker(tmp_path: Path) -> None:
    from service_fixtures import make_settings

    try:
        queue.configure(make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0"))
        assert queue.broker_ok(timeout=0.5) is False
        assert queue.workers_seen(timeout=0.2) == []
        assert queue.enqueue_run(1) is False  # logged; the reconciler re-sends it later
    finally:
        queue.configure()


def test_db_retry_rides_out_a_real_sqlite_lock(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.05,
                                                               "check_same_thread": False})
    calls = []

    def write() -> None:
        calls.append(1)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    with_db_retry(write, what="insert")
    assert len(calls) > 1  # it was locked at first, then went through
    with pytest.raises(OperationalError):  # a lock that never lifts ends the retries
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with_db_retry(write, what="insert", attempts=3)
        finally:
            holder.execute("COMMIT")

    def integrity() -> None:
        calls.append(2)
        raise IntegrityError("INSERT", {}, Exception("unique"))

    with pytest.raises(IntegrityError):
        with_db_retry(integrity)
    assert calls.count(2) == 1  # never retried
    engine.dispose()
    holder.close()


def read_sse(lines, until_epoch: int | None = None) -> list[tuple[str, dict, float]]:  # type: ignore[no-untyped-def]
    """(event, data, time received) for each SSE message, up to ``until_epoch`` or the end."""
    import json

    out, event = [], None
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            out.append((event, data, time.time()))
            if event == "epoch" and data["epoch"] == until_epoch:
                break
            if event == "state" and data["state"] in TERMINAL_STATES:
                break
    return out


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_sse_streams_epochs_live_and_resumes(service_settings: Settings, start_worker,
                                             start_api) -> None:
    """A real API process, a real worker, Redis and PostgreSQL: epochs arrive while the run
    trains, and a reconnect with Last-Event-ID gets exactly the epochs after it."""
    import httpx

    s = service_settings
    start_worker(s, "w1")
    url = start_api(s)
    with httpx.Client(base_url=url, timeout=60) as client:
        run_id = client.post("/api/runs", json=tiny(epochs=6, batch_size=8).model_dump(
            mode="json")).json()["id"]
        with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
            first = read_sse(stream.iter_lines(), until_epoch=2)
        with client.stream("GET", f"/api/runs/{run_id}/events",
                           headers={"Last-Event-ID": "2"}) as stream:
            rest = read_sse(stream.iter_lines())
    assert [d["epoch"] for e, d, _ in first if e == "epoch"] == [1, 2]
    assert [d["epoch"] for e, d, _ in rest if e == "epoch"] == [3, 4, 5, 6]
    # Live: epoch 1 reached the client while the run still had epochs to train.
    got_epoch1 = next(t for e, d, t in first if e == "epoch")
    assert got_epoch1 < run_row(s, run_id).finished_at.timestamp()
    assert rest[-1][0] == "state" and rest[-1][1]["state"] == "succeeded"


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_prefork_worker_trains_runs_side_by_side(service_settings: Settings,
                                                 start_worker) -> None:
    s = service_settings
    w = start_worker(s, "pf", concurrency=2)  # ``bamsprod worker --concurrency 2``: prefork
    run_ids = [submit(s, tiny(epochs=2, seed=seed)) for seed in range(2)]
    for run_id in run_ids:
        run = wait_state(s, run_id, TERMINAL_STATES, timeout=120)
        assert run.state == "succeeded", (run.error, w.output()[-3000:])
        assert run.worker_host == w.name and epochs_of(s, run_id) == [1, 2]
    # Several runs per GPU rely on this: the pool's parent never loads torch, so it can never
    # have initialised CUDA when it forks a child; each child makes its own CUDA context.
    maps = Path(f"/proc/{w.proc.pid}/maps").read_text()
    assert "libtorch" not in maps
    children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read_text().split()
    assert any("libtorch" in Path(f"/proc/{c}/maps").read_text() for c in children)


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_cancel_during_data_loading_skips_building_the_model(service_settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Cancelled while its data set loads: the worker ends the run before the model is built."""
    import bamsprod.core.train as core_train

    s = service_settings
    run_id = submit(s, tiny(epochs=3), enqueue=False)
    real_load, built = core_train.load_dataset, []

    def load_then_cancel(*args, **kwargs):  # type: ignore[no-untyped-def]
        data = real_load(*args, **kwargs)
        with session_scope(s.database_url) as session:  # the user cancels meanwhile
            store.request_cancel(session, run_id, stale_before=s.stale_before())
        return data

    monkeypatch.setattr(core_train, "load_dataset", load_then_cancel)
    monkeypatch.setattr(core_train, "build_model", lambda *a, **k: built.append(a))
    assert execute_run(run_id, hostname="me@host", settings=s) == "cancelled"
    run = run_row(s, run_id)
    assert run.state == "cancelled" and run.epochs_done == 0 and built == []


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_worker_fails_a_stored_run_too_large_for_its_memory_limit(service_settings: Settings
                                                                  ) -> None:
    """A run stored past the API's check (queued before the limit was lowered) fails on the
    worker with the reason, before any allocation."""
    s = service_settings.model_copy(update={"max_param_bytes": 2**20})
    run_id = submit(s, tiny(epochs=1, model_args={"width": 512}), enqueue=False)
    assert execute_run(run_id, hostname="me@host", settings=s) == "failed"
    run = run_row(s, run_id)
    assert run.state == "failed" and run.attempts == 1 and epochs_of(s, run_id) == []
    assert "parameter memory" in run.error and "width <= " in run.error


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_a_worker_whose_run_was_taken_stops_training_it(service_settings: Settings) -> None:
    """Re-claimed by another worker (this one looked dead): this one stops within a beat or two
    and leaves the run, its epochs and its checkpoint to the new holder."""
    from datetime import UTC, datetime, timedelta

    s = service_settings.model_copy(update={"stale_running_seconds": 2.0})  # beats every 0.2 s
    run_id = submit(s, tiny(epochs=500, batch_size=32), enqueue=False)
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(
        execute_run(run_id, hostname="slow@host", settings=s)))
    worker.start()
    try:
        wait_for(lambda: epochs_of(s, run_id), 60, f"run {run_id}'s first epoch")
        with session_scope(s.database_url) as session:
            future = datetime.now(UTC) + timedelta(hours=1)  # take it, stale or not
            assert store.reclaim_run(session, run_id, "new@host", "cpu", future)
        t0 = time.monotonic()
        worker.join(timeout=10)
        assert not worker.is_alive() and outcome == ["lost"]
        assert time.monotonic() - t0 < 3
    finally:
        with session_scope(s.database_url) as session:
            store.request_cancel(session, run_id)
        worker.join(timeout=10)
    run = run_row(s, run_id)
    assert run.worker_host == "new@host" and run.state == "running" and run.attempts == 2
    assert (s.checkpoint_dir / str(run_id) / "checkpoint.pt").is_file()
