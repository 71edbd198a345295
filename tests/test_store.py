"""app.store against real SQLite and PostgreSQL databases (``db_url`` runs each test on both)."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bamsprod.app import store
from bamsprod.app.store.engine import get_engine, new_session, session_scope
from bamsprod.app.store.tables import EpochMetric, EvalPoint, Run
from bamsprod.core.config import RunConfig


def cfg(**kw) -> RunConfig:
    return RunConfig(**{"epochs": 5, **kw})


def metrics(epoch: int, acc: float = 0.5, **kw) -> dict:
    base = {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_acc": acc,
        "test_loss": 1.1 / epoch,
        "test_acc": acc,
        "quant_error": 0.1 * epoch,
        "quant_error_layers": {"fc1": 0.1, "fc2": 0.2},
        "flip_rate": 0.01,
        "lr": 1e-3,
        "seconds": 0.5,
    }
    return {**base, **kw}


def running_run(session, **kw) -> Run:
    run = store.create_run(session, cfg(**kw))
    assert store.claim_run(session, run.id, "host", "cpu")
    return run


def test_create_run_stores_the_resolved_config(session) -> None:
    config = cfg(name="a", optimizer="bop", seed=3, tags=["t1"], hparams={})
    run = store.create_run(session, config)
    assert run.id is not None and run.state == "queued"
    assert run.config == config.model_dump(mode="json")
    assert run.config["schema_version"] == 2 and run.config["hparams"]["gamma"] == 1e-4
    same_but_seed = cfg(optimizer="bop", seed=9, hparams={})
    assert run.config_hash == config.config_hash() == same_but_seed.config_hash()
    assert (run.optimizer, run.model, run.dataset, run.seed, run.epochs) == (
        "bop",
        "mlp",
        "digits",
        3,
        5,
    )
    again = store.get_run(session, run.id)
    assert again is not None and again.tags == ["t1"]
    assert again.created_at.tzinfo is not None and again.queued_at.utcoffset() == timedelta(0)
    assert store.get_run(session, 10_000) is None
    with pytest.raises(store.RunNotFound, match="run 10000 not found"):
        store.require_run(session, 10_000)


def test_claim_is_atomic_across_connections(db_url: str) -> None:
    with session_scope(db_url) as s:
        run_id = store.create_run(s, cfg()).id
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        with session_scope(db_url) as s:
            barrier.wait()
            results.append(bool(store.claim_run(s, run_id, f"host{i}", "cpu")))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    with session_scope(db_url) as s:
        run = store.get_run(s, run_id)
        assert run.state == "running" and run.attempts == 1 and run.started_at is not None
        assert run.heartbeat_at is not None
        assert not store.claim_run(s, run_id, "late", "cpu")


def test_record_epoch_writes_row_and_summary_idempotently(session) -> None:
    run = running_run(session)
    store.record_epoch(session, run.id, metrics(1, acc=0.6))
    store.record_epoch(session, run.id, metrics(2, acc=0.8))
    store.record_epoch(session, run.id, metrics(3, acc=0.7))
    store.record_epoch(session, run.id, metrics(3, acc=0.75))  # a repeated epoch overwrites
    rows = store.get_metrics(session, run.id)
    assert [m.epoch for m in rows] == [1, 2, 3]
    assert rows[2].test_acc == 0.75 and rows[0].quant_error_layers == {"fc1": 0.1, "fc2": 0.2}
    r = store.get_run(session, run.id)
    assert (r.epochs_done, r.last_epoch, r.last_test_acc) == (3, 3, 0.75)
    assert (r.best_test_acc, r.best_epoch) == (0.8, 2)
    assert r.final_quant_error == pytest.approx(0.3)
    assert [m.epoch for m in store.get_metrics(session, run.id, after=1)] == [2, 3]
    assert [m.epoch for m in store.get_metrics(session, run.id, after=1, limit=1)] == [2]


def test_record_epoch_heartbeat_nonfinite_and_missing_run(session) -> None:
    run = running_run(session)
    before = store.get_run(session, run.id).heartbeat_at
    store.record_epoch(
        session,
        run.id,
        metrics(1, train_loss=math.nan, test_loss=math.inf, quant_error_layers={"fc1": math.nan}),
    )
    m = store.get_metrics(session, run.id)[0]
    assert m.train_loss is None and m.test_loss is None and m.quant_error_layers == {"fc1": None}
    assert store.get_run(session, run.id).heartbeat_at >= before
    with pytest.raises(store.RunNotFound):
        store.record_epoch(session, 99_999, metrics(1))
    # The session is still usable after the failed write.
    assert store.get_run(session, run.id).epochs_done == 1


def points(epoch: int, accs: list[float], batches: int = 10) -> list[dict]:
    """``len(accs)`` evaluation points of ``epoch``, evenly spaced, as the trainer gives them."""
    k = len(accs)
    return [
        {"step": (epoch - 1) * batches + j * batches // k, "epoch": epoch - 1 + j / k,
         "train_seconds": epoch - 1 + j / k * 0.5, "val_loss": 1.0 - a, "val_acc": a,
         "eval_seconds": 0.01}
        for j, a in zip(range(1, k + 1), accs, strict=True)
    ]


def test_record_epoch_writes_its_evaluation_points_idempotently(session) -> None:
    run = running_run(session)
    store.record_epoch(session, run.id, metrics(1, evals=points(1, [0.3, 0.5])))
    store.record_epoch(session, run.id, metrics(2, evals=points(2, [0.6, math.nan])))
    # The worker died before epoch 2's checkpoint: the repeated epoch rewrites its points.
    store.record_epoch(session, run.id, metrics(2, evals=points(2, [0.6, 0.7])))
    rows = store.eval_rows(session, run.id)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert [r["epoch"] for r in rows] == [0.5, 1.0, 1.5, 2.0]
    assert [r["val_acc"] for r in rows] == [0.3, 0.5, 0.6, 0.7]
    assert rows[1]["train_seconds"] == 0.5 and rows[1]["eval_seconds"] == 0.01
    assert [r["step"] for r in store.eval_rows(session, run.id, after=10, limit=1)] == [15]
    store.record_epoch(session, run.id, metrics(3, evals=points(3, [math.inf])))
    other = running_run(session)
    cols = store.eval_columns(session, [run.id, other.id])
    assert cols[run.id]["val_acc"] == [0.3, 0.5, 0.6, 0.7, None]  # non-finite as NULL
    assert cols[run.id]["step"] == [5, 10, 15, 20, 30]
    assert cols[other.id] == {k: [] for k in store.EVAL_FIELDS}
    # An epoch written without points (an older worker) leaves the points alone.
    store.record_epoch(session, run.id, metrics(4))
    assert len(store.eval_rows(session, run.id)) == 5


def test_environment_is_set_while_running_and_cleared_by_a_retry(session) -> None:
    run = running_run(session)
    assert store.get_run(session, run.id).environment is None
    env = {"torch": "2.13.0", "python": "3.11.2", "bamsprod": {"version": "0.1", "commit": None},
           "device_name": "AMD EPYC", "threads": 1}
    assert store.set_environment(session, run.id, env)
    assert store.get_run(session, run.id).environment == env
    store.record_epoch(session, run.id, metrics(1, evals=points(1, [0.5])))
    store.finish_run(session, run.id, "failed", error="boom")
    assert not store.set_environment(session, run.id, env)  # only while running
    store.retry_run(session, run.id)
    assert store.get_run(session, run.id).environment is None
    assert store.eval_rows(session, run.id) == []


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    writes=st.lists(
        st.tuples(st.integers(1, 6), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=12
    )
)
def test_summary_matches_rows_for_any_write_order(db_url: str, writes) -> None:
    """Epochs written in any order, repeated or not: one row each, summary = rows."""
    with session_scope(db_url) as s:
        run = running_run(s)
        for epoch, acc in writes:
            store.record_epoch(s, run.id, metrics(epoch, acc=acc))
        last_acc = {}
        for epoch, acc in writes:
            last_acc[epoch] = acc
        rows = store.get_metrics(s, run.id)
        assert [m.epoch for m in rows] == sorted(last_acc)
        assert [m.test_acc for m in rows] == [last_acc[e] for e in sorted(last_acc)]
        r = store.get_run(s, run.id)
        best = max(last_acc.values())
        assert r.epochs_done == len(last_acc) and r.last_epoch == max(last_acc)
        assert r.last_test_acc == last_acc[max(last_acc)]
        assert r.best_test_acc == best
        assert r.best_epoch == min(e for e, a in last_acc.items() if a == best)


def test_finish_only_from_running(session) -> None:
    run = store.create_run(session, cfg())
    assert not store.finish_run(session, run.id, "succeeded")  # still queued
    store.claim_run(session, run.id, "h", "cpu")
    assert store.finish_run(session, run.id, "diverged", error="loss is nan", diverged_epoch=3)
    r = store.get_run(session, run.id)
    assert (r.state, r.error, r.diverged_epoch) == ("diverged", "loss is nan", 3)
    assert r.finished_at is not None
    assert not store.finish_run(session, run.id, "succeeded")
    with pytest.raises(ValueError, match="terminal"):
        store.finish_run(session, run.id, "running")


def test_queued_ahead_counts_queued_runs_before_this_one(session) -> None:
    first, second, third = (store.create_run(session, cfg()) for _ in range(3))

    def ahead(run: Run) -> int | None:
        return store.queued_ahead(session, store.run_row(session, run.id))

    assert [ahead(r) for r in (first, second, third)] == [0, 1, 2]
    assert store.claim_run(session, first.id, "h", "cpu")  # running: no longer in line
    store.request_cancel(session, second.id)
    assert ahead(first) is None and ahead(second) is None and ahead(third) == 0
    store.retry_run(session, second.id)  # queued again: behind the third
    assert ahead(second) == 1 and ahead(third) == 0


def test_cancel_queued_running_and_finished(session) -> None:
    queued = store.create_run(session, cfg())
    r = store.request_cancel(session, queued.id)
    assert r.state == "cancelled" and r.finished_at is not None
    assert not store.claim_run(session, queued.id, "h", "cpu")  # a late task does nothing

    running = running_run(session)
    assert not store.cancel_requested(session, running.id)
    r = store.request_cancel(session, running.id)
    assert r.state == "running" and r.cancel_requested
    assert store.cancel_requested(session, running.id)
    store.finish_run(session, running.id, "cancelled")
    assert store.request_cancel(session, running.id).state == "cancelled"  # idempotent

    done = running_run(session)
    store.finish_run(session, done.id, "succeeded")
    with pytest.raises(store.RunStateError, match="already finished"):
        store.request_cancel(session, done.id)
    with pytest.raises(store.RunNotFound):
        store.request_cancel(session, 12345)
    assert store.cancel_requested(session, 12345)  # a deleted run stops its worker


def test_retry_resets_a_finished_run(session) -> None:
    run = running_run(session)
    store.record_epoch(session, run.id, metrics(1))
    with pytest.raises(store.RunStateError, match="only finished runs"):
        store.retry_run(session, run.id)
    store.finish_run(session, run.id, "failed", error="boom")
    r = store.retry_run(session, run.id)
    assert (r.state, r.error, r.epochs_done, r.best_test_acc, r.retries) == (
        "queued",
        None,
        0,
        None,
        1,
    )
    assert r.started_at is None and r.finished_at is None and r.attempts == 1
    assert store.get_metrics(session, run.id) == []
    assert store.claim_run(session, run.id, "h", "cpu")
    assert store.get_run(session, run.id).attempts == 2


def test_delete_cascades_and_refuses_running(session, db_url: str) -> None:
    run = running_run(session)
    store.record_epoch(session, run.id, metrics(1, evals=points(1, [0.4, 0.5])))
    with pytest.raises(store.RunStateError, match="cancel it"):
        store.delete_run(session, run.id)
    store.finish_run(session, run.id, "succeeded")
    store.delete_run(session, run.id)
    assert store.get_run(session, run.id) is None
    with get_engine(db_url).connect() as conn:  # gone by the foreign key's ON DELETE CASCADE
        n = conn.execute(sa.select(sa.func.count()).select_from(EpochMetric)).scalar_one()
        n_points = conn.execute(sa.select(sa.func.count()).select_from(EvalPoint)).scalar_one()
    assert n == 0 and n_points == 0
    with pytest.raises(store.RunNotFound):
        store.delete_run(session, run.id)


def test_requeue_candidates_reclaim_and_release(session) -> None:
    now = datetime.now(UTC)
    old_queued = store.create_run(session, cfg())
    fresh_queued = store.create_run(session, cfg())
    stale = running_run(session)
    live = running_run(session)
    session.exec(
        sa.update(Run)
        .where(Run.id.in_([old_queued.id, stale.id]))
        .values(queued_at=now - timedelta(hours=1), heartbeat_at=now - timedelta(hours=1))
    )
    session.commit()
    cutoff = now - timedelta(minutes=5)
    assert store.requeue_candidates(session, cutoff) == [old_queued.id, stale.id]
    assert fresh_queued.id in store.requeue_candidates(
        session, cutoff, queued_before=now + timedelta(seconds=1)
    )
    assert not store.reclaim_run(session, live.id, "w2", "cuda", cutoff)
    assert store.reclaim_run(session, stale.id, "w2", "cuda", cutoff)
    r = store.get_run(session, stale.id)
    assert (r.worker_host, r.device, r.attempts, r.state) == ("w2", "cuda", 2, "running")
    assert not store.reclaim_run(session, stale.id, "w3", "cpu", cutoff)  # heartbeat is fresh
    store.touch_run(session, live.id)
    assert store.release_run(session, live.id)
    assert store.get_run(session, live.id).state == "queued"
    assert not store.release_run(session, live.id)


def test_list_runs_filters_sorts_and_pages(session) -> None:
    a = running_run(session, name="alpha 100%", optimizer="adam", tags=["x", "paper"])
    b = running_run(session, name="beta", optimizer="bop", tags=["y"])
    c = store.create_run(session, cfg(name="gamma_1", optimizer="adam", dataset="synthetic"))
    store.record_epoch(session, a.id, metrics(1, acc=0.9))
    store.record_epoch(session, b.id, metrics(1, acc=0.7))

    def ids(**kw) -> list[int]:
        return [r.id for r in store.list_runs(session, **kw)[0]]

    assert ids() == [c.id, b.id, a.id]
    assert ids(state="queued") == [c.id]
    assert ids(state=["queued", "running"], order="asc") == [a.id, b.id, c.id]
    assert ids(optimizer="adam") == [c.id, a.id]
    assert ids(dataset="synthetic") == [c.id]
    assert ids(tag="paper") == [a.id] and ids(tag="pap") == []
    assert ids(name_contains="100%") == [a.id] and ids(name_contains="A_1") == [c.id]
    assert ids(name_contains="%") == [a.id]
    assert ids(sort="best_test_acc", order="desc") == [a.id, b.id, c.id]  # nulls last
    assert ids(sort="best_test_acc", order="asc") == [b.id, a.id, c.id]
    page, total = store.list_runs(session, limit=1, offset=1, order="asc")
    assert [r.id for r in page] == [b.id] and total == 3
    assert ids(config_hash=a.config_hash) == [a.id]
    with pytest.raises(ValueError, match="cannot sort"):
        store.list_runs(session, sort="config")


def test_sweep_and_many_run_reads(session) -> None:
    configs = [cfg(seed=s, optimizer=o) for o in ("adam", "bop") for s in (0, 1)]
    sweep, runs = store.create_sweep(
        session, "grid", {"grid": {"optimizer": ["adam", "bop"]}}, configs
    )
    assert sweep.n_runs == 4 and all(r.sweep_id == sweep.id for r in runs)
    assert [r.id for r in store.runs_of_sweep(session, sweep.id)] == [r.id for r in runs]
    assert store.list_runs(session, sweep_id=sweep.id)[1] == 4
    assert store.sweep_state_counts(session, sweep.id) == {"queued": 4}
    assert store.get_sweep(session, sweep.id).definition == {"grid": {"optimizer": ["adam", "bop"]}}
    with pytest.raises(store.SweepNotFound):
        store.get_sweep(session, 999)
    r0, r1 = runs[0].id, runs[1].id
    for rid in (r0, r1):
        store.claim_run(session, rid, "h", "cpu")
        for e in (1, 2, 3):
            store.record_epoch(session, rid, metrics(e))
    new = store.metrics_after_many(session, [r0, r1, runs[2].id], {r0: 1, r1: None})
    assert [m.epoch for m in new[r0]] == [2, 3] and [m.epoch for m in new[r1]] == [1, 2, 3]
    assert new[runs[2].id] == []
    polled = store.poll_runs(session, {r0: 2, runs[2].id: None, 4242: None})
    assert polled[r0][0].state == "running" and [m.epoch for m in polled[r0][1]] == [3]
    assert polled[runs[2].id][0].state == "queued" and polled[runs[2].id][1] == []
    assert polled[4242] == (None, [])
    assert [m.epoch for m in store.metrics_for_runs(session, [r1])[r1]] == [1, 2, 3]


def test_create_sweep_writes_its_stage1_trials_in_the_same_transaction(session) -> None:
    """A tuned sweep's ``tune_trial`` rows go in with its runs, or nothing goes in at all."""
    from sqlalchemy.exc import IntegrityError

    from bamsprod.app.store.tables import Sweep, TuneTrial

    configs = [cfg(seed=7, lr=lr) for lr in (0.001, 0.01)]
    trials = [store.Stage1Trial("adam", 0), store.Stage1Trial("adam", 1)]
    sweep, runs = store.create_sweep(session, "t", {"strategy": "tune"}, configs, trials)
    rows = session.exec(sa.select(TuneTrial.run_id, TuneTrial.sweep_id, TuneTrial.optimizer,
                                  TuneTrial.stage, TuneTrial.trial_number)).all()
    assert sorted(tuple(r) for r in rows) == [(runs[0].id, sweep.id, "adam", 1, 0),
                                              (runs[1].id, sweep.id, "adam", 1, 1)]
    assert store.run_ids_of_sweep(session, sweep.id, stage=1) == [r.id for r in runs]

    def counts() -> tuple[int, ...]:
        return tuple(session.exec(sa.select(sa.func.count()).select_from(t)).one()[0]
                     for t in (Sweep, Run, TuneTrial))

    before = counts()
    with pytest.raises(ValueError, match="1 stage-1 trials for 2 runs"):
        store.create_sweep(session, "t", {}, configs, trials[:1])
    # The last trial row is refused (NOT NULL) after the sweep and its runs were flushed.
    broken = [trials[0], store.Stage1Trial(None, 1)]  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        store.create_sweep(session, "t", {"strategy": "tune"}, configs, broken)
    assert counts() == before == (1, 2, 2)


def test_poll_runs_is_one_query(db_url: str) -> None:
    with session_scope(db_url) as s:
        ids = [running_run(s).id for _ in range(5)]
        for rid in ids:
            store.record_epoch(s, rid, metrics(1))
    statements: list[str] = []
    engine = get_engine(db_url)

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        s = new_session(db_url)
        out = store.poll_runs(s, {rid: 0 for rid in ids})
        s.close()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert all(len(eps) == 1 for _, eps in out.values())
    selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
