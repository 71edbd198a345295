"""Queue and live-update latency of the service, in both modes.

    .venv/bin/python benchmarks/queue_latency.py [--runs 10] [--modes embedded,redis-pg]

For each mode it starts ``bamsprod up`` (the API and one worker) on a free port, submits small
runs one after another over HTTP and measures:

- POST → started: the run's ``started_at - created_at`` (both stamped by this machine's clock:
  the API on insert, the worker on its claim), i.e. broker delivery + task start + claim;
- epoch commit → SSE: when the client reads an ``epoch`` event minus that epoch row's
  ``created_at`` (stamped in the transaction that commits it), i.e. the SSE poller's delay.

``embedded`` uses nothing but a temporary BAMSPROD_HOME (SQLite, SQLite broker);
``redis-pg`` a fresh PostgreSQL database on 127.0.0.1:5432 and a free Redis database number on
127.0.0.1:6379. Results (median, p95, n) go to stdout and ``artifacts/queue_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RUN = {"model": "mlp", "dataset": "digits", "epochs": 3, "model_args": {"width": 32},
       "batch_size": 256}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_pg_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a claimed, flushed Redis database number."""
    import psycopg
    import redis

    name = f"bamsprod_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = redis.Redis.from_url(f"{REDIS}/0")
    token = uuid.uuid4().hex
    db = next(n for n in range(1, 16) if admin.set(f"bamsprod-test:db:{n}", token, nx=True,
                                                    ex=3600))
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    try:
        yield {"BAMSPROD_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
               "BAMSPROD_BROKER_URL": f"{REDIS}/{db}"}
    finally:
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
        admin.delete(f"bamsprod-test:db:{db}")
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bamsprod_up(extra_env: dict[str, str]) -> Iterator[str]:
    """``bamsprod up`` on a free port with a temporary home; yields its URL once healthy."""
    with tempfile.TemporaryDirectory(prefix="bamsprod-bench-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
        env.update(BAMSPROD_HOME=str(Path(tmp) / "home"), OMP_NUM_THREADS="1", **extra_env)
        log = open(Path(tmp) / "up.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "up", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "up.log").read_text()[-3000:])
                try:
                    h = httpx.get(f"{url}/api/health", timeout=2).json()
                    if h.get("status") == "ok" and h.get("workers"):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)
            yield url
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def measure_run(client: httpx.Client) -> tuple[float, list[float]]:
    """Submit one run, follow its SSE stream to the end; (POST→start, [commit→SSE, ...])."""
    run = client.post("/api/runs", json=RUN).json()
    sse_lags: list[float] = []
    event = None
    with client.stream("GET", f"/api/runs/{run['id']}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "epoch":
                    sse_lags.append(time.time() - ts(data["created_at"]))
                elif event == "state" and data["state"] not in ("queued", "running"):
                    break
    run = client.get(f"/api/runs/{run['id']}").json()
    assert run["state"] == "succeeded", run
    return ts(run["started_at"]) - ts(run["created_at"]), sse_lags


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * p95, 1), "n": len(ordered)}


def bench(mode: str, runs: int) -> dict[str, dict[str, float]]:
    with (redis_pg_env() if mode == "redis-pg" else _nothing()) as env:
        with bamsprod_up(env) as url, httpx.Client(base_url=url, timeout=30) as client:
            measure_run(client)  # warm-up: first-use costs (imports, caches) are not latency
            starts, lags = [], []
            for _ in range(runs):
                start, sse = measure_run(client)
                starts.append(start)
                lags.extend(sse)
                time.sleep(0.5)  # the worker goes idle between runs, as a user would see it
    return {"post_to_started": summary(starts), "epoch_commit_to_sse": summary(lags)}


@contextmanager
def _nothing() -> Iterator[dict[str, str]]:
    yield {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--modes", default="embedded,redis-pg")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "queue_latency.json")
    args = parser.parse_args()
    results = {mode: bench(mode, args.runs) for mode in args.modes.split(",")}
    print(f"{'mode':<10} {'measure':<22} {'median ms':>10} {'p95 ms':>8} {'n':>4}")
    for mode, measures in results.items():
        for name, s in measures.items():
            print(f"{mode:<10} {name:<22} {s['median_ms']:>10} {s['p95_ms']:>8} {s['n']:>4}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "runs": args.runs,
                                    "results": results}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
