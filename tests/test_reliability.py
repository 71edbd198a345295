"""Faults against the real services: nothing a user submitted is lost, no epoch twice.

Real Redis, SQLite/PostgreSQL and ``bamsprod worker`` subprocesses (``service_fixtures``):

- a worker SIGKILLed mid-epoch: another worker re-claims the run once its heartbeat is stale
  (15 s), or the killed node started again takes it back at once; it resumes from the last
  checkpoint and its next epoch lands within 30 s of the kill;
- a run whose worker is gone can be cancelled or deleted at once; a warm hand-over does not
  count as an attempt; crafted CIFAR files do not grow the worker's memory;
- the broker loses its queue (Redis ``FLUSHDB`` with runs queued and no worker): the reconciler
  re-sends them from the database;
- the database goes away mid-run (PostgreSQL: every connection terminated, again and again;
  SQLite: another process holds the write lock): the worker retries, and no reader ever sees an
  epoch row without its run summary, or the reverse;
- a diverging run, a corrupt or missing data set: the run ends ``diverged``/``failed`` with a
  clear message, and the same worker process goes on to train the next run.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from service_fixtures import PG_ADMIN_URL, wait_for
from sqlalchemy.engine import make_url

from bamsprod.app import queue, store
from bamsprod.app.settings import Settings
from bamsprod.app.store.engine import get_engine, session_scope
from bamsprod.core.config import TERMINAL_STATES, RunConfig
from bamsprod.worker.db import with_db_retry
from bamsprod.worker.reconciler import NEVER

pytestmark = [pytest.mark.service, pytest.mark.slow]

TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 256}
# 0.3 to 1.5 s per epoch on one core (busy or not): time to act in the middle of one.
SLOW = {"model_args": {"width": 512}, "batch_size": 16}


def tiny(**kw: object) -> RunConfig:
    return RunConfig(**{**TINY, **kw})


def submit(s: Settings, config: RunConfig, *, enqueue: bool = True) -> int:
    with session_scope(s.database_url) as session:
        run_id = int(store.create_run(session, config).id)  # type: ignore[arg-type]
    if enqueue:
        assert queue.enqueue_run(run_id)
    return run_id


def run_row(s: Settings, run_id: int):  # type: ignore[no-untyped-def]
    with session_scope(s.database_url) as session:
        return store.get_run(session, run_id)


def epoch_times(s: Settings, run_id: int) -> dict[int, datetime]:
    """Epoch -> when its row was (last) written."""
    with session_scope(s.database_url) as session:
        return {m.epoch: m.created_at for m in store.get_metrics(session, run_id)}


def epoch_rows(s: Settings, run_id: int) -> list[int]:
    """Every stored epoch number of the run, duplicates included (there must be none)."""
    with get_engine(s.database_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT epoch FROM epoch_metric WHERE run_id = :r "
                                    "ORDER BY epoch"), {"r": run_id})
        return [int(e) for (e,) in rows]


def wait_done(s: Settings, run_ids: list[int], timeout: float = 120.0) -> None:
    wait_for(lambda: all(run_row(s, i).state in TERMINAL_STATES for i in run_ids), timeout,
             f"runs {run_ids} to finish")


# ------------------------------------------------------------------------- killed worker


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
@pytest.mark.parametrize("back", ["another-worker", "same-node-restarted"])
def test_worker_killed_mid_epoch_run_resumes_within_30s(service_settings: Settings,
                                                        start_worker, back: str) -> None:
    """SIGKILL mid-epoch, default liveness settings (stale after 15 s). Another worker already
    up takes the run once its heartbeat is stale; the killed node started again takes it back
    at once. Either way the next epoch lands within 30 s of the kill, and no epoch twice."""
    s = service_settings
    victim = start_worker(s, "w1")
    survivor = start_worker(s, "w2") if back == "another-worker" else None
    epochs = 8
    run_id = submit(s, tiny(epochs=epochs, **SLOW))
    wait_for(lambda: len(epoch_times(s, run_id)) >= 2, 90, "two epochs", interval=0.05)
    with session_scope(s.database_url) as session:
        seconds = store.get_metrics(session, run_id)[1].seconds
    if survivor is not None and run_row(s, run_id).worker_host == survivor.name:
        victim, survivor = survivor, victim
    time.sleep(seconds / 2)  # halfway through epoch 3: epoch 2's row and checkpoint are written
    killed_at = datetime.now(UTC)
    t0 = time.monotonic()
    victim.stop(signal.SIGKILL)
    kept = epoch_times(s, run_id)
    assert (s.checkpoint_dir / str(run_id) / "checkpoint.pt").is_file()
    assert run_row(s, run_id).state == "running"  # nobody told the database: it looks alive
    if survivor is None:
        survivor = start_worker(s, node=victim.name)  # the same node name, started again
    wait_for(lambda: max(epoch_times(s, run_id)) > max(kept), 60, "the next epoch",
             interval=0.05)
    recovered = time.monotonic() - t0
    print(f"\nRedis + PostgreSQL, {back}: SIGKILL -> next epoch {recovered:.1f}s")

    wait_done(s, [run_id], timeout=120)
    run = run_row(s, run_id)
    assert run.state == "succeeded", (run.error, survivor.output()[-3000:])
    assert recovered < 30
    assert run.worker_host == survivor.name and run.attempts == 2  # re-claimed once
    assert epoch_rows(s, run_id) == list(range(1, epochs + 1))  # every epoch, exactly once
    rows = epoch_times(s, run_id)
    # Resumed, not restarted: the epochs finished before the kill were not trained again
    # (the newest of them may be, if the kill fell between its row and its checkpoint).
    last_kept = max(kept)
    assert all(rows[e] == kept[e] for e in kept if e < last_kept)
    redone = sorted(e for e, t in rows.items() if t > killed_at)
    assert redone[0] in (last_kept, last_kept + 1) and redone[-1] == epochs
    assert "reconciler re-queued runs" in survivor.output()
    if back == "same-node-restarted":
        assert "takes back runs" in survivor.output()
    assert run.epochs_done == epochs and run.last_epoch == epochs


# ------------------------------------------------------------- a run whose worker is gone


def _age_heartbeat(db_url: str, run_id: int, seconds: float) -> None:
    from datetime import timedelta

    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE run SET heartbeat_at = :t WHERE id = :r"),
                     {"t": datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds),
                      "r": run_id})


def test_cancel_and_delete_of_a_stale_run_work_at_once(client, db_url: str,
                                                       api_settings: Settings) -> None:
    ids = [client.post("/api/runs", json=TINY).json()["id"] for _ in range(3)]
    with session_scope(db_url) as session:
        for run_id in ids:
            assert store.claim_run(session, run_id, "gone@host", "cpu")
    stale = api_settings.stale_running_seconds
    # A live worker's run: cancel only flags it, and delete is refused.
    assert client.post(f"/api/runs/{ids[0]}/cancel").json()["state"] == "running"
    r = client.delete(f"/api/runs/{ids[0]}")
    assert r.status_code == 409 and "cancel it" in r.json()["detail"]
    # Its worker died: no heartbeat for longer than stale_running_seconds.
    for run_id in ids:
        _age_heartbeat(db_url, run_id, stale + 1)
    run = client.post(f"/api/runs/{ids[1]}/cancel").json()
    assert run["state"] == "cancelled" and run["finished_at"] is not None
    assert client.delete(f"/api/runs/{ids[2]}").status_code == 204
    assert client.get(f"/api/runs/{ids[2]}").status_code == 404
    assert client.delete(f"/api/runs/{ids[0]}").status_code == 204  # flagged, then stale


def test_a_starting_worker_takes_back_its_own_node_runs(db_url: str) -> None:
    from bamsprod.worker.reconciler import Reconciler

    with session_scope(db_url) as session:
        mine, other = (int(store.create_run(session, tiny()).id) for _ in range(2))
        assert store.claim_run(session, mine, "w1@host", "cpu")
        assert store.claim_run(session, other, "w2@host", "cpu")
    from service_fixtures import make_settings

    s = make_settings(Path("/nonexistent"), db_url, "memory://")
    assert Reconciler("w1@host", s).take_back_own_runs() == [mine]
    with session_scope(db_url) as session:
        # Stale at once (the reconciler re-queues it on its first round); w2's run is untouched.
        assert store.requeue_candidates(session, s.stale_before(), queued_before=NEVER) == [mine]
        assert store.get_run(session, other).heartbeat_at is not None


def test_a_warm_hand_back_does_not_count_as_an_attempt(session) -> None:
    run_id = int(store.create_run(session, tiny()).id)
    assert store.claim_run(session, run_id, "w1@host", "cpu")
    assert store.release_run(session, run_id)  # warm shutdown: handed back to the queue
    assert store.claim_run(session, run_id, "w2@host", "cpu")
    assert store.get_run(session, run_id).attempts == 1
    # A lost worker's run, taken over: that one did count.
    assert store.reclaim_run(session, run_id, "w3@host", "cpu", datetime.now(UTC))
    assert store.get_run(session, run_id).attempts == 2
    # The heartbeat of a worker that no longer holds the run tells it so.
    assert not store.touch_run(session, run_id, "w2@host")
    assert store.touch_run(session, run_id, "w3@host")


# ---------------------------------------------------------------------- broker loses queue


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_broker_flushed_with_runs_queued_all_complete(service_settings: Settings, redis_url: str,
                                                     start_worker) -> None:
    import redis
    from fastapi.testclient import TestClient

    from bamsprod.app.web.main import create_app

    s = service_settings.model_copy(update={"reconcile_seconds": 1.0})
    with TestClient(create_app(s)) as client:  # the real app and its real enqueue
        run_ids = [client.post("/api/runs", json=tiny(epochs=2, seed=i).model_dump(
            mode="json")).json()["id"] for i in range(3)]
    assert queue.queue_depth() == 3
    with redis.Redis.from_url(redis_url) as r:
        r.flushdb()  # the broker forgets every message
    assert queue.queue_depth() == 0
    assert all(run_row(s, i).state == "queued" for i in run_ids)  # the database remembers
    time.sleep(1.0)  # queued for longer than reconcile_seconds: a lost message is possible

    w = start_worker(s, "w1")
    wait_done(s, run_ids, timeout=90)
    for run_id in run_ids:
        run = run_row(s, run_id)
        assert run.state == "succeeded", (run.error, w.output()[-3000:])
        assert run.attempts == 1 and epoch_rows(s, run_id) == [1, 2]
    assert "reconciler re-queued runs" in w.output()


# ------------------------------------------------------------------------ database blips


def _summary_matches_rows(s: Settings, run_id: int) -> tuple[bool, tuple] | None:
    """One statement (one snapshot): the run's summary and its epoch rows agree?"""
    stmt = sa.text(
        "SELECT r.epochs_done, r.last_epoch, "
        "(SELECT count(*) FROM epoch_metric m WHERE m.run_id = r.id), "
        "(SELECT max(m.epoch) FROM epoch_metric m WHERE m.run_id = r.id) "
        "FROM run r WHERE r.id = :r"
    )
    try:
        with get_engine(s.database_url).connect() as conn:
            done, last, n, top = conn.execute(stmt, {"r": run_id}).one()
    except sa.exc.DBAPIError:  # our own connection was terminated too: sample again
        return None
    return (done == n and last == top), (done, last, n, top)


WORKER_APP = "bamsprod-test-worker"  # the worker's PostgreSQL application_name


class _Blips(threading.Thread):
    """On each ``trigger()``, make the database unavailable to the worker for a moment.

    PostgreSQL: terminate every connection to the database (``count``: the worker's ones).
    SQLite: another connection holds the write lock for ``hold`` seconds (``count``: times).
    """

    def __init__(self, s: Settings, hold: float) -> None:
        super().__init__(daemon=True)
        self.s, self.hold = s, hold
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.count = 0

    def trigger(self) -> None:
        self.wake.set()

    def blip(self) -> None:
        url = make_url(self.s.database_url)
        if url.get_backend_name() == "postgresql":
            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    killed = conn.execute(sa.text(
                        "SELECT application_name, pg_terminate_backend(pid) "
                        "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                        {"db": url.database}).all()
                self.count += sum(app == WORKER_APP and ok for app, ok in killed)
            finally:
                admin.dispose()
        else:
            holder = sqlite3.connect(str(url.database), isolation_level=None, timeout=30)
            try:
                holder.execute("BEGIN IMMEDIATE")
                self.count += 1
                self.stop.wait(self.hold)
                holder.execute("COMMIT")
            finally:
                holder.close()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.wake.wait(0.1):
                self.wake.clear()
                self.blip()


@pytest.mark.parametrize("service_settings", ["postgres", "sqlite"], indirect=True)
def test_database_blips_mid_run_lose_and_split_nothing(service_settings: Settings,
                                                       start_worker) -> None:
    s = service_settings
    pg = s.database_url.startswith("postgresql")
    if pg:  # name the worker's connections, to count the ones terminated under it
        worker_s = s.model_copy(update={
            "database_url": f"{s.database_url}?application_name={WORKER_APP}"})
    w = start_worker(worker_s if pg else s, "w1")
    epochs = 6
    run_id = submit(s, tiny(epochs=epochs, **SLOW))
    blips = _Blips(s, hold=1.0)
    blips.start()
    samples, split, seen = 0, [], 0
    try:
        # After each epoch lands (so: while the next one trains), disturb the database.
        # (The test's own connections are cut too: it reads through the worker's retry.)
        while with_db_retry(lambda: run_row(s, run_id).state) not in TERMINAL_STATES:
            sample = _summary_matches_rows(s, run_id)
            if sample is not None:
                samples += 1
                if not sample[0]:
                    split.append(sample[1])
                if sample[1][2] > seen:
                    seen = sample[1][2]
                    blips.trigger()
            time.sleep(0.01)
    finally:
        blips.stop.set()
        blips.join(10)
    run = run_row(s, run_id)
    assert run.state == "succeeded", (run.error, w.output()[-3000:])
    # PostgreSQL: the worker's connections were cut again and again (its pool pings and
    # reconnects; a cut mid-transaction is retried); SQLite: its writes waited for the lock.
    assert blips.count >= 3, "the database was never disturbed"
    assert samples > 100 and split == [], f"a reader saw half a write: {split[:5]}"
    assert epoch_rows(s, run_id) == list(range(1, epochs + 1))
    assert run.epochs_done == epochs and run.last_epoch == epochs and run.attempts == 1


@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_epoch_write_is_all_or_nothing_when_the_connection_drops(service_settings: Settings
                                                                 ) -> None:
    """The connection dies after the epoch row is inserted and before the summary is updated:
    neither is kept; the retry writes both."""
    from bamsprod.worker.db import db_call

    s = service_settings
    run_id = submit(s, tiny(epochs=3), enqueue=False)
    with session_scope(s.database_url) as session:
        assert store.claim_run(session, run_id, "w", "cpu")
    engine = get_engine(s.database_url)
    kills: list[int] = []
    armed = [1]

    def kill_after_insert(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if armed and statement.lstrip().upper().startswith("INSERT INTO EPOCH_METRIC"):
            armed.pop()
            pid = cursor.connection.info.backend_pid
            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            admin.dispose()
            kills.append(pid)

    metrics = {"epoch": 1, "train_loss": 0.5, "test_acc": 0.8, "quant_error": 0.1,
               "quant_error_layers": {"fc1": 0.1}}
    sa.event.listen(engine, "after_cursor_execute", kill_after_insert)
    try:
        with pytest.raises(sa.exc.OperationalError), session_scope(s.database_url) as session:
            store.record_epoch(session, run_id, metrics)
        assert kills, "the connection was not terminated"
        assert epoch_rows(s, run_id) == []  # the inserted row went with the transaction
        assert run_row(s, run_id).epochs_done == 0

        armed.append(1)  # once more, through the worker's retrying call
        db_call(s, "record_epoch", store.record_epoch, run_id, metrics)
    finally:
        sa.event.remove(engine, "after_cursor_execute", kill_after_insert)
    assert len(kills) == 2
    run = run_row(s, run_id)
    assert epoch_rows(s, run_id) == [1]
    assert run.epochs_done == 1 and run.last_epoch == 1 and run.best_test_acc == 0.8


# ---------------------------------------------------------------- bad runs, live worker


def _corrupt_cifar(d: Path) -> Path:
    from bamsprod.core.data.cifar import TEST_BATCH, TRAIN_BATCHES

    d.mkdir()
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        (d / name).write_bytes(b"\x80\x02}q\x00(this is not a CIFAR-10 batch")
    return d


def _corrupt_mnist(d: Path) -> Path:
    from bamsprod.core.data.sources import IDX_SOURCES

    d.mkdir()
    for f in IDX_SOURCES["mnist"].files:
        (d / f.stem).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 64)
    return d


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_diverging_and_bad_data_runs_end_cleanly_and_the_worker_goes_on(
    service_settings: Settings, start_worker, tmp_path: Path
) -> None:
    s = service_settings
    w = start_worker(s, "w1")
    diverging = submit(s, tiny(epochs=8, batch_size=128, optimizer="sgd", lr=10.0,
                               hparams={"momentum": 0.0, "weight_decay": 1.0}))
    cifar = _corrupt_cifar(tmp_path / "cifar-corrupt")
    corrupt_cifar = submit(s, tiny(epochs=1, dataset="cifar10", data_dir=str(cifar)))
    mnist = _corrupt_mnist(tmp_path / "mnist-corrupt")
    corrupt_mnist = submit(s, tiny(epochs=1, dataset="mnist", data_dir=str(mnist)))
    missing = submit(s, tiny(epochs=1, dataset="cifar10", data_dir=str(tmp_path / "nowhere")))
    good = submit(s, tiny(epochs=2))
    wait_done(s, [diverging, corrupt_cifar, corrupt_mnist, missing, good], timeout=120)

    run = run_row(s, diverging)
    assert run.state == "diverged", (run.state, run.error)
    k = run.diverged_epoch
    assert k is not None and k >= 2 and f"epoch {k}" in run.error
    assert epoch_rows(s, diverging) == list(range(1, k))  # the finite epochs stay
    assert run.last_epoch == k - 1 and run.epochs_done == k - 1

    run = run_row(s, corrupt_cifar)
    assert run.state == "failed" and run.attempts == 1
    assert f"cannot read CIFAR-10 batch {cifar / 'data_batch_1'}" in run.error
    assert "cifar-10-batches-py" in run.error  # how to get it

    run = run_row(s, corrupt_mnist)
    assert run.state == "failed"
    assert str(mnist / "train-images-idx3-ubyte") in run.error
    assert "bamsprod data install mnist" in run.error

    run = run_row(s, missing)
    assert run.state == "failed" and "not found" in run.error
    assert str(tmp_path / "nowhere") in run.error

    run = run_row(s, good)
    assert run.state == "succeeded" and epoch_rows(s, good) == [1, 2]
    assert w.proc.poll() is None  # the same worker process trained all five
    hosts = {run_row(s, i).worker_host for i in (diverging, corrupt_cifar, missing, good)}
    assert hosts == {w.name}
    for run_id in (diverging, corrupt_cifar, corrupt_mnist, missing, good):
        assert not (s.checkpoint_dir / str(run_id)).exists()


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of process ``pid``, in kB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines)
            if k in ("VmRSS", "VmHWM")}


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_crafted_data_keeps_worker_memory_bounded(service_settings: Settings, start_worker,
                                                  tmp_path: Path) -> None:
    """Six tiny CIFAR files declaring zero-stride arrays, loaded twice, then another such
    directory: each run fails naming the file, and the worker's peak RSS does not grow."""
    from test_data import crafted_cifar_dir

    s = service_settings
    w = start_worker(s, "w1")
    # 5,000 images per file (not the 250,000): were the check gone, this test would
    # still only cost a few hundred MB.
    first, second = (crafted_cifar_dir(tmp_path / name, n=5000) for name in ("a", "b"))
    warm = submit(s, tiny(epochs=1))  # the worker's first run pays its one-off costs
    wait_done(s, [warm])
    before = _memory_kb(w.proc.pid)
    for d in (first, first, second):
        run_id = submit(s, tiny(epochs=1, dataset="cifar10", data_dir=str(d)))
        wait_done(s, [run_id])
        run = run_row(s, run_id)
        assert run.state == "failed" and f"cannot read CIFAR-10 batch {d}" in run.error
        assert "declares an array of 15360000 bytes" in run.error
    after = _memory_kb(w.proc.pid)
    print(f"\nworker memory kB before {before}, after {after}")
    assert after["VmHWM"] - before["VmHWM"] < 50_000, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 50_000, (before, after)


# ------------------------------------------------------------------------ attempt cap


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_a_run_whose_worker_is_killed_every_time_fails_after_the_attempt_cap(
        service_settings: Settings, start_worker) -> None:
    """As an out-of-memory kill would: the worker is SIGKILLed each time it trains the run and
    started again under its name. With BAMSPROD_MAX_ATTEMPTS=2, the run fails after its second
    lost worker, saying why, instead of coming back forever; the next run then trains."""
    s = service_settings
    env = {"BAMSPROD_MAX_ATTEMPTS": "2"}
    w = start_worker(s, "w1", env=env)
    run_id = submit(s, tiny(epochs=50, **SLOW))
    for attempt in (1, 2):
        wait_for(lambda a=attempt: (r := run_row(s, run_id)).state == "running"
                 and r.attempts == a and r.heartbeat_at is not None, 90, f"attempt {attempt}")
        w.stop(signal.SIGKILL)
        w = start_worker(s, node=w.name, env=env)
    wait_done(s, [run_id], timeout=90)
    run = run_row(s, run_id)
    assert run.state == "failed" and run.attempts == 2, (run.state, run.attempts)
    assert "gave up after 2 attempts" in run.error and "BAMSPROD_MAX_ATTEMPTS" in run.error
    nxt = submit(s, tiny(epochs=1))
    wait_done(s, [nxt])
    assert run_row(s, nxt).state == "succeeded"
