"""A locked or full database is a 503 with Retry-After and a JSON error, within seconds.

- another process holds ``BEGIN EXCLUSIVE`` on the SQLite file (a real ``bamsprod serve``):
  a submit answers 503 after the busy timeout (5 s), not a plain-text 500 after 30 s; reads
  go on; once the lock goes, the submit works;
- the database is full (SQLite's own ``max_page_count``: the real ``SQLITE_FULL`` a full disk
  gives): 503s, never a 500, and every run that was answered 201 is stored.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa
from service_fixtures import make_settings

from bamsprod.app.store.engine import dispose_engine, get_engine, init_db

TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "epochs": 1}
HEADERS = {"X-Requested-With": "t"}


def _assert_503(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"] == "5"
    assert what in r.json()["detail"]


@pytest.mark.slow
def test_a_locked_sqlite_file_is_a_quick_503(tmp_path, start_api) -> None:
    s = make_settings(tmp_path / "home")
    s.ensure_dirs()
    init_db(s.database_url)
    url = start_api(s)
    assert httpx.post(f"{url}/api/runs", json=TINY, headers=HEADERS).status_code == 201
    db = s.database_url.removeprefix("sqlite:///")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({db!r}, isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(40)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        r = httpx.post(f"{url}/api/runs", json={**TINY, "seed": 1}, headers=HEADERS, timeout=60)
        took = time.monotonic() - t0
        _assert_503(r, "locked by another process")
        assert took < 10, took
        assert db not in r.text  # no server path in the answer
        listed = httpx.get(f"{url}/api/runs", timeout=60)
        assert listed.status_code in (200, 503), listed.text
    finally:
        holder.kill()
        holder.wait()
    r = httpx.post(f"{url}/api/runs", json={**TINY, "seed": 1}, headers=HEADERS, timeout=30)
    assert r.status_code == 201, r.text
    assert httpx.get(f"{url}/api/runs").json()["total"] == 2
    print(f"\nlocked database: 503 after {took:.1f}s")


def test_a_full_database_is_a_503_and_loses_nothing(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from bamsprod.app.web.main import create_app

    s = make_settings(tmp_path / "home", broker_url="memory://")
    s.ensure_dirs()
    init_db(s.database_url)
    dispose_engine(s.database_url)
    engine = get_engine(s.database_url)

    def full_at_current_size(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages + 2}")
        cur.close()

    sa.event.listen(engine, "connect", full_at_current_size)
    created, codes = [], []
    try:
        with TestClient(create_app(s, enqueue=lambda i: None, broker_check=lambda: True,
                                   workers_seen=lambda: ["w"]), headers=HEADERS) as client:
            for i in range(300):
                r = client.post("/api/runs", json={**TINY, "seed": i,
                                                   "name": "x" * 200, "tags": ["t" * 64] * 20})
                codes.append(r.status_code)
                if r.status_code == 201:
                    created.append(r.json()["id"])
                else:
                    _assert_503(r, "disk is full")
                    break
            assert 503 in codes and 500 not in codes, codes[-5:]
            assert client.get("/api/health").status_code == 200
    finally:
        sa.event.remove(engine, "connect", full_at_current_size)
        dispose_engine(s.database_url)
    with get_engine(s.database_url).connect() as conn:
        stored = conn.execute(sa.text("SELECT id FROM run ORDER BY id")).scalars().all()
    assert stored == created
    dispose_engine(s.database_url)


def test_a_locked_postgresql_table_is_a_quick_503(pg_url: str, tmp_path) -> None:
    """PostgreSQL has no busy timeout: a table locked by another session held a submit until
    the lock went. With lock_timeout (the same 5 s), it is a 503."""
    from fastapi.testclient import TestClient

    from bamsprod.app.web.main import create_app

    s = make_settings(tmp_path / "home", pg_url, "memory://")
    holder = sa.create_engine(pg_url)
    with holder.connect() as conn, TestClient(
            create_app(s, enqueue=lambda i: None, broker_check=lambda: True,
                       workers_seen=lambda: ["w"]), headers=HEADERS) as client:
        conn.execute(sa.text("LOCK TABLE run IN ACCESS EXCLUSIVE MODE"))
        t0 = time.monotonic()
        r = client.post("/api/runs", json=TINY)
        took = time.monotonic() - t0
        conn.rollback()
        _assert_503(r, "locked by another process")
        assert took < 10, took
        assert client.post("/api/runs", json=TINY).status_code == 201
    holder.dispose()
