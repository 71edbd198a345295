"""The Celery task that trains one run: claim it, record where it trains (its environment),
train it with ``core``, write every epoch with its evaluation points.

``train_run(run_id)`` is registered as ``bamsprod.train_run`` on ``app.queue.celery_app``. It
loads the row itself (ids travel, never objects), so it is safe to deliver twice: only the
delivery that wins the atomic ``queued → running`` claim (or re-claims a running run whose
heartbeat went stale) trains; every other one returns at once.

Database calls go through ``worker.db.db_call``: a transient error (SQLite "database is
locked", a dropped PostgreSQL connection) is retried with exponential back-off and full jitter,
each try in a fresh session. A bad config, a data set error or a NaN loss is never retried: the
run ends ``failed`` (with the error) or ``diverged``.

When a solo-pool worker (``bamsprod worker``/``up``, concurrency 1) shuts down (Ctrl-C,
SIGTERM) its running run stops within a batch and is handed back to the queue
(``running → queued``, checkpoint kept), so the next worker resumes it from its last finished
epoch. A prefork worker (``--concurrency N > 1``) finishes its runs on a warm shutdown instead;
on a cold one the reconciler re-queues them once their heartbeat is stale.

A run that records a plugin (``Run.plugins``) is trained only by a worker that has it, from the
same distribution at the same version (``core.plugins.plugin_mismatch``); any other worker
ends it ``failed`` with an error that names the plugin, both versions and the worker, and says
what to install. Nothing stored is lost; a retry trains it once the workers have the plugin.

Liveness: a thread beats the run's heartbeat every tenth of ``stale_running_seconds`` (so a
long batch never starves it). When a beat finds the run no longer held by this worker
(cancelled or deleted while it looked dead, or re-claimed by another worker), the trainer
stops and the run is left to whoever holds it now.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

from celery import signals
from celery.concurrency.solo import TaskPool as SoloPool
from pydantic import ValidationError

from bamsprod.app import store
from bamsprod.app.data_roots import data_dir_refusal, public_error
from bamsprod.app.queue import TASK_NAME, celery_app, enqueue_run
from bamsprod.app.settings import Settings, get_settings
from bamsprod.app.store.engine import init_db
from bamsprod.app.store.tables import Run
from bamsprod.core.config import TERMINAL_STATES, RunConfig
from bamsprod.core.model_size import too_large, too_much_activation
from bamsprod.core.plugins import plugin_mismatch, registry
from bamsprod.worker import tuned
from bamsprod.worker.db import db_call, is_transient, with_db_retry

log = logging.getLogger(__name__)

# How often should_stop asks the database whether the run was cancelled.
CANCEL_POLL_SECONDS = 0.5

# Set when the worker process starts shutting down: the running run stops and is handed back.
shutting_down = threading.Event()


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: object) -> None:
    shutting_down.set()


def _preload_trainer() -> None:
    # torch takes seconds to import: pay that at start-up, not when the first run arrives.
    import torch

    import bamsprod.core.train  # noqa: F401

    registry()  # load the plugins now: a broken one is logged at start
    settings = get_settings()
    # core.optim._fused bounds its wait for another build by this (a dead build never wedges).
    os.environ["BAMSPROD_KERNEL_WAIT_SECONDS"] = str(settings.kernel_wait_seconds)
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    # Training yields the CPU to the API on a shared machine (idempotent: at least this nice).
    if os.getpriority(os.PRIO_PROCESS, 0) < settings.worker_nice:
        os.setpriority(os.PRIO_PROCESS, 0, settings.worker_nice)


@signals.worker_ready.connect
def _preload_solo(sender: object = None, **_: object) -> None:
    if isinstance(getattr(sender, "pool", None), SoloPool):  # the task runs in this process
        _preload_trainer()


signals.worker_process_init.connect(lambda **_: _preload_trainer(), weak=False)  # prefork child


def heartbeat_interval(s: Settings) -> float:
    """Seconds between heartbeats: ten beats per ``stale_running_seconds``, 0.2 s to 3 s."""
    return max(0.2, min(3.0, s.stale_running_seconds / 10))


class _Heartbeat:
    """Touches the run every ``interval`` seconds from a thread while ``host`` holds it.

    ``lost`` is set once a beat finds the run no longer held by ``host``.
    """

    def __init__(self, s: Settings, run_id: int, host: str, interval: float,
                 lease: str | None = None) -> None:
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._loop,
                                        args=(s, run_id, host, interval, lease),
                                        name=f"heartbeat-{run_id}", daemon=True)

    def _loop(self, s: Settings, run_id: int, host: str, interval: float,
              lease: str | None) -> None:
        while not self._stop.wait(interval):
            try:
                if not db_call(s, "touch_run", store.touch_run, run_id, host, lease):
                    log.warning("run %s is no longer held by %s; stopping it here", run_id, host)
                    self.lost.set()
                    return
            except Exception as exc:  # a missed beat is harmless; the next one may land
                log.warning("heartbeat for run %s failed: %s", run_id, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _StopCheck:
    """``should_stop`` for the trainer: user cancel (read at most every 0.5 s), shutdown, or
    the run taken from this worker (``lost``)."""

    def __init__(self, s: Settings, run_id: int, lost: threading.Event) -> None:
        self.s, self.run_id, self.lost = s, run_id, lost
        self.cancelled = False
        self._next = 0.0

    def __call__(self) -> bool:
        if shutting_down.is_set() or self.lost.is_set():
            return True
        now = time.monotonic()
        if not self.cancelled and now >= self._next:
            self._next = now + CANCEL_POLL_SECONDS
            try:
                self.cancelled = bool(db_call(self.s, "cancel_requested", store.cancel_requested,
                                          self.run_id))
            except Exception as exc:  # a database blip must not stop a run
                log.warning("cancel check for run %s failed: %s", self.run_id, exc)
        return self.cancelled


def _claim(s: Settings, run: Run, host: str, device: str) -> str | None:
    """Take ``run``: ``queued → running``, or a ``running`` run whose heartbeat went stale.

    Both are conditional updates, so when the run changed since it was read, this returns None;
    else the lease that this worker's writes to the run carry.
    """
    if run.state == "queued":
        return db_call(s, "claim_run", store.claim_run, run.id, host, device)
    return db_call(s, "reclaim_run", store.reclaim_run, run.id, host, device, s.stale_before())


def execute_run(run_id: int, *, hostname: str | None = None,
                settings: Settings | None = None) -> str:
    """Train run ``run_id`` if this call wins the claim; returns what happened.

    Returns the final state, ``"skipped"`` (someone else has it, or it already ended),
    ``"missing"`` (no such run) or ``"released"`` (the worker shut down mid-run).
    """
    s = settings or get_settings()
    host = hostname or socket.gethostname()
    run = db_call(s, "get_run", store.get_run, run_id)
    if run is None:
        log.warning("run %s does not exist; nothing to do", run_id)
        return "missing"
    if run.state in TERMINAL_STATES:
        log.info("run %s already %s; skipping this delivery", run_id, run.state)
        return "skipped"
    from bamsprod.core.device import pick_device  # torch loads with the first run, not at import

    config: RunConfig | None = None
    device = "cpu"
    # A plugin this worker lacks, or has at another version than the run recorded: never
    # train it with something else. The run fails with what to install; a retry works then.
    error = plugin_mismatch(run.plugins, host)
    try:
        if error is None:
            config = RunConfig.model_validate(run.config)
            device = str(pick_device(config.device))  # claimed with it, trained on it
    except (ValidationError, RuntimeError) as exc:
        # A stored config this version cannot read, or CUDA asked of a CPU worker: fail it
        # once, never retry.
        error = f"invalid run config: {exc}" if config is None else str(exc)
    if config is not None and error is None:
        # Queued before the limit was lowered, or stored by another path: never allocate it.
        error = (too_large(config, s.max_param_bytes)
                 or too_much_activation(config, s.max_activation_bytes))
        if error is None and (why := data_dir_refusal(config.data_dir, s.data_roots,
                                                      resolve=True)) is not None:
            error = f"data_dir {config.data_dir}: {why}"
    if run.state == "running" and run.attempts >= s.max_attempts and db_call(
            s, "give_up_run", store.give_up_run, run_id, s.stale_before(), s.max_attempts):
        # Its workers were lost every time (e.g. killed out of memory): it would come back
        # forever and block the queue.
        log.warning("run %s failed: gave up after %s attempts", run_id, run.attempts)
        _after_run(s, run_id, "failed")
        return "failed"
    lease = _claim(s, run, host, device)
    if lease is None:
        log.info("run %s is taken by another worker or finished; skipping this delivery", run_id)
        return "skipped"
    ckpt = s.run_checkpoint_dir(run_id)
    if error is not None or config is None:
        db_call(s, "finish_run", store.finish_run, run_id, "failed", error=error, lease=lease)
        _after_run(s, run_id, "failed")
        return "failed"
    if run.epochs_done == 0:
        # A fresh start (new run, or a retry): never resume an older attempt's checkpoint.
        shutil.rmtree(ckpt, ignore_errors=True)
    log.info("run %s claimed by %s on %s", run_id, host, device)
    outcome = _train_claimed(s, run_id, host, config, device, ckpt, lease)
    _after_run(s, run_id, outcome)
    return outcome


def _after_run(s: Settings, run_id: int, outcome: str) -> None:
    """A tuned sweep's follow-up (tell the trial, maybe start stage 2) once a run ended."""
    if outcome not in TERMINAL_STATES:
        return
    try:
        tuned.after_run(s, run_id, outcome)
    except Exception:  # the run's own result stands; the reconciler's pass tries again
        log.exception("run %s: tuned sweep follow-up failed", run_id)


def _train_claimed(s: Settings, run_id: int, host: str, config: RunConfig, device: str,
                   ckpt: Path, lease: str | None = None) -> str:
    from bamsprod.core.data import DatasetError, set_cache_limit
    from bamsprod.core.environment import environment
    from bamsprod.core.train import train

    set_cache_limit(s.data_cache_bytes)
    heartbeat = _Heartbeat(s, run_id, host, heartbeat_interval(s), lease)
    stop = _StopCheck(s, run_id, heartbeat.lost)
    hook: tuned.TrialHook | None = None

    def on_epoch(metrics) -> None:  # type: ignore[no-untyped-def]
        # Refused (RunLost) once another worker holds the run: nothing is written, no
        # checkpoint either (it is written after this), and training stops.
        db_call(s, "record_epoch", store.record_epoch, run_id, metrics.to_dict(), lease)
        if hook is not None:  # a tuning trial: report val_acc, maybe get pruned
            hook.on_epoch(metrics.epoch, metrics.val_acc)

    def should_stop() -> bool:
        return stop() or (hook is not None and hook.pruned)

    def on_phase(phase: str | None) -> None:  # the page says what happens before epoch 1
        try:
            db_call(s, "set_phase", store.set_phase, run_id, phase)
        except Exception as exc:  # only a label: never stop a run for it
            log.warning("run %s: phase %r not recorded: %s", run_id, phase, exc)

    try:
        hook = tuned.trial_hook(s, run_id)
        db_call(s, "set_environment", store.set_environment, run_id, environment(device))
        with heartbeat:
            result = train(config, on_epoch=on_epoch, should_stop=should_stop,
                           checkpoint_dir=ckpt, device=device, on_phase=on_phase)
    except store.RunLost:
        log.warning("run %s was taken over by another worker; this one stops (its epoch "
                    "was refused)", run_id)
        return "lost"
    except Exception as exc:
        if is_transient(exc):
            # The database stayed away past every retry: leave the run ``running`` with its
            # checkpoint; the reconciler re-queues it once its heartbeat is stale.
            log.error("run %s: database unavailable, left for the reconciler: %s", run_id, exc)
            raise
        error = str(exc) if isinstance(exc, DatasetError) else f"{type(exc).__name__}: {exc}"
        log.exception("run %s failed", run_id)
        error = public_error(error, s)  # readers see no paths of this machine's own
        if db_call(s, "finish_run", store.finish_run, run_id, "failed", error=error,
                   lease=lease):
            shutil.rmtree(ckpt, ignore_errors=True)
        return "failed"

    if result.state == "cancelled" and heartbeat.lost.is_set():
        _drop_checkpoint_if_ended(s, run_id, ckpt)
        log.info("run %s is no longer ours; stopped at epoch %s", run_id, result.epochs_done)
        return "lost"
    pruned = result.state == "cancelled" and hook is not None and hook.pruned
    state = "pruned" if pruned else result.state  # a losing tuning trial, stopped early
    if state == "cancelled" and not stop.cancelled and shutting_down.is_set():
        db_call(s, "release_run", store.release_run, run_id, lease)
        enqueue_run(run_id)
        log.info("run %s handed back to the queue at epoch %s", run_id, result.epochs_done)
        return "released"
    if not db_call(s, "finish_run", store.finish_run, run_id, state, error=result.error,
                   diverged_epoch=result.diverged_epoch, device=result.trained_on, lease=lease):
        # Taken over (or cancelled or deleted) meanwhile: whoever holds it owns the checkpoint.
        _drop_checkpoint_if_ended(s, run_id, ckpt)
        log.info("run %s is no longer ours; its end (%s) is not recorded here", run_id, state)
        return "lost"
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("run %s %s after %s epochs", run_id, state, result.epochs_done)
    return state


def _drop_checkpoint_if_ended(s: Settings, run_id: int, ckpt: Path) -> None:
    """Remove the checkpoint of a run that ended or was deleted under us; a run another
    worker holds now keeps it (that worker resumes from it)."""
    now = db_call(s, "get_run", store.get_run, run_id)
    if now is None or now.state in TERMINAL_STATES:
        shutil.rmtree(ckpt, ignore_errors=True)


_db_ready: set[str] = set()


@celery_app.task(name=TASK_NAME, bind=True, ignore_result=True)
def train_run(self, run_id: int) -> str:  # type: ignore[no-untyped-def]
    """Train run ``run_id`` (see :func:`execute_run`)."""
    s = get_settings()
    if s.database_url not in _db_ready:
        with_db_retry(lambda: init_db(s.database_url), what="init_db")
        _db_ready.add(s.database_url)
    return execute_run(run_id, hostname=self.request.hostname, settings=s)
