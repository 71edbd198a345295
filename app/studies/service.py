"""The service a study runs on: a running server when it answers, else an embedded
``bamsprod up`` on a free port with its own home, its worker processes and torch threads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console

from bamsprod.app.commands.common import client, die_with_parent

console = Console(stderr=True)

SERVICE_READY_SECONDS = 180.0
SERVICE_STOP_SECONDS = 60.0
# Settings the embedded service keeps from this environment; the rest (database, broker, home)
# are its own, so a study never writes into someone else's service.
KEEP_ENV = ("BAMSPROD_API_TOKEN", "BAMSPROD_READ_TOKEN", "BAMSPROD_DATA_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_ready(url: str, timeout: float = 3.0) -> bool:
    """True when ``url``'s /api/health answers ``ok`` and sees at least one worker."""
    try:
        with client(url) as c:
            r = c.get("/api/health", timeout=timeout)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return False
    return r.status_code == 200 and body.get("status") == "ok" and bool(body.get("workers_seen"))


def service_env(home: Path, workers: int, threads: int) -> dict[str, str]:
    """The embedded service's environment: its own home, ``workers`` worker processes
    (``BAMSPROD_WORKER_CONCURRENCY``, the prefork pool) of ``threads`` torch threads each
    (``OMP_NUM_THREADS`` and ``BAMSPROD_TORCH_THREADS``; 0: torch's default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_") or k in KEEP_ENV}
    env["BAMSPROD_HOME"] = str(home)
    env["BAMSPROD_WORKER_CONCURRENCY"] = str(workers)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["BAMSPROD_TORCH_THREADS"] = str(threads)
    return env


@contextmanager
def embedded_service(home: Path, workers: int = 1, threads: int = 1) -> Iterator[str]:
    """``bamsprod up`` on a free port with its own home; yields its URL once it has a worker,
    and stops it (SIGTERM, then SIGKILL) on exit; it also gets SIGTERM if this process dies."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = home / "service.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bamsprod", "up", "--port", str(port)],
            env=service_env(home, workers, threads), stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            deadline = time.monotonic() + SERVICE_READY_SECONDS
            while not service_ready(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the embedded service did not come up:\n{tail}")
                time.sleep(0.5)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=SERVICE_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def service(url: str | None, out: Path, workers: int = 1,
            threads: int = 1) -> Iterator[tuple[str, str]]:
    """``(url, mode)``: the given server when it answers, else an embedded default."""
    if url and service_ready(url):
        yield url.rstrip("/"), "external"
        return
    if url:
        console.print(f"[yellow]{url} does not answer; starting an embedded service[/yellow]")
    console.print(f"starting the embedded service (home: {out / 'service'}) ...")
    with embedded_service(out / "service", workers, threads) as embedded:
        console.print(f"embedded service up at {embedded}")
        per = f"{threads} torch thread{'' if threads == 1 else 's'}" if threads else \
            "torch's default threads"
        yield embedded, (f"embedded (SQLite + SQLite broker, {workers} worker "
                         f"process{'' if workers == 1 else 'es'} of {per})")
