"""Finds runs whose task went missing and queues them again; announces the worker.

The database is the source of truth and the broker only carries wake-ups, so a message can be
lost (broker restart, a worker killed mid-run, the API failing to enqueue) without losing the
run. Every worker process runs :class:`Reconciler` in a thread started on Celery's
``worker_ready`` signal (no celery beat needed, and ``bamsprod up`` gets it with its worker):

- at start it takes back the runs still held under its own node name (a worker of that name
  that crashed, or ``bamsprod up`` restarted): they count as stale at once, once a few
  heartbeat intervals showed that nobody beats them any more;
- every few seconds (a tenth of ``stale_running_seconds``, at most 5 s) it re-enqueues
  ``running`` runs whose heartbeat is older than ``stale_running_seconds``, each at most once per
  ``reconcile_seconds`` (see :func:`requeue_stale`), and writes the worker's presence
  (``app.queue.announce_worker``), which is what ``GET /api/health`` lists as the workers seen,
  even while the worker is busy training;
- every ``reconcile_seconds`` (± 20 % jitter, so several workers spread out) it also re-enqueues
  runs left ``queued`` whose message the broker no longer holds (see :func:`reconcile_once`).

Several workers may re-enqueue the same run; the task's atomic claim makes the extra messages
no-ops.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from datetime import UTC, datetime, timedelta

from celery import signals

from bamsprod.app import store
from bamsprod.app.queue import PRESENCE_SECONDS, announce_worker, enqueue_run, queue_depth
from bamsprod.app.settings import Settings, get_settings
from bamsprod.worker import tuned
from bamsprod.worker.db import db_call
from bamsprod.worker.tasks import heartbeat_interval

log = logging.getLogger(__name__)
NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # as queued_before: leaves out every queued run


def reconcile_once(settings: Settings | None = None) -> list[int]:
    """Re-enqueue the runs whose task looks lost; returns their ids.

    ``running`` runs with a stale heartbeat are always re-enqueued (the task re-claims them and
    resumes from the checkpoint). Runs ``queued`` for longer than ``reconcile_seconds`` are
    re-enqueued only when the broker holds fewer waiting messages than there are such runs, so
    a long backlog is not flooded with duplicates every round.
    """
    s = settings or get_settings()
    now = datetime.now(UTC)
    stale_before = s.stale_before()
    queued_before = now - timedelta(seconds=s.reconcile_seconds)
    candidates = db_call(s, "requeue_candidates", store.requeue_candidates, stale_before,
                         queued_before=queued_before)
    stale = set(db_call(s, "requeue_candidates", store.requeue_candidates, stale_before,
                        queued_before=NEVER))
    waiting = [i for i in candidates if i not in stale]
    depth = queue_depth()
    lost = waiting if depth is None or depth < len(waiting) else []
    run_ids = sorted(stale) + lost
    for run_id in run_ids:
        enqueue_run(run_id)
    if run_ids:
        log.info("reconciler re-queued runs %s (broker held %s messages)", run_ids, depth)
    try:
        tuned.start_pending(s)  # tuned sweeps: a stage 2 no worker created
    except Exception as exc:
        log.warning("tuned sweeps: stage 2 check failed: %s", exc)
    return run_ids


def requeue_stale(settings: Settings, sent: dict[int, float]) -> list[int]:
    """Re-enqueue ``running`` runs with a stale heartbeat; returns their ids.

    ``sent`` (run id -> monotonic time of this worker's last send) keeps a run that waits for a
    free worker from being sent again before ``reconcile_seconds`` have passed.
    """
    s = settings
    now = time.monotonic()
    stale = db_call(s, "requeue_candidates", store.requeue_candidates, s.stale_before(),
                    queued_before=NEVER)
    for run_id in list(sent):
        if run_id not in stale:
            del sent[run_id]
    due = [i for i in stale if now - sent.get(i, -math.inf) >= s.reconcile_seconds]
    for run_id in due:
        if enqueue_run(run_id):
            sent[run_id] = now
    if due:
        log.info("reconciler re-queued runs %s (stale heartbeat)", due)
    return due


class Reconciler(threading.Thread):
    """The worker's background thread: take back its node's runs at start, then presence and
    stale runs every few seconds, lost messages every ``reconcile_seconds``."""

    def __init__(self, hostname: str, settings: Settings | None = None) -> None:
        super().__init__(name="bamsprod-reconciler", daemon=True)
        self.hostname = hostname
        self.settings = settings or get_settings()
        self.stopping = threading.Event()
        self.sent: dict[int, float] = {}

    def take_back_own_runs(self) -> list[int]:
        """Runs left ``running`` under this node name by a process that is gone.

        Gone, not merely named alike: the heartbeats are read, and read again after a few
        beats; a run whose heartbeat moved meanwhile has a live holder (another worker started
        under the same name), and is left to it."""
        s = self.settings
        beats = db_call(s, "heartbeats_of", store.heartbeats_of, self.hostname)
        if not beats:
            return []
        if self.stopping.wait(3 * heartbeat_interval(s) + 0.5):
            return []
        ids = db_call(s, "expire_runs_of", store.expire_runs_of, self.hostname, beats)
        alive = sorted(set(beats) - set(ids))
        if alive:
            log.warning("worker %s: runs %s held under this name are still beating: another "
                        "live worker has this name (give each worker its own --name)",
                        self.hostname, alive)
        if ids:
            log.info("worker %s takes back runs %s it held before a restart", self.hostname, ids)
        return ids

    def run(self) -> None:
        s = self.settings
        tick = min(PRESENCE_SECONDS, s.stale_running_seconds / 10)
        try:
            self.take_back_own_runs()
        except Exception as exc:
            log.warning("could not take back the runs of %s: %s", self.hostname, exc)
        next_reconcile = time.monotonic()  # once at start-up: picks up what a crash left
        while not self.stopping.is_set():
            try:
                announce_worker(self.hostname)
            except Exception as exc:
                log.warning("could not announce worker %s: %s", self.hostname, exc)
            try:
                if time.monotonic() >= next_reconcile:
                    self.sent.update(dict.fromkeys(reconcile_once(s), time.monotonic()))
                    next_reconcile = (time.monotonic()
                                      + s.reconcile_seconds * random.uniform(0.8, 1.2))
                else:
                    requeue_stale(s, self.sent)
            except Exception as exc:
                log.warning("reconcile failed: %s", exc)
            self.stopping.wait(tick)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        try:
            announce_worker(self.hostname, gone=True)
        except Exception as exc:
            log.debug("could not withdraw worker %s: %s", self.hostname, exc)


_reconciler: Reconciler | None = None


@signals.worker_ready.connect
def _start(sender: object = None, **_: object) -> None:
    global _reconciler
    hostname = getattr(sender, "hostname", None) or "worker"
    _reconciler = Reconciler(hostname)
    _reconciler.start()


@signals.worker_shutdown.connect
def _stop(**_: object) -> None:
    if _reconciler is not None:
        _reconciler.stop()
