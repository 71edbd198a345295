"""Service commands: ``serve``, ``worker``, ``up``; and against a running server ``submit``,
``runs``, ``show``, ``cancel``.

``up`` is the embedded default: it migrates the database, then starts the API (uvicorn) and one
Celery worker (``BAMSPROD_WORKER_CONCURRENCY`` processes of the prefork pool, else the solo
pool) as child processes, each in its own session, and stops both on Ctrl-C or SIGTERM
(the worker hands a running run back to the queue; the next ``up`` resumes it). It supervises
the worker: a worker that dies (killed, out of memory) is started again, with back-off, while
the API goes on serving; the new worker has the same node name, so it takes back the run the
dead one held at once. A worker that stops announcing itself (stopped, hung) is killed and
started again the same way. The worker runs the reconciler thread (see ``worker.reconciler``), so
``up`` needs nothing else.

The client commands talk HTTP only (``--url``, default ``$BAMSPROD_URL`` or
http://127.0.0.1:8000); ``--token`` (default ``$BAMSPROD_API_TOKEN``, else
``$BAMSPROD_READ_TOKEN``) is sent as a bearer token when set.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import typer

from bamsprod.app.commands.common import (
    COLUMNS,
    TOKEN_OPTION,
    URL_OPTION,
    console,
    die_with_parent,
    err,
    format_line,
    format_row,
    print_rows,
    request,
    safe,
)
from bamsprod.app.commands.run_options import OPTION_FOR_FIELD, with_run_config
from bamsprod.app.settings import Settings, get_settings
from bamsprod.core.config import RunConfig

commands = typer.Typer()
STOP_GRACE_SECONDS = 20.0
# A worker that dies is restarted after 1 s, then 2, 4, ... up to 30 s while it keeps dying
# within a minute of its start.
RESTART_DELAYS = (1.0, 30.0)
RESTART_RESET_SECONDS = 60.0

# A worker that has not announced itself this long after its start (its first announcement
# waits for Celery and torch to load) counts as hung.
FIRST_BEAT_SECONDS = 120.0

# --------------------------------------------------------------------------- processes


class WorkerBeat:
    """Whether ``up``'s worker still announces itself (``app.queue.workers_seen``): a worker
    that is alive but stopped (SIGSTOP) or hung never exits, so ``up`` watches its beat too."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen = False
        self._next = 0.0

    def stalled(self, started: float) -> str | None:
        """Why the worker counts as stalled now, or None (asked at most every 2 s)."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + 2.0
        from bamsprod.app.queue import PRESENCE_TTL, workers_seen

        if self.name in workers_seen():
            self.seen = True
            return None
        if self.seen:
            return f"stopped announcing itself (nothing for {PRESENCE_TTL:g} s)"
        if now - started > FIRST_BEAT_SECONDS:
            return f"never announced itself in {FIRST_BEAT_SECONDS:g} s"
        return None



# Celery's superuser banner (e.g. `bamsprod up` as root in a container) warns of pickled
# messages; our queue accepts JSON only (app.queue), so ``root_note`` says what root does mean.
CELERY_ROOT_BANNER = "ignore:You're running the worker with superuser privileges"


def root_note(s: Settings) -> str | None:
    """One plain line on what running the worker as root means; None when not root."""
    if os.geteuid() != 0:
        return None
    return (f"running as root: the worker trains with root's rights and what it writes under "
            f"{s.home} belongs to root (its queue takes JSON only, so Celery's pickle warning "
            "does not apply); run as a normal user where you can")


def unique_node_name() -> str:
    """A worker's default node name, ``bamsprod-<random>@<host>``: two workers started on one
    host without ``--name`` never share one (a shared name let a newcomer take back, and train,
    a run the other still trained)."""
    return f"bamsprod-{secrets.token_hex(4)}@%h"


def up_node_name(s: Settings) -> str:
    """``up``'s worker name: one per home, the same when ``up`` restarts its worker or is
    started again, so the new worker takes back at once what the old one held."""
    return f"up-{hashlib.sha256(str(s.home.resolve()).encode()).hexdigest()[:8]}@%h"


def worker_argv(s: Settings, concurrency: int = 1, name: str | None = None,
                loglevel: str = "info") -> list[str]:
    """The ``celery worker`` command line for ``s`` (solo pool for one process at a time);
    Celery's superuser banner is left out (the caller prints ``root_note`` once instead)."""
    argv = [sys.executable, "-W", CELERY_ROOT_BANNER, "-m", "celery", "-A", "bamsprod.worker.app",
            "worker", "-Q", s.queue, "--loglevel", loglevel, "--concurrency", str(concurrency),
            "--pool", "solo" if concurrency == 1 else "prefork"]
    if name:
        argv += ["--hostname", name]
    if s.embedded:
        # The SQLite broker has no fanout: nothing to gossip or mingle with.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def _say_root_note(s: Settings) -> None:
    if (note := root_note(s)) is not None:
        err.print(f"[yellow]note:[/yellow] {safe(note)}", soft_wrap=True)


def api_argv(host: str, port: int) -> list[str]:
    """The API child of ``up``: uvicorn with the limits of ``app.web.server``."""
    return [sys.executable, "-m", "bamsprod.app.web.server", host, str(port)]


def _stop(procs: list[subprocess.Popen], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each child, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _warn_if_exposed(host: str) -> None:
    from bamsprod.app.api.csrf import exposure_warning

    warning = exposure_warning(host, get_settings())
    if warning:
        err.print(f"[yellow]warning:[/yellow] {safe(warning)}")


@commands.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="port"),
    workers: int = typer.Option(
        1, min=1, max=64, help="API processes (uvicorn workers), each with its own SSE poller"
    ),
) -> None:
    """Start the API server only (workers run elsewhere: ``bamsprod worker``)."""
    from bamsprod.app.web.server import run

    _warn_if_exposed(host)
    if workers > 1:  # migrate once here, so the processes start on an up-to-date schema
        from bamsprod.app.store.engine import init_db

        s = get_settings()
        s.ensure_dirs()
        init_db(s.database_url)
    run(host, port, workers)


@commands.command()
def worker(
    concurrency: int | None = typer.Option(
        None, min=1, help="runs trained at once [default: $BAMSPROD_WORKER_CONCURRENCY, else 1]"
    ),
    name: str | None = typer.Option(
        None, help="worker name, e.g. gpu1@%h [default: bamsprod-<random>@<host>]"),
    loglevel: str = typer.Option("info", help="celery log level"),
) -> None:
    """Start one Celery worker on the configured broker and database."""
    s = get_settings()
    s.ensure_dirs()
    argv = worker_argv(s, concurrency or s.worker_concurrency or 1,
                       name or unique_node_name(), loglevel)
    _say_root_note(s)
    os.execv(argv[0], argv)


@commands.command()
def up(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="port"),
) -> None:
    """Start the API and one worker (the embedded default); Ctrl-C stops both. The worker
    trains $BAMSPROD_WORKER_CONCURRENCY runs at once (default 1), one process each."""
    from bamsprod.app.store.engine import init_db

    s = get_settings()
    s.ensure_dirs()
    concurrency = s.worker_concurrency or 1
    init_db(s.database_url)
    mode = "embedded: SQLite + SQLite broker" if s.embedded else "external broker"
    err.print(f"bamsprod home: {s.home}  ({mode})")
    _warn_if_exposed(host)
    _say_root_note(s)  # once: a restarted worker says nothing more
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_requested.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs: dict[str, subprocess.Popen] = {}
    node = up_node_name(s)
    try:
        procs["API"] = subprocess.Popen(api_argv(host, port), preexec_fn=die_with_parent)
        procs["worker"] = subprocess.Popen(worker_argv(s, concurrency, name=node),
                                           preexec_fn=die_with_parent)
        started, delay = time.monotonic(), RESTART_DELAYS[0]
        beats = WorkerBeat(node.replace("%h", socket.gethostname()))
        console.print(f"bamsprod is up: http://{host}:{port}  (Ctrl-C stops it)")
        while not stop_requested:
            api, work = procs["API"], procs["worker"]
            if api.poll() is not None:
                err.print(f"[red]the API process exited (code {api.returncode}); stopping[/red]")
                break
            if work.poll() is None and (why := beats.stalled(started)) is not None:
                # Alive but silent (stopped, hung): end it, and start it again below.
                err.print(f"[yellow]the worker {why}; killing it[/yellow]")
                work.kill()
                work.wait()
            if work.poll() is not None:
                if time.monotonic() - started > RESTART_RESET_SECONDS:
                    delay = RESTART_DELAYS[0]
                err.print(f"[yellow]the worker exited (code {work.returncode}); starting it "
                          f"again in {delay:.0f}s[/yellow]")
                deadline = time.monotonic() + delay
                while not stop_requested and time.monotonic() < deadline:
                    time.sleep(0.1)
                if stop_requested:
                    break
                procs["worker"] = subprocess.Popen(worker_argv(s, concurrency, name=node),
                                                   preexec_fn=die_with_parent)
                started, delay = time.monotonic(), min(delay * 2, RESTART_DELAYS[1])
                beats = WorkerBeat(beats.name)
            time.sleep(0.2)
    finally:
        err.print("stopping the API and the worker ...")
        _stop(list(procs.values()))
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if not stop_requested:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------- client


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def _follow(url: str, run_id: int, poll: float = 1.0, token: str | None = None
            ) -> dict[str, Any]:
    """Print each new epoch of ``run_id`` until it ends; returns the final run."""
    after = 0
    while True:
        run = request(url, "GET", f"/api/runs/{run_id}", token=token)
        metrics = request(url, "GET", f"/api/runs/{run_id}/metrics", params={"after": after},
                           token=token)
        for m in metrics["items"]:
            console.print(format_line(m), soft_wrap=True)  # one epoch, one line: never wrapped
            after = max(after, m["epoch"])
        if run["state"] not in ("queued", "running"):
            return run
        time.sleep(poll)


@commands.command()
@with_run_config
def submit(
    config: RunConfig,
    wait: bool = typer.Option(False, "--wait", help="follow the run until it ends"),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Submit one run to a running server (same options as ``train``)."""
    run = request(url, "POST", "/api/runs", json=config.model_dump(mode="json"), token=token,
                  options=OPTION_FOR_FIELD)
    console.print(f"run {run['id']} {run['state']}: {url.rstrip('/')}/runs/{run['id']}")
    if wait:
        run = _follow(url, run["id"], token=token)
        console.print(f"run {run['id']} {run['state']}"
                      + (f": {safe(run['error'])}" if run.get("error") else ""))
        if run["state"] != "succeeded":
            raise typer.Exit(1)


@commands.command()
def runs(
    state: str | None = typer.Option(
        None, help="queued, running, succeeded, failed, diverged, cancelled or pruned"),
    optimizer: str | None = typer.Option(None),
    tag: str | None = typer.Option(None),
    sort: str = typer.Option("id", help="column to sort on, e.g. best_test_acc"),
    order: str = typer.Option("desc", help="asc or desc"),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="the page of runs as the API's JSON"),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """List runs on the server, newest first (piped: one tab-separated line per run)."""
    params = {k: v for k, v in {"state": state, "optimizer": optimizer, "tag": tag,
                                "sort": sort, "order": order, "limit": limit}.items()
              if v is not None}
    page = request(url, "GET", "/api/runs", params=params, token=token)
    if as_json:
        print(json.dumps(page))
        return
    rows = [(str(r["id"]), r["name"], r["state"], r["optimizer"], r["model"], r["dataset"],
             str(r["seed"]), f"{r['epochs_done']}/{r['epochs']}", _fmt(r["best_test_acc"]),
             _fmt(r["last_test_acc"]), str(r["created_at"])[:19]) for r in page["items"]]
    print_rows(("id", "name", "state", "optimizer", "model", "dataset", "seed", "epochs",
                "best acc", "last acc", "created"), rows, title=f"{page['total']} runs")


@commands.command()
def show(
    run_id: int = typer.Argument(..., help="run id"),
    as_json: bool = typer.Option(False, "--json", help='{"run": ..., "epochs": [...]} as JSON'),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Show one run: its config, state and every epoch (piped: tab-separated lines)."""
    run = request(url, "GET", f"/api/runs/{run_id}", token=token)
    metrics = request(url, "GET", f"/api/runs/{run_id}/metrics", token=token)
    if as_json:
        print(json.dumps({"run": run, "epochs": metrics["items"]}))
        return
    head = [(key, _fmt(run[key])) for key in (
        "name", "state", "error", "worker_host", "device", "created_at", "started_at",
        "finished_at", "epochs_done", "best_test_acc", "best_epoch", "diverged_epoch")
        if run.get(key) not in (None, "")]
    head += [(f"config.{key}", value) for key, value in run["config"].items()]
    print_rows(("field", "value"), head, title=f"run {run_id}")
    print_rows(COLUMNS, [format_row(m) for m in metrics["items"]])


@commands.command()
def cancel(
    run_id: int | None = typer.Argument(None, help="run id"),
    sweep: int | None = typer.Option(None, "--sweep", help="cancel every run of this sweep"),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Cancel a queued or running run, or with --sweep every run of a sweep (one request)."""
    if (run_id is None) == (sweep is None):
        raise typer.BadParameter("give a run id or --sweep, not both", param_hint="RUN_ID")
    if sweep is not None:
        done = request(url, "POST", f"/api/sweeps/{sweep}/cancel", token=token)
        console.print(f"sweep {sweep}: {done['cancelled']} runs cancelled, "
                      f"{done['cancel_requested']} running ones asked to stop")
        return
    run = request(url, "POST", f"/api/runs/{run_id}/cancel", token=token) or {}
    console.print(f"run {run_id}: {run.get('state', 'cancel requested')}")
