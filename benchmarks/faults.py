"""Faults and hostile input against the real service, on both back ends: what each step gives.

    .venv/bin/python benchmarks/faults.py [--modes embedded,redis-pg] [--out FILE]

Reruns the steps of issue 20 against a ``bamsprod serve`` and ``bamsprod worker`` processes
(both tokens set, ``BAMSPROD_DATA_ROOTS`` set, ``BAMSPROD_MAX_ATTEMPTS=2``): ``embedded`` is a
temporary home (SQLite, the SQLite broker), ``redis-pg`` a fresh PostgreSQL database on
127.0.0.1:5432 and a private ``redis-server`` (it gets SIGSTOPped). Faults are real: SIGKILL and
SIGSTOP of processes, a held SQLite/PostgreSQL lock, a stopped broker. Every HTTP answer is
counted: a 5xx other than a 503 with ``Retry-After`` is a failure. Prints one table (step x
back end) and writes the results as JSON (default ``artifacts/faults.json``). About 8-10
minutes on two cores, most of it worker starts, training and the kernel's cold builds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
API, READ = "fault-api-token", "fault-read-token"
WRITE_H = {"Authorization": f"Bearer {API}", "X-Requested-With": "faults"}
READ_H = {"Authorization": f"Bearer {READ}"}
TINY = {"model": "mlp", "dataset": "digits", "model_args": {"width": 32}, "batch_size": 256,
        "epochs": 1, "optimizer": "adam"}
SLOW = {**TINY, "model_args": {"width": 512}, "batch_size": 16}
TERMINAL = ("succeeded", "failed", "diverged", "cancelled", "pruned")


class Tally:
    """Every HTTP answer: 5xx that are not a documented 503 (JSON, Retry-After) are failures."""

    def __init__(self) -> None:
        self.answers = 0
        self.documented_503 = 0
        self.bad: list[str] = []
        self.lock = threading.Lock()

    def saw(self, r: httpx.Response) -> httpx.Response:
        with self.lock:
            self.answers += 1
            if r.status_code >= 500:
                if r.status_code == 503 and "retry-after" in r.headers:
                    self.documented_503 += 1
                else:
                    self.bad.append(f"{r.status_code} {r.request.method} {r.request.url.path}")
        return r


TALLY = Tally()


def call(method: str, url: str, **kw: Any) -> httpx.Response:
    kw.setdefault("timeout", 30)
    return TALLY.saw(httpx.request(method, url, **kw))


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- back ends


class Backend:
    """One back end: its settings (as environment), the API and the workers it started."""

    def __init__(self, mode: str, tmp: Path) -> None:
        self.mode, self.tmp = mode, tmp
        self.home = tmp / "home"
        self.roots = tmp / "data-roots"
        self.roots.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.redis: subprocess.Popen | None = None
        self.pg_name: str | None = None
        db, broker = "", ""
        if mode == "redis-pg":
            port = free_port()
            self.redis = subprocess.Popen(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            broker = f"redis://127.0.0.1:{port}/0"
            import psycopg

            self.pg_name = f"bamsprod_faults_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            db = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_name}"
            time.sleep(0.5)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
        self.env.update(
            BAMSPROD_HOME=str(self.home), BAMSPROD_DATABASE_URL=db, BAMSPROD_BROKER_URL=broker,
            BAMSPROD_QUEUE=f"faults-{uuid.uuid4().hex[:6]}", BAMSPROD_API_TOKEN=API,
            BAMSPROD_READ_TOKEN=READ, BAMSPROD_DATA_ROOTS=str(self.roots),
            BAMSPROD_RECONCILE_SECONDS="2", BAMSPROD_MAX_ATTEMPTS="2", OMP_NUM_THREADS="1",
            TORCH_EXTENSIONS_DIR=str(tmp / "torch-extensions"), PYTHONPATH=str(ROOT))
        self.url = ""
        self.api: subprocess.Popen | None = None
        self.runs_before_hang = 0

    def start_api(self) -> None:
        port = free_port()
        log = open(self.tmp / "api.log", "ab")  # noqa: SIM115 - closed with the process
        self.api = subprocess.Popen([sys.executable, "-m", "bamsprod", "serve", "--port",
                                     str(port)], env=self.env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(self.api)
        self.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait(up, 90, "the API")

    def worker(self, node: str) -> subprocess.Popen:
        log = open(self.tmp / f"worker-{node.split('@')[0]}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "worker", "--name", node],
                                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        wait(lambda: node in (self.health().get("workers") or []), 90, f"worker {node}")
        return proc

    def health(self) -> dict[str, Any]:
        return call("GET", f"{self.url}/api/health", headers=READ_H).json()

    def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return call("POST", f"{self.url}/api/runs", json=body, headers={**WRITE_H, **headers})

    def run(self, run_id: int) -> dict[str, Any]:
        return call("GET", f"{self.url}/api/runs/{run_id}", headers=READ_H).json()

    def epochs(self, run_id: int) -> list[int]:
        items = call("GET", f"{self.url}/api/runs/{run_id}/metrics", headers=READ_H).json()
        return [m["epoch"] for m in items["items"]]

    def ended(self, run_id: int, timeout: float = 120) -> dict[str, Any]:
        return wait(lambda: (r := self.run(run_id))["state"] in TERMINAL and r, timeout,
                    f"run {run_id} to end")

    def cli(self, *args: str, token: str = READ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bamsprod", *args, "--url", self.url,
                               "--token", token], env={**self.env, "TTY_COMPATIBLE": "0"},
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    def db_lock(self, seconds: float) -> threading.Thread:
        """Another process's lock on the run table (SQLite: BEGIN EXCLUSIVE on the file;
        PostgreSQL: LOCK TABLE run) for ``seconds``; returned once it is held."""
        held = threading.Event()

        def hold() -> None:
            if self.mode == "embedded":
                conn = sqlite3.connect(str(self.home / "bamsprod.db"), isolation_level=None)
                conn.execute("BEGIN EXCLUSIVE")
                held.set()
                time.sleep(seconds)
                conn.execute("ROLLBACK")
                conn.close()
            else:
                import psycopg

                with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{self.pg_name}") as conn:
                    conn.execute("LOCK TABLE run IN ACCESS EXCLUSIVE MODE")
                    held.set()
                    time.sleep(seconds)
                    conn.rollback()

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        held.wait(30)
        return t

    def hang_broker(self) -> Callable[[], None]:
        """Stop the broker answering (Redis: SIGSTOP; the SQLite broker: a held write lock);
        returns the call that resumes it."""
        if self.redis is not None:
            self.redis.send_signal(signal.SIGSTOP)
            return lambda: self.redis.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        conn = sqlite3.connect(str(self.home / "broker.db"), isolation_level=None, timeout=30)
        conn.execute("BEGIN EXCLUSIVE")
        return lambda: (conn.execute("ROLLBACK"), conn.close())

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            if sig == signal.SIGKILL:
                proc.wait()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.send_signal(signal.SIGCONT)
            self.redis.kill()
            self.redis.wait()
        if self.pg_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


# ------------------------------------------------------------------------------- steps


def raw_status(b: Backend, *headers: str) -> int:
    """The status of ``GET /api/runs`` sent as written (clients refuse to repeat Host)."""
    host, port = b.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(("GET /api/runs HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers)
                   + "Connection: close\r\n\r\n").encode())
        status = int(s.recv(64).split()[1])
    TALLY.answers += 1
    if status >= 500:
        TALLY.bad.append(f"{status} GET /api/runs (raw)")
    return status


def step_hostile_requests(b: Backend) -> dict[str, str]:
    """The cheap hostile inputs: each answer in a few words."""
    out: dict[str, str] = {}
    hp = {"beta1": [round(0.5 + i * 0.004, 4) for i in range(100)],
          "beta2": [round(0.9 + i * 0.0009, 5) for i in range(100)],
          "eps": [float(f"{(1 + i) * 1e-9:.3g}") for i in range(20)]}
    sweep = {"name": "dos", "base": {**TINY, "val_split": 0.2, "epochs": 3}, "strategy": "tune",
             "tune": {"optimizers": ["bamsprod"], "lr_min": 1e-3, "lr_max": 1e-1, "n_lr": 4,
                      "stage1_epochs": 1, "hparams": hp}}
    t0 = time.perf_counter()
    dry = call("POST", f"{b.url}/api/sweeps?dry_run=true", json=sweep, headers=READ_H)
    dry_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    real = call("POST", f"{b.url}/api/sweeps", json=sweep, headers=WRITE_H)
    out["H2 tuned dry run 100x100x20"] = (
        f"dry run {dry.status_code} ({dry.json().get('count')} runs) in {dry_s * 1000:.0f} ms; "
        f"submit {real.status_code} in {(time.perf_counter() - t0) * 1000:.0f} ms")
    r = b.submit({**TINY, "train_subset": 2, "val_split": 0.5})
    out["M7 train_subset 2, val_split 0.5"] = f"{r.status_code} at " + ".".join(
        r.json()["detail"][0]["loc"])
    r = b.submit({"model": "resnet18", "dataset": "fashion-mnist",
                  "model_args": {"width_mult": 4}, "batch_size": 8192})
    out["M5 resnet18 x4 at batch 8192"] = f"{r.status_code} at " + ".".join(
        r.json()["detail"][0]["loc"])
    there = b.submit(TINY).json()["id"]
    a = call("GET", f"{b.url}/runs/{there}")
    z = call("GET", f"{b.url}/runs/999999")
    out["L GET /runs/{id} without a token"] = f"{a.status_code} / {z.status_code} (exists / not)"
    dup = raw_status(b, "Host: 127.0.0.1", "Host: evil.example", f"Authorization: Bearer {READ}")
    dup_a = raw_status(b, "Host: 127.0.0.1", f"Authorization: Bearer {READ}",
                       "Authorization: Bearer x")
    out["L duplicate Host / Authorization"] = f"{dup} / {dup_a}"
    head = [call("HEAD", f"{b.url}{p}", headers=READ_H).status_code
            for p in ("/api/runs", f"/api/runs/{there}", "/", f"/api/runs/{there}/events")]
    out["L HEAD on GET routes"] = "/".join(map(str, head))
    r = b.submit({**TINY, "data_dir": "/etc"})
    r2 = b.submit({**TINY, "data_dir": "~nosuchuser/x"})
    out["L data_dir /etc, ~nosuchuser"] = f"{r.status_code} / {r2.status_code}"
    name = "an-experiment-with-a-long-name-" * 3 + "\u202etxt.exe"
    b.submit({**TINY, "name": name})
    piped = b.cli("runs")
    out["L runs piped, bidi name"] = (
        "full name, escaped" if name.replace("\u202e", "\\u202e") in piped.stdout
        and "\u202e" not in piped.stdout and "…" not in piped.stdout else "CUT OR RAW")
    bad = [b.cli("runs", token=t) for t in ("tök", "a\nb")]
    out["L --token tök / newline"] = " / ".join(
        f"exit {p.returncode}" + (", traceback" if "Traceback" in p.stderr else "")
        + (", 'cannot reach'" if "cannot reach" in p.stderr else "") for p in bad)
    return out


def step_slow_clients(b: Backend) -> dict[str, str]:
    assert b.api is not None
    host, port = b.url.removeprefix("http://").split(":")
    head = (b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    before = rss_kb(b.api.pid)
    peak = [before]
    answers: list[bytes] = []

    def one() -> None:
        s = socket.create_connection((host, int(port)), timeout=30)
        try:
            s.sendall(head + b"x" * 990_000)
        except OSError:
            pass
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError:
            pass
        s.close()
        answers.append(got[:12])

    threads = [threading.Thread(target=one) for _ in range(300)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak.append(rss_kb(b.api.pid))
        time.sleep(0.05)
    took = time.monotonic() - t0
    time.sleep(1)
    after = rss_kb(b.api.pid)
    refused = sum(a.startswith(b"HTTP/1.1 401") for a in answers)
    out = {"M6 300 x 990 KB bodies, no token": (
        f"{refused}/300 got 401 on the headers, all closed in {took:.1f} s; API RSS "
        f"+{(max(peak) - before) / 1024:.0f} MB peak, +{(after - before) / 1024:.0f} MB after")}
    socks = []
    for _ in range(300):
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)
    t0 = time.monotonic()
    closed = 0
    for s in socks:
        try:
            s.settimeout(30)
            while s.recv(65536):
                pass
            closed += 1
        except OSError:
            pass
        s.close()
    out["M6 300 partial request heads"] = (
        f"{closed}/300 answered 408 and closed within {time.monotonic() - t0:.1f} s")
    return out


def step_sse_burst(b: Backend) -> dict[str, str]:
    run_id = b.submit(TINY).json()["id"]
    ticket = call("POST", f"{b.url}/api/runs/{run_id}/events/ticket",
                  headers=READ_H).json()["ticket"]
    codes: list[int] = []
    release = threading.Event()
    barrier = threading.Barrier(300)

    def open_one() -> None:
        barrier.wait()
        try:
            with httpx.stream("GET", f"{b.url}/api/runs/{run_id}/events",
                              params={"ticket": ticket}, timeout=30) as r:
                TALLY.saw(r)
                codes.append(r.status_code)
                if r.status_code == 200:
                    release.wait(30)
        except httpx.HTTPError:
            codes.append(-1)

    threads = [threading.Thread(target=open_one) for _ in range(300)]
    for t in threads:
        t.start()
    wait(lambda: len(codes) == 300, 60, "300 stream answers")
    release.set()
    for t in threads:
        t.join(30)
    return {"L 300 event streams at once (cap 200)":
            f"{codes.count(200)} accepted, {codes.count(503)} got 503 + Retry-After"}


def step_broker_hang(b: Backend) -> tuple[dict[str, str], list[int]]:
    before = call("GET", f"{b.url}/api/runs?limit=1", headers=READ_H).json()["total"]
    b.runs_before_hang = before
    resume = b.hang_broker()
    results: list[tuple[int, float, int | None]] = []
    try:
        def submit(i: int) -> tuple[int, float, int | None]:
            t0 = time.monotonic()
            try:
                r = b.submit({**TINY, "seed": i}, **{"Idempotency-Key": f"hang-{i}"})
                return r.status_code, time.monotonic() - t0, r.json().get("id")
            except httpx.TimeoutException:
                return -1, time.monotonic() - t0, None

        def health(_: int) -> tuple[int, str]:
            r = call("GET", f"{b.url}/api/health", timeout=30)
            return r.status_code, r.json()["status"]

        with cf.ThreadPoolExecutor(70) as pool:
            subs = [pool.submit(submit, i) for i in range(45)]
            hs = [pool.submit(health, i) for i in range(20)]
            time.sleep(0.5)
            lists = []
            for _ in range(10):
                t0 = time.monotonic()
                lists.append((call("GET", f"{b.url}/api/runs?limit=5", headers=READ_H
                                   ).status_code, time.monotonic() - t0))
            results = [f.result() for f in subs]
            health_codes = [f.result() for f in hs]
        retry = b.submit({**TINY, "seed": 3}, **{"Idempotency-Key": "hang-3"})
    finally:
        resume()
    ok = sum(c == 201 for c, _, _ in results)
    worst = max(t for _, t, _ in results)
    list_ms = sorted(t for _, t in lists)[int(0.9 * len(lists)) - 1] * 1000
    ids = [i for _, _, i in results if i is not None]
    states = sorted({h for _, h in health_codes})
    same = retry.json().get("id") == results[3][2]
    return {"H3 45 submits during a broker hang": (
        f"{ok}/45 got 201 (slowest {worst:.1f} s); runs list p90 {list_ms:.0f} ms; "
        f"20 health calls: {'/'.join(states)}"),
        "H3 retry with the same Idempotency-Key": (
            f"{retry.status_code}, {'the same run' if same else 'ANOTHER run'}")}, ids


def step_after_hang(b: Backend, ids: list[int]) -> dict[str, str]:
    wait(lambda: all(b.run(i)["state"] in TERMINAL for i in ids), 240,
         "the runs submitted in the hang")
    runs = [b.run(i) for i in ids]
    total = call("GET", f"{b.url}/api/runs?limit=1", headers=READ_H).json()["total"]
    once = sum(r["state"] == "succeeded" and r["attempts"] == 1 for r in runs)
    added = total - b.runs_before_hang
    return {"H3 after the broker resumed": (
        f"{once}/{len(ids)} trained once each; {added} runs added for 45 submits + 1 retry"
        + (" (nothing doubled)" if added == 45 else " (DOUBLED)"))}


def step_kernel(b: Backend, worker: subprocess.Popen, node: str
                ) -> tuple[dict[str, str], subprocess.Popen]:
    ext = Path(b.env["TORCH_EXTENSIONS_DIR"])

    def building() -> bool:
        return any(ext.glob("*/*/lock"))

    first = b.submit({**TINY, "optimizer": "bamsprod"}).json()["id"]
    wait(building, 120, "the kernel build to start", every=0.05)
    t0 = time.monotonic()
    call("POST", f"{b.url}/api/runs/{first}/cancel", headers=WRITE_H)
    wait(lambda: b.run(first)["state"] == "cancelled", 60, "the cancel", every=0.05)
    cancel_s = time.monotonic() - t0
    second = b.submit({**TINY, "optimizer": "bamsprod", "epochs": 2}).json()["id"]
    wait(building, 120, "the build to start again", every=0.05)
    b.kill(worker)
    t0 = time.monotonic()
    worker = b.worker(node)
    run = b.ended(second, 300)
    return {"H1 cancel during the kernel build": f"cancelled in {cancel_s:.1f} s",
            "H1 worker SIGKILLed mid-build, restarted": (
                f"run {run['state']} on '{run['device']}' {time.monotonic() - t0:.0f} s after "
                "the kill")}, worker


def step_namesake(b: Backend, node: str) -> dict[str, str]:
    run_id = b.submit({**SLOW, "epochs": 25}).json()["id"]
    wait(lambda: len(b.epochs(run_id)) >= 1, 120, "the first epoch")
    log = b.tmp / f"worker-{node.split('@')[0]}.log"
    size = log.stat().st_size if log.exists() else 0
    second = b.worker(node)  # the same name, while the first trains
    wait(lambda: "still beating" in log.read_text(errors="replace")[size:], 90,
         "the namesake's take-back")
    run = b.ended(run_id, 240)
    b.kill(second, signal.SIGTERM)
    second.wait(30)
    epochs = b.epochs(run_id)
    return {"M4 namesake worker started mid-run": (
        f"run {run['state']}, attempts {run['attempts']}, epochs 1..{max(epochs)} each once"
        if epochs == list(range(1, 26)) else f"EPOCHS {epochs}")}


def step_attempt_cap(b: Backend, worker: subprocess.Popen, node: str
                     ) -> tuple[dict[str, str], subprocess.Popen]:
    run_id = b.submit({**SLOW, "epochs": 60}).json()["id"]
    for attempt in (1, 2):
        wait(lambda a=attempt: (r := b.run(run_id))["state"] == "running"
             and r["attempts"] == a, 120, f"attempt {attempt}")
        b.kill(worker)
        worker = b.worker(node)
    run = b.ended(run_id, 120)
    return {"M5 worker SIGKILLed on each try (MAX_ATTEMPTS=2)": (
        f"run {run['state']} after {run['attempts']} attempts: "
        f"'{(run['error'] or '')[:40]}...'")}, worker


def step_stopped_worker(b: Backend, worker: subprocess.Popen) -> dict[str, str]:
    os.killpg(worker.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    h = wait(lambda: (h := b.health())["workers_seen"] == 0 and h, 60, "no worker seen")
    took = time.monotonic() - t0
    b.kill(worker)
    return {"L only worker SIGSTOPped": (
        f"health '{h['status']}' after {took:.0f} s: {h['worker']['detail'][:30]}... "
        "(`up` restarts it: tests/test_embedded.py)")}


def step_locked_db(b: Backend) -> dict[str, str]:
    holder = b.db_lock(15)
    t0 = time.monotonic()
    r = b.submit(TINY)
    took = time.monotonic() - t0
    holder.join(30)
    return {"M8 database locked by another process": (
        f"{r.status_code} JSON, Retry-After {r.headers.get('retry-after')}, after {took:.1f} s")}


def step_bulk_cancel(b: Backend) -> dict[str, str]:
    body = {"name": "big", "base": TINY, "grid": {"lr": [round(1e-4 * (i + 1), 6)
                                                        for i in range(250)]}, "n_seeds": 2}
    sweep = call("POST", f"{b.url}/api/sweeps", json=body, headers=WRITE_H).json()
    t0 = time.monotonic()
    r = call("POST", f"{b.url}/api/sweeps/{sweep['sweep']['id']}/cancel", headers=WRITE_H)
    return {"L cancel a 500-run sweep": (
        f"1 request, {r.json()['cancelled']} cancelled in {(time.monotonic() - t0) * 1000:.0f} ms")}


def run_mode(mode: str) -> dict[str, str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bamsprod-faults-{mode}-"))
    b = Backend(mode, tmp)
    results: dict[str, str] = {}

    def note(part: dict[str, str]) -> None:
        for k, v in part.items():
            print(f"  [{mode}] {k}: {v}", flush=True)
        results.update(part)

    try:
        b.start_api()
        note(step_hostile_requests(b))
        note(step_slow_clients(b))
        note(step_sse_burst(b))
        hang, ids = step_broker_hang(b)
        note(hang)
        node = f"faults@{mode}"
        worker = b.worker(node)
        note(step_after_hang(b, ids))
        part, worker = step_kernel(b, worker, node)
        note(part)
        note(step_namesake(b, node))
        part, worker = step_attempt_cap(b, worker, node)
        note(part)
        note(step_stopped_worker(b, worker))
        note(step_locked_db(b))
        note(step_bulk_cancel(b))
    except Exception as exc:  # report what was reached, and why it stopped
        results["(stopped)"] = f"{type(exc).__name__}: {exc}"
        print(f"  [{mode}] stopped: {exc}", flush=True)
    finally:
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="embedded,redis-pg")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "faults.json")
    args = parser.parse_args()
    t0 = time.monotonic()
    modes = [m for m in args.modes.split(",") if m]
    table = {m: run_mode(m) for m in modes}
    steps = list(dict.fromkeys(k for m in modes for k in table[m]))
    width = max(len(s) for s in steps)
    print(f"\n| {'step':<{width}} | " + " | ".join(modes) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(m) + 2) for m in modes) + "|")
    for s in steps:
        print(f"| {s:<{width}} | " + " | ".join(table[m].get(s, "–") for m in modes) + " |")
    print(f"\nHTTP answers: {TALLY.answers}; 5xx other than a documented 503: {len(TALLY.bad)}"
          f" {TALLY.bad[:5]}; documented 503s (JSON, Retry-After): {TALLY.documented_503}; "
          f"{time.monotonic() - t0:.0f} s in all")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"modes": modes, "steps": table, "answers": TALLY.answers,
                                    "bad_5xx": TALLY.bad,
                                    "documented_503": TALLY.documented_503}, indent=2))


if __name__ == "__main__":
    main()
