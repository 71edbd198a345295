"""No run is ever trained by two workers at once (issue: a second worker started with the
default name "took back" a live run, and both trained it).

- every worker gets a unique default node name (``bamsprod-<random>@<host>``);
- a starting worker takes back the runs held under its name only once their heartbeat has
  stopped moving (a live namesake keeps them);
- each claim draws a lease: a worker that lost the run has its heartbeat, epochs and final
  state refused by the store, so it stops and never overwrites the holder's epochs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from service_fixtures import ROOT, make_settings, settings_env, wait_for

from bamsprod.app import queue, store
from bamsprod.app.store.engine import session_scope
from bamsprod.core.config import RunConfig

TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 256}
METRICS = {"train_loss": 1.0, "test_acc": 0.5, "quant_error": 0.1}


def test_a_worker_that_lost_the_run_has_its_writes_refused(session) -> None:
    run_id = int(store.create_run(session, RunConfig(**TINY)).id)
    old = store.claim_run(session, run_id, "w1@host", "cpu")
    assert old
    store.record_epoch(session, run_id, {"epoch": 1, **METRICS}, lease=old)
    # It looked dead; a worker of the same name took it over (a new lease).
    new = store.reclaim_run(session, run_id, "w1@host", "cpu", datetime.now(UTC))
    assert new and new != old
    with pytest.raises(store.RunLost):
        store.record_epoch(session, run_id, {"epoch": 2, **METRICS, "test_acc": 0.9}, lease=old)
    assert [m.epoch for m in store.get_metrics(session, run_id)] == [1]  # nothing written
    assert store.get_run(session, run_id).epochs_done == 1
    assert not store.touch_run(session, run_id, "w1@host", old)  # the same name: still refused
    assert not store.release_run(session, run_id, old)
    assert not store.finish_run(session, run_id, "succeeded", lease=old)
    assert store.get_run(session, run_id).state == "running"
    store.record_epoch(session, run_id, {"epoch": 2, **METRICS}, lease=new)
    assert store.touch_run(session, run_id, "w1@host", new)
    assert store.finish_run(session, run_id, "succeeded", lease=new)


def test_take_back_leaves_a_run_its_live_namesake_still_beats(db_url: str) -> None:
    from bamsprod.worker.reconciler import Reconciler

    s = make_settings(Path("/nonexistent"), db_url, "memory://", stale_running_seconds=2.0)
    with session_scope(db_url) as session:
        run_id = int(store.create_run(session, RunConfig(**TINY)).id)
        lease = store.claim_run(session, run_id, "w1@host", "cpu")
    stop = threading.Event()

    def beat() -> None:  # the live holder's heartbeat thread
        while not stop.wait(0.2):
            with session_scope(db_url) as session:
                assert store.touch_run(session, run_id, "w1@host", lease)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        assert Reconciler("w1@host", s).take_back_own_runs() == []
    finally:
        stop.set()
        beating.join()
    with session_scope(db_url) as session:
        assert store.get_run(session, run_id).heartbeat_at is not None
    # The holder is gone now: its heartbeat stays put, and the run is taken back.
    assert Reconciler("w1@host", s).take_back_own_runs() == [run_id]


def test_default_worker_names_are_unique(tmp_path: Path) -> None:
    from bamsprod.app.commands.service_cmds import unique_node_name, up_node_name

    names = {unique_node_name() for _ in range(100)}
    assert len(names) == 100 and all(n.startswith("bamsprod-") and n.endswith("@%h")
                                     for n in names)
    a = make_settings(tmp_path / "a")
    assert up_node_name(a) == up_node_name(make_settings(tmp_path / "a"))
    assert up_node_name(a) != up_node_name(make_settings(tmp_path / "b"))


@pytest.mark.service
@pytest.mark.slow
@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_two_workers_started_without_a_name_are_two(service_settings) -> None:
    s = service_settings
    procs = [subprocess.Popen([sys.executable, "-m", "bamsprod", "worker"], cwd=ROOT,
                              env=settings_env(s), stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
             for _ in range(2)]
    try:
        names = wait_for(lambda: len(queue.workers_seen()) == 2 and queue.workers_seen(), 90,
                         "two workers")
        assert all(n.startswith("bamsprod-") for n in names), names  # type: ignore[union-attr]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)


@pytest.mark.service
@pytest.mark.slow
@pytest.mark.parametrize("service_settings", ["postgres"], indirect=True)
def test_a_namesake_started_mid_run_never_trains_it(service_settings, start_worker) -> None:
    """The issue's case: a second worker under the first one's name while it trains. The run
    is trained once, by the first, every epoch written once; the newcomer says why it left
    the run alone."""
    from test_reliability import SLOW, epoch_rows, run_row, submit, tiny, wait_done

    s = service_settings
    first = start_worker(s, "dup", node="dup@host1")
    epochs = 40  # long enough (~30 s or more) to still train when the newcomer is up
    run_id = submit(s, tiny(epochs=epochs, **SLOW))
    wait_for(lambda: run_row(s, run_id).epochs_done >= 1, 90, "the first epoch")
    second = start_worker(s, node="dup@host1")
    # (Ready at once for the fixture: its name was seen already. Its take-back comes later.)
    wait_for(lambda: "still beating" in second.output(), 90, "the newcomer's take-back")
    time.sleep(3)  # its reconciler's next rounds: nothing to re-queue either
    wait_done(s, [run_id], timeout=180)
    run = run_row(s, run_id)
    assert run.state == "succeeded", (run.error, first.output()[-2000:])
    assert run.attempts == 1
    assert epoch_rows(s, run_id) == list(range(1, epochs + 1))
    assert "takes back runs" not in second.output()
    assert f"run {run_id} claimed" not in second.output()
