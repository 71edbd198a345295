"""API under load: concurrent clients against a server holding 1,000 runs x 100 epochs.

    .venv/bin/python benchmarks/api_load.py [--seconds 30] [--clients 50] [--quick]
                                            [--db postgresql|sqlite] [--think 0]

1. A fresh database (``postgresql``: a new database on 127.0.0.1:5432 and a free Redis
   database number on 127.0.0.1:6379, the scale-out set-up; ``sqlite``: the embedded default,
   SQLite file and SQLite broker), migrated and seeded with ``--runs`` finished runs of
   ``--epochs`` epochs each by bulk inserts (SQLAlchemy Core ``executemany``).
2. ``bamsprod up`` on a free port: the API (uvicorn, one process) and one real Celery worker.
3. A live run is submitted over HTTP: the worker trains it and writes an epoch every fraction
   of a second for the whole measurement (it is cancelled at the end).
4. ``--clients`` asyncio clients (one shared ``httpx.AsyncClient``) loop for ``--seconds``, each
   request picking an endpoint in turn: ``list`` (a page of 50 runs, random offset / sort /
   filter), ``run`` (one run), ``metrics`` (every epoch of a run) and ``events`` (the SSE stream:
   of a finished run from its last epoch, which sends the final state and ends; or of the live
   run, timed to its first event), then waiting ``--think`` seconds on average (0: back to
   back; with a think time, the clients' first requests are spread over the first one too).

Prints requests/s, p50/p95/p99 latency and errors (non-2xx or exceptions) per endpoint and
overall, the CPU seconds the API, the worker and this load generator used (the API's per
request is the number that does not depend on what else the machine runs), and writes them to
``--out`` (default ``artifacts/api_load.json``; the server's log goes beside it,
``api_load-server.log``).

Reading the numbers: with ``--think 0`` the clients are a closed loop, always ``--clients``
requests in flight, so latency = clients / throughput (Little's law) whatever the code does;
50 clients at p95 < 100 ms would need ~500+ requests/s from one Python process sharing two cores
with a training worker and this generator. ``--think 1`` is closer to 50 people on the
dashboard (the runs table refreshes every 2 s; a run page holds one event stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from queue_latency import free_port, redis_pg_env  # noqa: E402

ENDPOINTS = ("list", "run", "metrics", "events")
OPTIMIZERS = ("bamsprod", "bop", "adam", "amsgrad", "adabound", "sgd")
SORTS = ("id", "best_test_acc", "created_at", "name", "last_test_acc")
# The live run: small and quick, so the worker writes epochs all along.
LIVE_RUN = {"model": "mlp", "dataset": "digits", "epochs": 1000, "model_args": {"width": 64},
            "batch_size": 64, "name": "live (api_load)"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[str, int]:
    """``{"api": pid, "worker": pid}`` of a ``bamsprod up`` process."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out["api" if "uvicorn" in cmd else "worker"] = int(child)
    return out


# ------------------------------------------------------------------------------ services


@contextmanager
def database(kind: str, home: Path) -> Iterator[dict[str, str]]:
    """The ``BAMSPROD_*`` environment of a fresh database (and broker) of ``kind``."""
    if kind == "sqlite":
        yield {"BAMSPROD_DATABASE_URL": f"sqlite:///{home / 'bamsprod.db'}"}
        return
    with redis_pg_env() as env:
        try:
            yield env
        finally:
            from bamsprod.app.store.engine import (
                dispose_engine,  # this process seeded it: close its pool first
            )

            dispose_engine(env["BAMSPROD_DATABASE_URL"])


def seed(url: str, n_runs: int, n_epochs: int, sweep_runs: int = 0) -> float:
    """Migrate ``url`` and bulk-insert finished runs with their epochs (the first
    ``sweep_runs`` of them in the database's first sweep); returns seconds. Synthetic history
    goes straight into the tables, not through ``app.store``: a million rows in bulk."""
    import sqlalchemy as sa

    from bamsprod.app.store.engine import get_engine, init_db
    from bamsprod.app.store.tables import EpochMetric, Run, Sweep, utcnow
    from bamsprod.core.config import RunConfig

    t0 = time.perf_counter()
    init_db(url)
    rng = random.Random(0)
    start = datetime.now(UTC) - timedelta(days=7)
    runs: list[dict[str, Any]] = []
    for i in range(n_runs):
        opt = OPTIMIZERS[i % len(OPTIMIZERS)]
        config = RunConfig(name=f"{opt} seed={i // len(OPTIMIZERS)}", optimizer=opt,
                           epochs=n_epochs, seed=i // len(OPTIMIZERS), tags=["load"])
        created = start + timedelta(minutes=i)
        best = rng.uniform(0.8, 0.99)
        runs.append({
            "id": i + 1, "name": config.name, "tags": config.tags, "state": "succeeded",
            "config": config.model_dump(mode="json"), "schema_version": config.schema_version,
            "config_hash": config.config_hash(), "seed": config.seed, "optimizer": opt,
            "model": config.model, "dataset": config.dataset, "epochs": n_epochs,
            "created_at": created, "queued_at": created, "started_at": created,
            "finished_at": created + timedelta(minutes=5), "heartbeat_at": created,
            "worker_host": "seed@load", "device": "cpu", "cancel_requested": False,
            "attempts": 1, "retries": 0, "epochs_done": n_epochs, "last_epoch": n_epochs,
            "last_test_acc": best - 0.01, "last_train_loss": 0.1, "best_test_acc": best,
            "best_epoch": n_epochs - 3, "final_quant_error": 0.05, "sweep_id": None,
        })
    engine = get_engine(url)
    with engine.begin() as conn:
        if sweep_runs:
            sweep_id = conn.execute(sa.insert(Sweep.__table__).values(
                name="scale sweep", definition={"grid": {"optimizer": list(OPTIMIZERS)}},
                n_runs=sweep_runs, created_at=utcnow()).returning(Sweep.__table__.c.id)
            ).scalar_one()
            for run in runs[:sweep_runs]:
                run["sweep_id"] = sweep_id
        conn.execute(sa.insert(Run.__table__), runs)
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequence past them
            conn.execute(sa.text("SELECT setval('run_id_seq', :n)"), {"n": n_runs})
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for run in runs:
            for e in range(1, n_epochs + 1):
                acc = run["best_test_acc"] * (1 - 0.5 ** (e / 5))
                batch.append({
                    "run_id": run["id"], "epoch": e, "train_loss": 2.3 / e, "train_acc": acc,
                    "test_loss": 2.4 / e, "test_acc": acc - 0.01, "quant_error": 0.3 / e,
                    "quant_error_layers": {"fc1": 0.3 / e, "fc2": 0.2 / e},
                    "flip_rate": 0.01 / e, "lr": 1e-3, "seconds": 0.5,
                    "created_at": run["started_at"] + timedelta(seconds=3 * e),
                })
            if len(batch) >= 20_000:
                conn.execute(sa.insert(EpochMetric.__table__), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(EpochMetric.__table__), batch)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
    return time.perf_counter() - t0


@contextmanager
def bamsprod_up(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bamsprod up`` (API + one worker) on a free port; yields (URL, process) once healthy."""
    port = free_port()
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bamsprod", "up", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-3000:])
            try:
                health = httpx.get(f"{url}/api/health", timeout=2).json()
                if health.get("status") == "ok" and health.get("workers"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()


# ----------------------------------------------------------------------------------- load


class Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        self.errors: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.samples: dict[str, list[str]] = {e: [] for e in ENDPOINTS}

    def error(self, endpoint: str, what: str) -> None:
        self.errors[endpoint] += 1
        if len(self.samples[endpoint]) < 5:
            self.samples[endpoint].append(what)


async def one_request(client: httpx.AsyncClient, endpoint: str, rng: random.Random,
                      n_runs: int, n_epochs: int, live: int) -> httpx.Response | None:
    """Send one request of kind ``endpoint``; returns the response (body read) or None for a
    live event stream read up to its first event."""
    run_id = rng.randint(1, n_runs)
    if endpoint == "list":
        params: dict[str, Any] = {"limit": 50, "offset": rng.randrange(0, n_runs - 50),
                                  "sort": rng.choice(SORTS), "order": rng.choice(("asc", "desc"))}
        if rng.random() < 0.3:
            params["optimizer"] = rng.choice(OPTIMIZERS)
            params["offset"] = rng.randrange(0, n_runs // len(OPTIMIZERS) - 50)
        return await client.get("/api/runs", params=params)
    if endpoint == "run":
        return await client.get(f"/api/runs/{run_id}")
    if endpoint == "metrics":
        return await client.get(f"/api/runs/{run_id}/metrics")
    if rng.random() < 0.2:  # the live run: the first event (its state) is the answer
        async with client.stream("GET", f"/api/runs/{live}/events") as r:
            if r.status_code != 200:
                await r.aread()
                return r
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    return None
        raise RuntimeError("live stream ended without an event")
    async with client.stream("GET", f"/api/runs/{run_id}/events",
                             params={"after": n_epochs}) as r:
        body = await r.aread()
        if r.status_code == 200 and b'"state":"succeeded"' not in body:
            raise RuntimeError("finished run's stream lacks its final state")
        return r


async def drive(url: str, clients: int, seconds: float, think: float, n_runs: int,
                n_epochs: int, live: int) -> tuple[Stats, float]:
    stats = Stats()
    # Idle connections expire on the client before uvicorn's 5 s keep-alive closes them: no
    # request is ever sent on a connection the server is closing at that moment.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        deadline = time.perf_counter() + seconds

        async def user(k: int) -> None:
            rng = random.Random(k)
            i = k  # each client starts at a different endpoint, then takes them in turn
            if think:  # people arrive spread out, not all in the same millisecond
                await asyncio.sleep(rng.uniform(0, think))
            while time.perf_counter() < deadline:
                endpoint = ENDPOINTS[i % len(ENDPOINTS)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = await one_request(client, endpoint, rng, n_runs, n_epochs, live)
                except Exception as exc:  # count it, go on
                    stats.error(endpoint, f"{type(exc).__name__}: {exc}")
                else:
                    if r is not None and r.status_code >= 400:
                        stats.error(endpoint, f"{r.status_code} {r.text[:200]}")
                    else:
                        stats.latencies[endpoint].append(time.perf_counter() - t0)
                if think:
                    await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))

        t0 = time.perf_counter()
        await asyncio.gather(*(user(k) for k in range(clients)))
        return stats, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summarise(stats: Stats, elapsed: float) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    every: list[float] = []
    for e in ENDPOINTS:
        lat = stats.latencies[e]
        every += lat
        rows[e] = row(lat, stats.errors[e], elapsed)
        rows[e]["error_samples"] = stats.samples[e]
    rows["overall"] = row(every, sum(stats.errors.values()), elapsed)
    return rows


def row(lat: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    ms = [1000 * x for x in lat]
    return {"requests": len(lat) + errors, "rps": (len(lat) + errors) / elapsed,
            "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "errors": errors}


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    print(f"{'endpoint':<10}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'p99 ms':>9}{'errors':>8}")
    for name, r in rows.items():
        print(f"{name:<10}{r['requests']:>10}{r['rps']:>9.1f}{f(r['p50_ms']):>9}"
              f"{f(r['p95_ms']):>9}{f(r['p99_ms']):>9}{r['errors']:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="5 s instead of --seconds")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean pause between a client's requests, seconds (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "api_load.json")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bamsprod-load-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with database(args.db, home) as db_env:
            took = seed(db_env["BAMSPROD_DATABASE_URL"], args.runs, args.epochs)
            print(f"seeded {args.runs} runs x {args.epochs} epochs into {args.db} "
                  f"in {took:.1f} s")
            env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
            env.update(BAMSPROD_HOME=str(home), OMP_NUM_THREADS="1", **db_env)
            with bamsprod_up(env, args.out.with_name("api_load-server.log")) as (url, up):
                pids = children(up.pid)
                with httpx.Client(base_url=url, timeout=30,
                                  headers={"X-Requested-With": "bench"}) as c:
                    live = c.post("/api/runs", json=LIVE_RUN).json()["id"]
                    while c.get(f"/api/runs/{live}").json()["epochs_done"] < 1:
                        time.sleep(0.2)
                    print(f"server {url}; live run {live} training; {args.clients} clients "
                          f"for {seconds:g} s (think {args.think:g} s)")
                    load_before = os.getloadavg()[0]
                    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                    cpu0["load generator"] = time.process_time()
                    stats, elapsed = asyncio.run(drive(url, args.clients, seconds, args.think,
                                                       args.runs, args.epochs, live))
                    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
                    cpu["load generator"] = time.process_time() - cpu0["load generator"]
                    written = c.get(f"/api/runs/{live}").json()["epochs_done"]
                    c.post(f"/api/runs/{live}/cancel")
    rows = summarise(stats, elapsed)
    print_table(rows)
    n = rows["overall"]["requests"]
    api_ms = 1000 * cpu["api"] / max(1, n)
    print(f"the worker wrote {written} epochs of the live run meanwhile")
    print(f"CPU used: API {cpu['api']:.1f} s ({api_ms:.1f} ms per request), worker "
          f"{cpu['worker']:.1f} s, load generator {cpu['load generator']:.1f} s, of "
          f"{elapsed:.1f} s x {os.cpu_count()} cores; load average before: {load_before:.1f}")
    for name, r in rows.items():
        for sample in r.get("error_samples", []):
            print(f"  {name} error: {sample}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "db": args.db, "clients": args.clients, "seconds": seconds, "think": args.think,
        "runs": args.runs, "epochs": args.epochs, "cpu_count": os.cpu_count(),
        "live_run_epochs_written": written, "endpoints": rows,
        "cpu_seconds": cpu, "api_cpu_ms_per_request": api_ms, "elapsed": elapsed,
        "load_average_before": load_before,
    }, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
