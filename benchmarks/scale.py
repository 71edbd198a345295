"""Scale-out: one 12-run sweep of short runs through 1 and then 2 worker processes.

    .venv/bin/python benchmarks/scale.py [--mode redis-pg|embedded] [--repeats 2] [--threads 1]
                                         [--json benchmarks/results/scale.json]

For each worker count it starts a fresh service: ``bamsprod serve`` on a free port and N
``bamsprod worker`` processes (``--mode redis-pg``, the default and the scale-out path: a fresh
PostgreSQL database on 127.0.0.1:5432 and a free Redis database number on 127.0.0.1:6379;
``--mode embedded``: a temporary BAMSPROD_HOME with SQLite and the SQLite broker). Once every
worker has announced itself it POSTs one sweep (the ``mlp`` on an MNIST subset, 4 optimizers
x 3 seeds, a few epochs each) and waits for every run to end. The wall time is the last run's
``finished_at`` minus the first run's ``created_at`` (both stamped by the service). Each worker
trains with ``--threads`` torch threads (``OMP_NUM_THREADS``), so 2 workers x 1 thread use the
same cores as 1 worker x 2 threads would; the ratio is wall(1 worker) / wall(2 workers).
Repeats alternate 1, 2, 1, 2, ... and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from queue_latency import free_port, redis_pg_env, ts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SWEEP = {
    "name": "scale benchmark",
    "base": {"model": "mlp", "model_args": {"width": 256}, "dataset": "mnist",
             "train_subset": 5000, "test_subset": 2000, "epochs": 3, "batch_size": 128,
             "device": "cpu", "tags": ["bench-scale"]},
    "grid": {"optimizer": ["bamsprod", "adam", "amsgrad", "sgd"]},
    "n_seeds": 3,
}
READY_SECONDS = 120.0
RUN_SECONDS = 1800.0


def _env(extra: dict[str, str], home: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(BAMSPROD_HOME=str(home), OMP_NUM_THREADS=str(threads), **extra)
    return env


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def service(mode: str, workers: int, threads: int) -> Iterator[str]:
    """API + ``workers`` worker processes on a fresh store; yields the URL once all are seen."""
    store = redis_pg_env() if mode == "redis-pg" else nullcontext({})
    with store as extra, tempfile.TemporaryDirectory(prefix="bamsprod-scale-") as tmp:
        env = _env(extra, Path(tmp) / "home", threads)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "service.log", "wb")  # noqa: SIM115
        procs: list[subprocess.Popen] = []
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bamsprod", "serve", "--port", str(port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
            _wait(url, procs, 0, tmp)  # the API migrates the database first
            for i in range(workers):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bamsprod", "worker", "--name", f"scale{i}@%h",
                     "--loglevel", "warning"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
            _wait(url, procs, workers, tmp)
            yield url
        finally:
            _stop(procs[1:])
            _stop(procs[:1])
            log.close()


def _wait(url: str, procs: list[subprocess.Popen], workers: int, tmp: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError((Path(tmp) / "service.log").read_text()[-3000:])
        try:
            h = httpx.get(f"{url}/api/health", timeout=3).json()
            if h.get("database", {}).get("ok") and h.get("workers_seen", 0) >= workers:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)


def run_sweep(url: str) -> dict[str, Any]:
    """POST the sweep, wait for every run to end; wall time and per-worker run counts."""
    with httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/api/sweeps", json=SWEEP)
        answer.raise_for_status()
        sweep_id = answer.json()["sweep"]["id"]
        run_ids = answer.json()["run_ids"]
        deadline = time.monotonic() + RUN_SECONDS
        while True:
            states = client.get(f"/api/sweeps/{sweep_id}").json()["states"]
            if sum(states.get(s, 0) for s in ("queued", "running")) == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sweep {sweep_id} did not finish: {states}")
            time.sleep(0.25)
        runs = [client.get(f"/api/runs/{i}").json() for i in run_ids]
    bad = [r for r in runs if r["state"] != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not succeed: {bad[0].get('error')}")
    start = min(ts(r["created_at"]) for r in runs)
    end = max(ts(r["finished_at"]) for r in runs)
    per_worker: dict[str, int] = {}
    for r in runs:
        per_worker[r["worker_host"]] = per_worker.get(r["worker_host"], 0) + 1
    train = sum(ts(r["finished_at"]) - ts(r["started_at"]) for r in runs)
    return {"runs": len(runs), "wall_seconds": end - start, "run_seconds_sum": train,
            "runs_per_worker": per_worker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("redis-pg", "embedded"), default="redis-pg")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    trials: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for rep in range(args.repeats):
        for n in counts:
            with service(args.mode, n, args.threads) as url:
                result = run_sweep(url)
            trials[n].append(result)
            print(f"repeat {rep + 1}: {n} worker(s): {result['wall_seconds']:.1f} s "
                  f"({result['runs_per_worker']})", flush=True)
    medians = {n: statistics.median(t["wall_seconds"] for t in trials[n]) for n in counts}
    base = medians[counts[0]]
    print(f"\n{'workers':>8}{'median wall s':>15}{'speed-up':>10}{'efficiency':>12}")
    for n in counts:
        sp = base / medians[n]
        print(f"{n:>8}{medians[n]:>15.1f}{sp:>9.2f}x{sp / (n / counts[0]):>11.0%}")
    payload = {
        "benchmark": "scale",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": args.mode,
        "threads_per_worker": args.threads,
        "sweep": SWEEP,
        "trials": {str(n): t for n, t in trials.items()},
        "median_wall_seconds": {str(n): m for n, m in medians.items()},
        "ratio": {f"{counts[0]}/{n}": base / medians[n] for n in counts[1:]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_end": os.getloadavg()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
