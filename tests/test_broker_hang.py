"""A hung broker (Redis SIGSTOPped: it accepts connections and never answers) against a real
``bamsprod serve`` on PostgreSQL with a small connection pool:

- every submit answers within seconds (the send to the broker is bounded and happens after the
  database session is closed), and none is a 5xx; reads stay fast; the pool never runs out;
- a retry with the same ``Idempotency-Key`` returns the same run;
- a flood of unauthenticated health calls neither stalls a live event stream nor reports the
  database down;
- once Redis resumes, a worker trains every run exactly once: nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_fixtures import make_settings, wait_for

from bamsprod.app import queue, store
from bamsprod.app.store.engine import init_db, session_scope
from bamsprod.core.config import TERMINAL_STATES

pytestmark = [pytest.mark.service, pytest.mark.slow]

TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 256,
        "epochs": 1}
CLIENTS = 24


def _first_event_after(url: str, run_id: int, seen: threading.Event, got: list[float],
                       stop: threading.Event) -> None:
    """Read the run's event stream; record when the first ``epoch`` event arrives."""
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=60) as r:
        seen.set()
        for line in r.iter_lines():
            if line.startswith("event: epoch"):
                got.append(time.monotonic())
                return
            if stop.is_set():
                return


def test_submits_during_a_broker_hang_lose_and_double_nothing(
        tmp_path, pg_url, private_redis, start_api, start_worker) -> None:
    s = make_settings(tmp_path / "home", pg_url, private_redis.url, reconcile_seconds=1.0)
    s.ensure_dirs()
    init_db(pg_url)
    queue.configure(s)  # the test's own calls (workers_seen) reach the private Redis
    try:
        _hang_and_recover(s, pg_url, private_redis, start_api, start_worker)
    finally:
        queue.configure()


def _hang_and_recover(s, pg_url, private_redis, start_api, start_worker) -> None:
    # A pool far smaller than the clients: before, each submit held a connection while it
    # waited on the broker, and the pool ran out.
    url = start_api(s, env={"BAMSPROD_DB_POOL_SIZE": "4", "BAMSPROD_DB_MAX_OVERFLOW": "0",
                            "BAMSPROD_ENQUEUE_TIMEOUT_SECONDS": "2"})
    live = httpx.post(f"{url}/api/runs", json={**TINY, "name": "live"},
                      headers={"X-Requested-With": "t"}).json()["id"]

    private_redis.stop()
    try:
        stop, seen, got = threading.Event(), threading.Event(), []
        stream = threading.Thread(target=_first_event_after, args=(url, live, seen, got, stop),
                                  daemon=True)
        stream.start()
        assert seen.wait(10)

        def submit(i: int) -> tuple[int, float, int | None]:
            t0 = time.monotonic()
            try:
                r = httpx.post(f"{url}/api/runs", json={**TINY, "seed": i}, timeout=20,
                               headers={"X-Requested-With": "t", "Idempotency-Key": f"k-{i}"})
            except httpx.TimeoutException:
                return -1, time.monotonic() - t0, None
            return r.status_code, time.monotonic() - t0, r.json().get("id")

        def health(_: int) -> tuple[int, float, dict]:
            t0 = time.monotonic()
            r = httpx.get(f"{url}/api/health", timeout=20)
            return r.status_code, time.monotonic() - t0, r.json()

        with ThreadPoolExecutor(CLIENTS + 20) as pool:
            submits = [pool.submit(submit, i) for i in range(CLIENTS)]
            healths = [pool.submit(health, i) for i in range(20)]
            time.sleep(0.5)
            # Meanwhile an epoch lands for the streamed run: the stream must carry it at once.
            written = time.monotonic()
            with session_scope(pg_url) as session:
                assert store.claim_run(session, live, "test@host", "cpu")
                store.record_epoch(session, live, {"epoch": 1, "train_loss": 1.0,
                                                   "test_acc": 0.5, "quant_error": 0.1})
            t0 = time.monotonic()
            runs_page = httpx.get(f"{url}/api/runs?limit=5", timeout=20)
            list_s = time.monotonic() - t0
            results = [f.result() for f in submits]
            health_results = [f.result() for f in healths]
        stream.join(15)
        stop.set()

        codes = [c for c, _, _ in results]
        assert codes == [201] * CLIENTS, codes
        slowest = max(t for _, t, _ in results)
        assert slowest < 8, slowest
        assert runs_page.status_code == 200 and list_s < 2, (runs_page.status_code, list_s)
        assert all(c == 200 for c, _, _ in health_results), health_results
        assert max(t for _, t, _ in health_results) < 5
        assert got and got[0] - written < 3, "the event stream stalled during the hang"
        # A client that timed out retries with its key: the same run, not a second one.
        again = httpx.post(f"{url}/api/runs", json={**TINY, "seed": 3}, timeout=20,
                           headers={"X-Requested-With": "t", "Idempotency-Key": "k-3"})
        assert again.status_code == 200 and again.json()["id"] == results[3][2]
        assert again.headers["idempotent-replayed"] == "true"
        other = httpx.post(f"{url}/api/runs", json={**TINY, "seed": 99}, timeout=20,
                           headers={"X-Requested-With": "t", "Idempotency-Key": "k-3"})
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    finally:
        private_redis.cont()
    with session_scope(pg_url) as session:
        store.finish_run(session, live, "succeeded")

    w = start_worker(s, "w1")
    ids = sorted(i for _, _, i in results)
    assert len(set(ids)) == CLIENTS

    def states() -> list[str]:
        r = httpx.get(f"{url}/api/runs?limit=100", timeout=10).json()
        return [x["state"] for x in r["items"] if x["id"] in ids]

    wait_for(lambda: all(st in TERMINAL_STATES for st in states()), 180,
             "every run submitted during the hang to finish")
    page = httpx.get(f"{url}/api/runs?limit=100", timeout=10).json()
    assert page["total"] == CLIENTS + 1  # nothing doubled
    for run in page["items"]:
        if run["id"] in ids:
            assert run["state"] == "succeeded" and run["attempts"] == 1, (
                json.dumps(run)[:500], w.output()[-2000:])
