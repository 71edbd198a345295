"""The one Celery app object, configured from settings, and the queue client the API uses.

The API enqueues by task name (``send_task``) and never imports ``worker``; the worker imports
``celery_app`` from here and registers the task under the same name.

Two brokers, one code path:

- Embedded (``sqla+sqlite:///<home>/broker.db``): kombu's SQLAlchemy transport on a SQLite file,
  no server. It has no fanout, so remote control, gossip, mingle and task events are off, and
  workers announce themselves with heartbeat files under ``<home>/workers/``.
- Redis (``redis://…``): events on (Flower can watch), remote control on; workers announce
  themselves with short-lived Redis keys, and ``workers_seen`` falls back to a control ping.

Delivery: ``task_acks_late`` + ``task_reject_on_worker_lost`` + prefetch 1. A message may thus be
delivered twice (worker lost, Redis visibility timeout on a long run); the task's atomic
``queued → running`` claim makes the second delivery a no-op.

A broker that hangs (a stopped Redis accepts connections and never answers) never holds a
caller for long: ``enqueue_run`` gives up after ``BAMSPROD_ENQUEUE_TIMEOUT_SECONDS`` (the run
stays ``queued`` in SQL and the reconciler sends it once the broker answers again), Redis
sockets time out, and ``broker_ok`` is a PING with a timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import kombu.pools
from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy.engine import make_url

from bamsprod.app.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_NAME = "bamsprod.train_run"
EMBEDDED_TRANSPORT = "bamsprod.app.queue:EmbeddedTransport"
# How often a worker announces itself, and how long an announcement stays valid.
PRESENCE_SECONDS = 5.0
PRESENCE_TTL = 3 * PRESENCE_SECONDS
# A Redis command that gets no answer in this long fails (a hung server must not hang us).
REDIS_SOCKET_TIMEOUT = 5.0
# Sends in flight at once per process; beyond them a send is skipped (the reconciler's job).
MAX_PENDING_SENDS = 64

__all__ = [
    "TASK_NAME",
    "broker_ok",
    "celery_app",
    "configure",
    "enqueue_run",
    "queue_depth",
    "announce_worker",
    "workers_seen",
]


class _EmbeddedChannel(kombu_sqla.Channel):
    def _open(self):  # type: ignore[no-untyped-def]
        url = make_url(self.connection.client.hostname)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def _get(self, queue):  # type: ignore[no-untyped-def]
        payload = super()._get(queue)  # raises Empty when there is none
        # kombu keeps every delivered message (visible=False) for good, and this transport never
        # re-delivers one: delete them, so the broker file stays as small as its backlog.
        self.session.query(self.message_cls).filter(
            self.message_cls.visible == False  # noqa: E712 - a SQL expression
        ).delete(synchronize_session=False)
        self.session.commit()
        return payload

    def _engine_from_config(self):  # type: ignore[no-untyped-def]
        # kombu hands every transport option to create_engine; polling_interval is not one.
        options = self.connection.client.transport_options
        saved = options.pop("polling_interval", None)
        try:
            return super()._engine_from_config()
        finally:
            if saved is not None:
                options["polling_interval"] = saved


class EmbeddedTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport on SQLite, polling every 0.1 s instead of every 1 s.

    One indexed SELECT per poll on a small file: cheap, and it keeps POST → start short.
    """

    Channel = _EmbeddedChannel
    polling_interval = 0.1


def _celery_config(s: Settings) -> dict[str, Any]:
    embedded = s.embedded
    conf: dict[str, Any] = {
        "broker_url": s.broker_url.removeprefix("sqla+") if embedded else s.broker_url,
        "broker_transport": EMBEDDED_TRANSPORT if embedded else None,
        "broker_transport_options": (
            {"connect_args": {"timeout": 30}} if embedded else {
                "visibility_timeout": 3600, "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT}
        ),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": s.queue,
        "task_routes": {TASK_NAME: {"queue": s.queue}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_send_task_events": not embedded,
        "task_send_sent_event": not embedded,
        "worker_enable_remote_control": not embedded,
        "enable_utc": True,
    }
    return conf


celery_app = Celery("bamsprod")
_current: Settings


def configure(settings: Settings | None = None) -> Celery:
    """(Re)configure ``celery_app`` from ``settings`` (default: ``get_settings()``).

    Called once at import; tests that point the process at another broker call it again.
    """
    s = settings or get_settings()
    if celery_app.configured:
        # Drop pooled connections to the previous broker (kombu caches pools per URL).
        kombu.pools.reset()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
    celery_app.conf.update(_celery_config(s))
    global _current
    _current = s
    return celery_app


configure()


def _settings() -> Settings:
    return _current


class _Sender:
    """This process's sends, on threads of their own: a caller waits for its send at most a
    timeout; a send still waiting on the broker then goes on in the background (bounded by the
    socket timeouts), and at most ``MAX_PENDING_SENDS`` wait at once. Made again after a fork
    (a prefork worker's child has none of its parent's threads)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bamsprod-enqueue")
        self.slots = threading.BoundedSemaphore(MAX_PENDING_SENDS)


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _get_sender() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = _Sender()
        return _sender


def _send(run_id: int) -> bool:
    try:
        celery_app.send_task(
            TASK_NAME,
            args=[int(run_id)],
            queue=_settings().queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3,
                          "interval_max": 1.0},
        )
    except Exception as exc:  # kombu raises transport-specific errors
        log.warning("could not enqueue run %s: %s", run_id, exc)
        return False
    return True


def enqueue_run(run_id: int, timeout: float | None = None) -> bool:
    """Send the train task for ``run_id``; False (logged) when the broker is unreachable or
    gives no answer within ``timeout`` seconds (default ``enqueue_timeout_seconds``).

    The run row is already committed as ``queued``, so a failed send loses nothing: the
    reconciler re-enqueues queued runs whose message went missing. (A send that answers after
    the timeout still delivers; a second message for a run is a no-op for the workers.)
    """
    wait = _settings().enqueue_timeout_seconds if timeout is None else timeout
    sender = _get_sender()
    if not sender.slots.acquire(blocking=False):
        log.warning("could not enqueue run %s: %d sends already wait for the broker", run_id,
                    MAX_PENDING_SENDS)
        return False
    future = sender.pool.submit(_send, run_id)
    future.add_done_callback(lambda _: sender.slots.release())
    try:
        return future.result(timeout=wait)
    except FutureTimeout:
        log.warning("could not enqueue run %s: no answer from the broker within %g s; it "
                    "stays queued for the reconciler", run_id, wait)
        return False


def broker_ok(timeout: float = 2.0) -> bool:
    """True when the broker answers within ``timeout`` seconds (Redis: a PING)."""
    s = _settings()
    try:
        if s.broker_url.startswith(("redis://", "rediss://")):
            with _redis(s, timeout) as r:
                return bool(r.ping())
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            if s.embedded:
                # Connecting to SQLite is lazy: run one query on the queue table.
                conn.default_channel._size(s.queue)
        return True
    except Exception as exc:
        log.debug("broker unreachable: %s", exc)
        return False


def queue_depth() -> int | None:
    """Messages waiting in the run queue (not those a worker holds), or None on error."""
    try:
        with celery_app.connection_for_write() as conn:
            channel = conn.default_channel
            ok = channel.queue_declare(_settings().queue, durable=True, auto_delete=False)
            return int(ok.message_count)
    except Exception as exc:
        log.debug("queue_depth failed: %s", exc)
        return None


# -- worker presence -------------------------------------------------------------------------

def _presence_dir(s: Settings) -> Path:
    return s.home / "workers"


def _presence_key(s: Settings, hostname: str = "*") -> str:
    return f"bamsprod:{s.queue}:worker:{hostname}"


def _redis(s: Settings, timeout: float = 1.0):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(s.broker_url, socket_timeout=timeout,
                                socket_connect_timeout=timeout)


def announce_worker(hostname: str, *, gone: bool = False) -> None:
    """Record (or with ``gone``, withdraw) that worker ``hostname`` is alive; called by workers."""
    s = _settings()
    info = json.dumps({"hostname": hostname, "pid": os.getpid(), "host": socket.gethostname(),
                       "at": time.time()})
    if s.embedded:
        path = _presence_dir(s) / hostname
        if gone:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(info)
    elif s.broker_url.startswith(("redis://", "rediss://")):
        with _redis(s) as r:
            if gone:
                r.delete(_presence_key(s, hostname))
            else:
                r.set(_presence_key(s, hostname), info, ex=int(PRESENCE_TTL))


def workers_seen(timeout: float = 0.5) -> list[str]:
    """Names of the workers alive now; an empty list when none answer or on any error.

    Reads the heartbeats workers write every few seconds (a worker busy training still writes
    them); with a Redis broker and no heartbeat, falls back to a control ping.
    """
    s = _settings()
    try:
        if s.embedded:
            now = time.time()
            d = _presence_dir(s)
            if not d.is_dir():
                return []
            return sorted(p.name for p in d.iterdir()
                          if p.is_file() and now - p.stat().st_mtime < PRESENCE_TTL)
        names: set[str] = set()
        if s.broker_url.startswith(("redis://", "rediss://")):
            prefix = _presence_key(s, "")
            with _redis(s) as r:
                names = {k.decode().removeprefix(prefix) for k in r.scan_iter(prefix + "*")}
        if not names:
            for reply in celery_app.control.ping(timeout=timeout) or []:
                names.update(reply)
        return sorted(names)
    except Exception as exc:
        log.debug("workers_seen failed: %s", exc)
        return []
