"""The embedded default end to end: ``bamsprod up`` with nothing but a temporary BAMSPROD_HOME.

No database or broker is configured, so this is exactly the README's first command: SQLite and
the SQLite-backed broker under the home, the API and one worker as child processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_fixtures import ROOT, wait_for

pytestmark = [pytest.mark.slow]

RUN = {"model": "mlp", "dataset": "digits", "epochs": 2, "model_args": {"width": 32},
       "batch_size": 256}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    home: Path
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("embedded") / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(BAMSPROD_HOME=str(home), OMP_NUM_THREADS="1")
    log = home.parent / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "up", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", proc, home, log, env)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"bamsprod up exited with {proc.returncode}:\n{srv.output()}")
        try:
            h = httpx.get(f"{srv.url}/api/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return h.get("status") == "ok" and bool(h.get("workers"))

    try:
        wait_for(healthy, 90, "bamsprod up to report a healthy API and a worker")
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                for child in children_of(proc.pid):
                    os.kill(child, signal.SIGKILL)


def cli(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args, "--url", srv.url], cwd=ROOT,
                          env={**srv.env, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=120)


def test_up_uses_the_embedded_defaults(server: Server) -> None:
    assert (server.home / "bamsprod.db").is_file()
    assert (server.home / "broker.db").is_file()
    health = httpx.get(f"{server.url}/api/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert len(health["workers"]) == 1


def test_up_as_root_shows_no_celery_superuser_banner(server: Server) -> None:
    """Celery's banner is about pickled messages on a shared broker; this one takes JSON only."""
    if os.geteuid() != 0:
        pytest.skip("Celery only warns a superuser")
    assert "superuser privileges" not in server.output(), server.output()


def test_a_run_posted_over_http_succeeds(server: Server) -> None:
    r = httpx.post(f"{server.url}/api/runs", json=RUN)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    def finished() -> dict | None:
        run = httpx.get(f"{server.url}/api/runs/{run_id}").json()
        return run if run["state"] not in ("queued", "running") else None

    run = wait_for(finished, 90, f"run {run_id} to finish")
    assert run["state"] == "succeeded", (run, server.output()[-3000:])
    metrics = httpx.get(f"{server.url}/api/runs/{run_id}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(0 <= m["test_acc"] <= 1 for m in metrics)


def test_client_commands(server: Server) -> None:
    done = cli(server, "submit", "--epochs", "1", "--model-arg", "width=32", "--batch-size",
               "256", "--name", "from-cli", "--tag", "cli", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout and "epoch=1" in done.stdout
    run_id = done.stdout.split()[1]

    listed = cli(server, "runs", "--tag", "cli")
    assert listed.returncode == 0 and "from-cli" in listed.stdout and "1 runs" in listed.stdout

    shown = cli(server, "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and "config.optimizer" in shown.stdout

    queued = cli(server, "submit", "--epochs", "300", "--batch-size", "16", "--model-arg",
                 "width=32")
    assert queued.returncode == 0, queued.stderr
    long_id = queued.stdout.split()[1]
    cancelled = cli(server, "cancel", long_id)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_for(lambda: httpx.get(f"{server.url}/api/runs/{long_id}").json()["state"]
             == "cancelled", 30, "the cancelled run to end")

    again = cli(server, "cancel", run_id)  # already finished: the server's 409, explained
    assert again.returncode == 2 and "409" in again.stderr

    bad = cli(server, "submit", "--epochs", "0")
    assert bad.returncode == 2 and "--epochs" in bad.stderr

    missing = cli(server, "show", "999999")
    assert missing.returncode == 3 and "not found" in missing.stderr

    nobody = subprocess.run([sys.executable, "-m", "app", "runs", "--url",
                             f"http://127.0.0.1:{free_port()}"], cwd=ROOT, env=server.env,
                            capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 2 and "cannot reach" in nobody.stderr


def test_ctrl_c_stops_api_and_worker(server: Server) -> None:
    children = children_of(server.proc.pid)
    assert len(children) == 2, children  # the API and the worker
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=30) == 0, server.output()[-3000:]
    assert time.monotonic() - t0 < 25
    wait_for(lambda: not any(alive(c) for c in children), 10, "both children to exit")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/api/health", timeout=2)
