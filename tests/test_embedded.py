"""The embedded default end to end: ``bamsprod up`` with nothing but a temporary BAMSPROD_HOME.

No database or broker is configured, so this is exactly the README's first command: SQLite and
the SQLite-backed broker under the home, the API and one worker as child processes. A killed
worker child is started again by ``up`` and resumes its run; so does a killed and restarted
``up``.
"""

from __future__ import annotations

import contextlib
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


def healthy(srv: Server) -> bool:
    """The API answers and reports its database, broker and a worker as ok."""
    if srv.proc.poll() is not None:
        pytest.fail(f"bamsprod up exited with {srv.proc.returncode}:\n{srv.output()}")
    try:
        h = httpx.get(f"{srv.url}/api/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return h.get("status") == "ok" and bool(h.get("workers"))


def start_up(home: Path, port: int, log: Path, **settings: str) -> Server:
    """``bamsprod up`` on ``home`` and ``port`` (``settings``: more environment), returned once
    healthy with a worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(BAMSPROD_HOME=str(home), OMP_NUM_THREADS="1", **settings)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "up", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", proc, home, log, env)
    wait_for(lambda: healthy(srv), 90, "bamsprod up to report a healthy API and a worker")
    return srv


def stop_up(srv: Server) -> None:
    proc = srv.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            for child in children_of(proc.pid):
                os.kill(child, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("embedded") / "home"
    srv = start_up(home, free_port(), home.parent / "up.log")
    try:
        yield srv
    finally:
        stop_up(srv)


def cli(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bamsprod", *args, "--url", srv.url], cwd=ROOT,
                          env={**srv.env, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=120)


def test_up_uses_the_embedded_defaults(server: Server) -> None:
    assert (server.home / "bamsprod.db").is_file()
    assert (server.home / "broker.db").is_file()
    health = httpx.get(f"{server.url}/api/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert len(health["workers"]) == 1


def test_up_as_root_says_once_what_root_means(server: Server) -> None:
    """Celery's banner is about pickled messages; this queue takes JSON only, so ``up`` says in
    one line of its own what root does mean, and Celery's banner is left out."""
    if os.geteuid() != 0:
        pytest.skip("Celery only warns a superuser")
    out = server.output()
    assert "superuser privileges" not in out and "SecurityWarning" not in out, out
    assert out.count("running as root") == 1 and "belongs to root (" in out, out


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
    assert listed.returncode == 0 and "\tfrom-cli\tsucceeded\t" in listed.stdout  # piped
    assert "1 runs" in listed.stderr  # the title, out of the rows' way

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

    nobody = subprocess.run([sys.executable, "-m", "bamsprod", "runs", "--url",
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


def worker_child(srv: Server) -> int:
    """The pid of ``up``'s Celery worker child."""
    for pid in children_of(srv.proc.pid):
        try:
            if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
                return pid
        except OSError:
            continue
    pytest.fail("up has no worker child")


def epochs(srv: Server, run_id: int) -> list[int]:
    items = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", timeout=10).json()["items"]
    return [m["epoch"] for m in items]


def kill_mid_epoch(srv: Server, run_id: int, pids: list[int]) -> tuple[float, int]:
    """Once a new epoch has landed, SIGKILL ``pids`` in that order a moment into the next
    epoch; returns (when, epochs stored at the kill)."""
    base = len(epochs(srv, run_id))
    wait_for(lambda: len(epochs(srv, run_id)) > base, 120, "an epoch before the kill",
             interval=0.05)
    time.sleep(0.3)  # into the next epoch
    done = len(epochs(srv, run_id))
    t0 = time.monotonic()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return t0, done


RECOVERY = {**RUN, "epochs": 12, "batch_size": 16, "model_args": {"width": 512}}


def test_killed_worker_comes_back_and_the_run_goes_on(tmp_path: Path) -> None:
    """SIGKILL of ``up``'s worker child mid-epoch: the API keeps serving, ``up`` starts the
    worker again, and it takes the run back at once (same node name). Then a hard kill of the
    whole embedded default and a restart on the same home: the same again."""
    home, port, log = tmp_path / "home", free_port(), tmp_path / "up.log"
    srv = start_up(home, port, log)
    times: list[float] = []
    try:
        run_id = httpx.post(f"{srv.url}/api/runs", json=RECOVERY).json()["id"]
        victim = worker_child(srv)
        t0, done = kill_mid_epoch(srv, run_id, [victim])
        answered = []
        while len(epochs(srv, run_id)) <= done:  # the API answers all along
            answered.append(httpx.get(f"{srv.url}/api/health", timeout=5).status_code)
            assert time.monotonic() - t0 < 60, srv.output()[-3000:]
            time.sleep(0.2)
        times.append(time.monotonic() - t0)
        assert set(answered) <= {200, 503} and srv.proc.poll() is None
        assert worker_child(srv) != victim and not alive(victim)
        assert "the worker exited" in srv.output()

        # A hard kill of everything (the worker first, so it cannot hand the run back), then
        # `up` again on the same home: its worker has the same node name.
        children = children_of(srv.proc.pid)
        t0, done = kill_mid_epoch(srv, run_id, [worker_child(srv), srv.proc.pid, *children])
        wait_for(lambda: not any(alive(p) for p in children), 10, "everything to die")
        srv = start_up(home, port, log)
        wait_for(lambda: len(epochs(srv, run_id)) > done, 60, "the next epoch after a restart",
                 interval=0.1)
        times.append(time.monotonic() - t0)

        def finished() -> dict | None:
            run = httpx.get(f"{srv.url}/api/runs/{run_id}").json()
            return run if run["state"] not in ("queued", "running") else None

        run = wait_for(finished, 180, "the run to finish")
        stored = epochs(srv, run_id)
    finally:
        stop_up(srv)
    print(f"\nembedded: SIGKILL -> next epoch: worker child {times[0]:.1f}s, "
          f"whole up + restart {times[1]:.1f}s")
    assert run["state"] == "succeeded", (run, srv.output()[-3000:])
    assert stored == list(range(1, RECOVERY["epochs"] + 1))  # every epoch, exactly once
    assert all(t < 30 for t in times), times
    assert run["attempts"] == 3 and run["epochs_done"] == RECOVERY["epochs"]


def test_embedded_broker_deletes_delivered_messages(tmp_path: Path) -> None:
    """kombu's SQLAlchemy transport keeps delivered messages forever; ours deletes them."""
    import sqlite3

    from kombu import Connection

    from bamsprod.app.queue import EMBEDDED_TRANSPORT

    db = tmp_path / "broker.db"
    with Connection(f"sqlite:///{db}", transport=EMBEDDED_TRANSPORT) as conn:
        queue = conn.SimpleQueue("q")
        for i in range(5):
            queue.put({"i": i})
        got = []
        for _ in range(3):
            msg = queue.get(timeout=5)
            got.append(msg.payload["i"])
            msg.ack()
        queue.close()
    rows = sqlite3.connect(db).execute("SELECT visible FROM kombu_message").fetchall()
    assert got == [0, 1, 2]
    assert sorted(rows) == [(1,), (1,)]  # only the two undelivered messages are left


def test_up_trains_worker_concurrency_runs_at_once(tmp_path: Path) -> None:
    """``BAMSPROD_WORKER_CONCURRENCY=2``: ``up``'s worker trains two runs at the same time (the
    prefork pool; what a study's ``workers = 2`` asks for), and both finish."""
    srv = start_up(tmp_path / "home", free_port(), tmp_path / "up.log",
                   BAMSPROD_WORKER_CONCURRENCY="2")
    try:
        body = {**RUN, "epochs": 40, "model_args": {"width": 256}}
        ids = [httpx.post(f"{srv.url}/api/runs", json={**body, "seed": s}).json()["id"]
               for s in (0, 1)]

        def running() -> int:
            return httpx.get(f"{srv.url}/api/runs", params={"state": "running"}).json()["total"]

        wait_for(lambda: running() == 2, 60, "both runs running at once")
        wait_for(lambda: all(httpx.get(f"{srv.url}/api/runs/{i}").json()["state"] == "succeeded"
                             for i in ids), 180, "both runs to succeed", interval=0.5)
    finally:
        stop_up(srv)


def test_a_stopped_worker_shows_in_health_and_up_restarts_it(tmp_path: Path) -> None:
    """SIGSTOP of ``up``'s only worker: it neither exits nor beats. Health says no worker is
    alive (before: ``ok`` with ``workers_seen: 0``), and ``up`` kills and restarts it."""
    home, port, log = tmp_path / "home", free_port(), tmp_path / "up.log"
    srv = start_up(home, port, log)
    try:
        victim = worker_child(srv)
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()

        def no_worker() -> dict | None:
            h = httpx.get(f"{srv.url}/api/health", timeout=5).json()
            return h if h["workers_seen"] == 0 else None

        h = wait_for(no_worker, 60, "health to see no worker")
        assert h["status"] == "degraded" and not h["worker"]["ok"], h
        assert "no worker alive" in h["worker"]["detail"]
        def restarted() -> bool:
            pids = [p for p in children_of(srv.proc.pid)
                    if alive(p) and b"celery" in Path(f"/proc/{p}/cmdline").read_bytes()]
            return bool(pids) and victim not in pids and healthy(srv)

        wait_for(restarted, 120, "up to restart the stopped worker")
        took = time.monotonic() - t0
        assert not alive(victim)
        assert "stopped announcing itself" in srv.output()
        run_id = httpx.post(f"{srv.url}/api/runs", json=RUN).json()["id"]
        wait_for(lambda: httpx.get(f"{srv.url}/api/runs/{run_id}").json()["state"]
                 == "succeeded", 120, "a run on the new worker")
    finally:
        stop_up(srv)
    print(f"\nstopped worker -> restarted and healthy in {took:.1f}s")
