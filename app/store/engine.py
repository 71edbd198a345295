"""Database engines, sessions and start-up migration.

One engine per database URL (cached), so the API, the SSE poller and the worker share a pool.
SQLite connections get WAL mode, a busy timeout (``BAMSPROD_DB_BUSY_TIMEOUT_SECONDS``) and
foreign keys; PostgreSQL uses psycopg 3 with the same bound as its ``lock_timeout``, and a
request waits ``BAMSPROD_DB_POOL_TIMEOUT_SECONDS`` at most for a free connection. What fails
then is a 503 (``app.web.db_errors``).
The schema is created and changed only by the Alembic migrations in ``app/migrations``;
``init_db(url)`` applies them (``upgrade head``) and is safe to call from several processes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _pragmas(busy_ms: int):  # type: ignore[no-untyped-def]
    def set_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    return set_pragmas


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _build_engine(url: str) -> Engine:
    from bamsprod.app.settings import get_settings

    s = get_settings()
    if is_sqlite(url):
        u = make_url(url)
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A write waits this long for another process's lock, then fails (the API answers
        # 503; the worker retries): never the 30 s of a plain-text 500.
        busy = s.db_busy_timeout_seconds
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy},
        )
        sa.event.listen(engine, "connect", _pragmas(int(busy * 1000)))
        return engine
    # A statement waits this long for another session's lock (a table held by a migration or
    # an operator), as SQLite's busy timeout: then it fails (503 in the API, retried by workers).
    lock_ms = int(s.db_busy_timeout_seconds * 1000)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=s.db_pool_size,
                            max_overflow=s.db_max_overflow, pool_timeout=s.db_pool_timeout_seconds,
                            connect_args={"options": f"-c lock_timeout={lock_ms}"})


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (created on first use)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _build_engine(url)
        return engine


def dispose_engine(url: str) -> None:
    """Close and forget the engine for ``url`` (tests; before dropping a database)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def new_session(url: str) -> Session:
    """A new session on ``url``'s engine; objects stay usable after commit."""
    return Session(get_engine(url), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """``with session_scope(url) as s: ...``: closes the session (rolling back what is left)."""
    session = new_session(url)
    try:
        yield session
    finally:
        session.close()


def alembic_config(url: str):
    """A programmatic Alembic config for ``url`` (no ini file needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


@contextlib.contextmanager
def _migration_lock(url: str, engine: Engine) -> Iterator[None]:
    """Serialise concurrent migrations (API and worker starting together)."""
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            yield None
            return
        import fcntl

        lock_path = Path(database).expanduser().with_suffix(".migrate.lock")
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield None
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    # PostgreSQL: a session-level advisory lock held on a separate connection.
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(7412001)"))
        conn.commit()
        try:
            yield None
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(7412001)"))
            conn.commit()


def current_revision(url: str) -> str | None:
    """The database's Alembic revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def init_db(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command

    engine = get_engine(url)
    if current_revision(url) == head_revision():
        return
    with _migration_lock(url, engine):
        if current_revision(url) != head_revision():
            command.upgrade(alembic_config(url), "head")


def downgrade_db(url: str, revision: str = "base") -> None:
    """Alembic ``downgrade`` (tests and operators)."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)
