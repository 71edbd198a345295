"""Shared fixtures: real databases (SQLite file and PostgreSQL), settings and an API client.

- ``db_url`` is parametrised over ``sqlite`` and ``postgresql``: a fresh database created for
  this test session (PostgreSQL: a uniquely named database on 127.0.0.1:5432, dropped at the
  end), migrated once, and emptied before each test. Only databases this file created are
  ever emptied; the settings' own database is never touched.
- With ``CI=true`` a test that needs PostgreSQL (or another service) FAILS when it is
  unreachable; elsewhere it is skipped with the reason.
- ``empty_db_url`` makes an unmigrated database (migration tests).

Service fixtures (Redis, Celery workers, their own per-test ``pg_url``) live in
``tests/service_fixtures.py``, owned by the queue side and loaded below as a plugin when the file
exists. ``tests/`` has no ``__init__.py``: pytest puts it on ``sys.path``, so the plugin is the
top-level module ``service_fixtures`` (the same module the service tests import from). Keep
fixture names distinct between the two files: a conftest fixture would shadow the plugin's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
pytest_plugins = [name for name in ("service_fixtures",) if (_HERE / f"{name}.py").exists()]

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
PG_ADMIN_DSN = os.environ.get(
    "BAMSPROD_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_URL_BASE = os.environ.get("BAMSPROD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
TABLES = ("epoch_metric", "eval_point", "run", "sweep")


def service_unavailable(what: str, reason: object) -> None:
    """Fail under CI, skip elsewhere: a missing service must never pass silently in CI."""
    message = f"{what} unreachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services are required)")
    pytest.skip(message)


def _pg_admin():
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # psycopg.OperationalError and friends
        service_unavailable("PostgreSQL", exc)


def _create_pg_database() -> tuple[str, str]:
    name = f"bamsprod_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{PG_URL_BASE}/{name}"


def _drop_pg_database(name: str, url: str) -> None:
    from bamsprod.app.store.engine import dispose_engine

    dispose_engine(url)
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test session."""
    from bamsprod.app.store.engine import init_db

    name, url = _create_pg_database()
    try:
        init_db(url)
        yield url
    finally:
        _drop_pg_database(name, url)


@pytest.fixture(scope="session")
def sqlite_session_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated SQLite file database for this test session."""
    from bamsprod.app.store.engine import dispose_engine, init_db

    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'bamsprod.db'}"
    init_db(url)
    yield url
    dispose_engine(url)


def _empty_tables(url: str) -> None:
    import sqlalchemy as sa

    from bamsprod.app.store.engine import get_engine, is_sqlite

    with get_engine(url).begin() as conn:
        if is_sqlite(url):
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))
        else:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty test database; the test runs once per back end."""
    name = "pg_session_url" if request.param == "postgresql" else "sqlite_session_url"
    url = request.getfixturevalue(name)
    _empty_tables(url)
    return url


@pytest.fixture
def session(db_url: str):
    from bamsprod.app.store.engine import session_scope

    with session_scope(db_url) as s:
        yield s


@pytest.fixture
def empty_db_url(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``make("sqlite" | "postgresql")`` -> URL of a new database with no tables."""
    created: list[tuple[str, str]] = []
    sqlite_urls: list[str] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / f'empty-{len(sqlite_urls)}.db'}"
            sqlite_urls.append(url)
            return url
        name, url = _create_pg_database()
        created.append((name, url))
        return url

    yield make
    from bamsprod.app.store.engine import dispose_engine

    for url in sqlite_urls:
        dispose_engine(url)
    for name, url in created:
        _drop_pg_database(name, url)


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path):
    """Settings pointing at the test database and a temporary home."""
    from bamsprod.app.settings import Settings

    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        broker_url="memory://",
        sse_poll_seconds=0.05,
        sse_heartbeat_seconds=1.0,
    )


@pytest.fixture
def enqueued() -> list[int]:
    """Run ids the app under test handed to its queue (see ``client``)."""
    return []


@pytest.fixture
def api_app(api_settings, enqueued: list[int]):
    """The real app on the test database. Queueing is injected (it records run ids): the
    real Celery queue is exercised by the service tests."""
    from bamsprod.app.web.main import create_app

    return create_app(
        api_settings,
        enqueue=enqueued.append,
        broker_check=lambda: True,
        workers_seen=lambda: ["test-worker"],
    )


@pytest.fixture
def client(api_app) -> Iterator:
    from fastapi.testclient import TestClient

    # As the dashboard and the CLI do: changes carry X-Requested-With (app.api.csrf.CSRFGuard).
    with TestClient(api_app, headers={"X-Requested-With": "test"}) as c:
        yield c
