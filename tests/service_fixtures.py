"""Fixtures for service tests: real Redis, real PostgreSQL, real Celery worker processes.

Load with ``pytest_plugins = ["tests.service_fixtures"]`` in ``tests/conftest.py``.

- ``redis_url``: a Redis database number of its own (claimed with a key in db 0, so parallel
  test sessions never share one), flushed before and after.
- ``pg_url``: a fresh, migrated PostgreSQL database for the test, dropped afterwards.
- ``service_settings``: ``Settings`` for a fresh home (SQLite or PostgreSQL, Redis broker) with
  ``app.queue`` configured to it, so ``enqueue_run`` in the test process reaches the workers.
- ``start_worker(settings, name)``: a ``bamsprod worker`` (``celery -A bamsprod.worker.app worker``)
  subprocess with that configuration in its environment, returned once it has announced
  itself; stopped at teardown. ``node=`` gives the full node name (e.g. a killed worker's, to
  start it again).
- ``start_api(settings, env=None)``: ``bamsprod serve`` on a free port with that configuration.
- ``private_redis``: a ``redis-server`` of the test's own, to hang (SIGSTOP) and resume.

Outside CI a missing Redis or PostgreSQL skips the test with the reason; with ``CI=true`` it
fails instead, so CI never goes green by skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bamsprod.app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("BAMSPROD_TEST_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN_URL = os.environ.get(
    "BAMSPROD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
WORKER_READY_SECONDS = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, exc: BaseException) -> None:
    """Skip (or in CI fail) the test because ``what`` is unreachable."""
    message = f"{what} unreachable: {exc}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: service tests must not skip)")
    pytest.skip(message)


# ------------------------------------------------------------------------------------ Redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    try:
        admin = redis.Redis.from_url(f"{REDIS_URL}/0", socket_connect_timeout=2)
        admin.ping()
    except Exception as exc:
        service_missing(f"Redis at {REDIS_URL}", exc)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for db in range(1, 16):
        if admin.set(f"bamsprod-test:db:{db}", token, nx=True, ex=3600):
            break
    else:
        pytest.fail("no free Redis database number (1-15) for this test")
    client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    client.flushdb()
    try:
        yield f"{REDIS_URL}/{db}"
    finally:
        client.flushdb()
        client.close()
        if admin.get(f"bamsprod-test:db:{db}") == token.encode():
            admin.delete(f"bamsprod-test:db:{db}")
        admin.close()


class PrivateRedis:
    """A ``redis-server`` of this test's own (faults such as SIGSTOP must not touch the shared
    one): ``url``, and ``stop()``/``cont()`` to hang and resume it."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    import shutil
    import socket

    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        service_missing("redis-server (for a private Redis)", FileNotFoundError("redis-server"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the private redis-server did not start")
            time.sleep(0.05)
    try:
        yield PrivateRedis(proc, url)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_url() -> Iterator[str]:
    import sqlalchemy as sa

    from bamsprod.app.store.engine import dispose_engine, init_db

    name = f"bamsprod_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_missing(f"PostgreSQL at {PG_ADMIN_URL}", exc)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        init_db(url)
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------------- settings, workers


def make_settings(home: Path, database_url: str = "", broker_url: str = "", **extra: object
                  ) -> Settings:
    """Settings for ``home`` that ignore the caller's ``BAMSPROD_*`` environment."""
    return Settings(home=home, database_url=database_url, broker_url=broker_url,
                    queue=f"bamsprod-test-{uuid.uuid4().hex[:8]}", **extra)


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that gives a subprocess exactly the settings ``s``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(
        BAMSPROD_HOME=str(s.home),
        BAMSPROD_DATABASE_URL=s.database_url,
        BAMSPROD_BROKER_URL=s.broker_url,
        BAMSPROD_QUEUE=s.queue,
        BAMSPROD_CHECKPOINT_DIR=str(s.checkpoint_dir),
        BAMSPROD_RECONCILE_SECONDS=str(s.reconcile_seconds),
        BAMSPROD_STALE_RUNNING_SECONDS=str(s.stale_running_seconds),
        OMP_NUM_THREADS="1",  # two cores, several processes: no oversubscription
        PYTHONPATH=str(ROOT),
    )
    if s.data_dir is not None:
        env["BAMSPROD_DATA_DIR"] = str(s.data_dir)
    if s.worker_concurrency is not None:
        env["BAMSPROD_WORKER_CONCURRENCY"] = str(s.worker_concurrency)
    for name, token in (("BAMSPROD_API_TOKEN", s.api_token), ("BAMSPROD_READ_TOKEN", s.read_token)):
        if token:
            env[name] = token
    return env


@pytest.fixture(params=["sqlite", "postgres"])
def service_settings(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
                     ) -> Iterator[Settings]:
    """A migrated database (SQLite file or PostgreSQL) and a Redis broker, in ``app.queue``."""
    from bamsprod.app import queue
    from bamsprod.app.store.engine import dispose_engine, init_db

    if request.param == "postgres":
        db_url = request.getfixturevalue("pg_url")
    else:
        db_url = f"sqlite:///{tmp_path / 'home' / 'bamsprod.db'}"
        init_db(db_url)
    s = make_settings(tmp_path / "home", db_url, redis_url)
    s.ensure_dirs()
    queue.configure(s)
    try:
        yield s
    finally:
        queue.configure()
        if request.param == "sqlite":
            dispose_engine(db_url)


class WorkerProcess:
    """A Celery worker subprocess and its log file."""

    def __init__(self, proc: subprocess.Popen, name: str, log: Path) -> None:
        self.proc, self.name, self.log = proc, name, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(settings, name="w1", node=None)``: a worker on ``settings``, ready when
    returned.

    ``concurrency=None`` leaves ``--concurrency`` out (``settings.worker_concurrency`` or 1);
    ``node`` restarts a killed node under its own name; ``env`` adds environment variables."""
    from bamsprod.app.queue import workers_seen

    started: list[WorkerProcess] = []

    def start(s: Settings, name: str = "w1", concurrency: int | None = 1,
              node: str | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        node = node or f"{name}@{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"worker-{name}-{len(started)}.log"
        # ``bamsprod worker`` execs ``celery -A bamsprod.worker.app worker`` with the queue from
        # settings.
        argv = [sys.executable, "-m", "bamsprod", "worker", "--name", node]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env={**settings_env(s), **(env or {})},
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        w = WorkerProcess(proc, node, log)
        started.append(w)
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while node not in workers_seen():
            if proc.poll() is not None:
                pytest.fail(f"worker {node} exited with {proc.returncode}:\n{w.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker {node} not ready in {WORKER_READY_SECONDS}s:\n{w.output()}")
            time.sleep(0.2)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``start_api(settings)``: ``bamsprod serve`` on a free port; returns its URL once up."""
    import socket

    import httpx

    procs: list[subprocess.Popen] = []

    def start(s: Settings, env: dict[str, str] | None = None) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = tmp_path / f"api-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "serve",
                                     "--port", str(port)], cwd=ROOT,
                                    env={**settings_env(s), **(env or {})},
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"bamsprod serve exited with {proc.returncode}:\n"
                            f"{log.read_text(errors='replace')}")
            try:
                return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "bamsprod serve to answer /api/health")
        return url

    start.procs = procs  # type: ignore[attr-defined]  # the servers, newest last
    yield start
    for proc in procs:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its children; SIGKILL
    after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
