"""Sweep scale: 10,000 runs x 100 epochs, a 200-run sweep, and 100 live event streams.

    .venv/bin/python benchmarks/sweep_scale.py [--runs 10000] [--epochs 100] [--sweep-runs 200]
                                               [--subscribers 100] [--db postgresql|sqlite]
                                               [--quick] [--json [PATH]]

1. A fresh database (``api_load.database``) seeded by bulk inserts with ``--runs`` finished
   runs x ``--epochs`` epochs (1M metric rows at the defaults); the first ``--sweep-runs`` of
   them become one sweep.
2. ``bamsprod up`` (the API, one uvicorn process, and one real Celery worker) on a free port.
3. Reads, one at a time over keep-alive HTTP (median / p95):
   - runs table: ``GET /api/runs`` as the runs page asks it (a page of 50, a random sort and
     order, an optimizer or state filter half the time, a random offset);
   - compare: ``GET /api/compare?sweep=<id>&group_by=optimizer&baseline=adam`` computed
     (``If-None-Match`` never sent), and revalidated (the ETag's 304);
   - the compare page of that sweep in headless Chromium, first visit (a new browser context:
     no cache) to its charts rendered.
4. Fan-out: ``--subscribers`` SSE clients (asyncio, one ``httpx.AsyncClient``) follow a live
   run the worker trains; each epoch event's delay is its arrival time minus the epoch's stored
   ``created_at`` (same clock). Meanwhile ``/api/health`` is polled every 100 ms.
5. The API process's resident memory (``VmRSS``) is sampled every 0.2 s throughout; its peak
   is reported.

Targets (2 cores): runs table p95 < 50 ms; compare < 500 ms; page < 3 s; epoch to every
subscriber p95 <= 1 s; health p95 < 100 ms meanwhile; API RSS < 300 MB. Timings depend on the
machine's load: rerun on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from api_load import LIVE_RUN, OPTIMIZERS, bamsprod_up, children, database, seed  # noqa: E402
from browser_fixtures import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

SORTS = ("id", "best_test_acc", "created_at", "name", "last_test_acc", "optimizer")
TARGETS = {"runs table p95 ms": 50, "compare median ms": 500, "compare page ms": 3000,
           "epoch to subscribers p95 ms": 1000, "health p95 ms": 100, "api peak rss MB": 300}


def stats_ms(samples: list[float]) -> dict[str, Any]:
    """Median / p95 / max in ms of samples in seconds."""
    ms = sorted(1000 * s for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(p95, 1),
            "max_ms": round(ms[-1], 1), "n": len(ms)}


class RssSampler(threading.Thread):
    """Peak ``VmRSS`` of one process, sampled every ``every`` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kb = pid, every, 0
        self.halt = threading.Event()

    def sample(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak_kb = max(self.peak_kb, self.sample())
            self.halt.wait(self.every)

    def stop(self) -> float:
        self.halt.set()
        self.join()
        return round(self.peak_kb / 1024, 1)


def timed(c: httpx.Client, path: str, params: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = c.get(path, params=params, headers=headers)
    took = time.perf_counter() - t0
    if r.status_code >= 400:
        raise SystemExit(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
    return took, r


def runs_table(c: httpx.Client, n_runs: int, repeats: int) -> dict[str, Any]:
    rng = random.Random(0)
    times = []
    for i in range(repeats + 5):  # the first 5 warm the server's pool and caches, not timed
        params: dict[str, Any] = {"limit": 50, "sort": rng.choice(SORTS),
                                  "order": rng.choice(("asc", "desc"))}
        shown = n_runs
        if rng.random() < 0.5:
            params["optimizer"] = rng.choice(OPTIMIZERS)
            shown = n_runs // len(OPTIMIZERS)
        params["offset"] = rng.randrange(0, max(1, min(shown - 50, 2000)))
        took = timed(c, "/api/runs", params)[0]
        if i >= 5:
            times.append(took)
    return stats_ms(times)


def compare(c: httpx.Client, sweep_id: int, repeats: int) -> dict[str, Any]:
    params = {"sweep": sweep_id, "group_by": "optimizer", "baseline": "adam"}
    first, r = timed(c, "/api/compare", params)
    times = []
    for _ in range(repeats):
        took, r = timed(c, "/api/compare", params)
        times.append(took)
    assert r is not None
    etag = r.headers.get("etag")
    revalidated = []
    if etag:
        for _ in range(repeats):
            t0 = time.perf_counter()
            r304 = c.get("/api/compare", params=params, headers={"If-None-Match": etag})
            revalidated.append(time.perf_counter() - t0)
            if r304.status_code != 304:
                raise SystemExit(f"expected a 304 for a finished sweep, got {r304.status_code}")
    groups = len(r.json()["groups"])
    if groups != len(OPTIMIZERS):
        raise SystemExit(f"expected {len(OPTIMIZERS)} groups, got {groups}")
    return {"first_ms": round(1000 * first, 1), "computed": stats_ms(times),
            "revalidated_304": stats_ms(revalidated) if etag else None,
            "bytes": len(r.content), "groups": groups}


def compare_page(url: str, loads: int) -> dict[str, Any]:
    """First-visit load times of the compare page (a fresh browser context each)."""
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(loads):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.goto(url)
                page.wait_for_function("() => window.__bamsprodRendered !== undefined",
                                       timeout=60_000)
                times.append(float(page.evaluate("() => window.__bamsprodRendered")) / 1000)
                rows = page.locator("#summary-body tr").count()
                if rows != len(OPTIMIZERS):
                    raise SystemExit(f"expected {len(OPTIMIZERS)} groups shown, saw {rows}")
                context.close()
        finally:
            browser.close()
    return stats_ms(times)


async def fan_out(url: str, run_id: int, subscribers: int, seconds: float
                  ) -> dict[str, Any]:
    """``subscribers`` streams of ``run_id`` for ``seconds``: each epoch's delivery delay, and
    ``/api/health`` latency meanwhile."""
    delays: list[float] = []
    seen: list[int] = [0] * subscribers
    health: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=subscribers + 4)
    timeout = httpx.Timeout(30.0, read=60.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        deadline = time.monotonic() + seconds

        async def follow(k: int) -> None:
            try:
                async with client.stream("GET", f"/api/runs/{run_id}/events") as r:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {(await r.aread())[:200]!r}")
                        return
                    event = None
                    async for line in r.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "epoch":
                            created = datetime.fromisoformat(json.loads(line[5:])["created_at"])
                            delays.append(time.time() - created.timestamp())
                            seen[k] += 1
                        if time.monotonic() > deadline:
                            return
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        async def poll_health() -> None:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                r = await client.get("/api/health")
                health.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"health {r.status_code}")
                await asyncio.sleep(0.1)

        await asyncio.gather(*(follow(k) for k in range(subscribers)), poll_health())
    return {"subscribers": subscribers, "epochs_per_subscriber": [min(seen), max(seen)],
            "delivery": stats_ms(delays) if delays else None,
            "health": stats_ms(health), "errors": len(errors), "error_samples": errors[:5]}


def check(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target beside its measurement."""
    fan = result["fan_out"]
    measured = {
        "runs table p95 ms": result["runs_table"]["p95_ms"],
        "compare median ms": result["compare"]["computed"]["median_ms"],
        "compare page ms": result["compare_page"]["median_ms"] if result["compare_page"] else None,
        "epoch to subscribers p95 ms": fan["delivery"]["p95_ms"] if fan["delivery"] else None,
        "health p95 ms": fan["health"]["p95_ms"],
        "api peak rss MB": result["api_peak_rss_mb"],
    }
    return {k: {"measured": v, "target": TARGETS[k],
                "met": v is not None and v < TARGETS[k]} for k, v in measured.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--sweep-runs", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="fan-out duration")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--loads", type=int, default=3, help="compare page first visits")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 runs x 20 epochs, 20 subscribers, 8 s, 10 repeats")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.epochs, args.subscribers = 1000, 20, 20
        args.seconds, args.repeats, args.loads = 8.0, 10, 1
    args.sweep_runs = min(args.sweep_runs, args.runs)
    load_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory(prefix="bamsprod-scale-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with database(args.db, home) as db_env:
            took = seed(db_env["BAMSPROD_DATABASE_URL"], args.runs, args.epochs,
                        sweep_runs=args.sweep_runs)
            sweep_id = 1  # a fresh database: seed's sweep is its first
            print(f"seeded {args.runs} runs x {args.epochs} epochs into {args.db} in {took:.0f} s;"
                  f" sweep {sweep_id} holds {args.sweep_runs}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
            # the compare cache off: every compare below is computed (the 304 is timed apart)
            env.update(BAMSPROD_HOME=str(home), OMP_NUM_THREADS="1",
                       BAMSPROD_COMPARE_CACHE_BYTES="0", **db_env)
            with bamsprod_up(env, home / "server.log") as (url, up):
                rss = RssSampler(children(up.pid)["api"])
                rss.start()
                with httpx.Client(base_url=url, timeout=60) as c:
                    table = runs_table(c, args.runs, args.repeats)
                    print(f"runs table      {table}")
                    comp = compare(c, sweep_id, max(3, args.repeats // 4))
                    print(f"compare         {comp['computed']} ({comp['bytes'] / 1024:.0f} KiB)")
                    page = None if args.no_browser else compare_page(
                        f"{url}/compare?sweep={sweep_id}&group_by=optimizer&baseline=adam",
                        args.loads)
                    print(f"compare page    {page}")
                    live = c.post("/api/runs", json=LIVE_RUN,
                                  headers={"X-Requested-With": "bench"}).json()["id"]
                    while c.get(f"/api/runs/{live}").json()["epochs_done"] < 1:
                        time.sleep(0.2)
                    fan = asyncio.run(fan_out(url, live, args.subscribers, args.seconds))
                    print(f"fan-out         {fan}")
                    c.post(f"/api/runs/{live}/cancel", headers={"X-Requested-With": "bench"})
                peak = rss.stop()
    result = {
        "benchmark": "sweep_scale", "db": args.db, "runs": args.runs, "epochs": args.epochs,
        "sweep_runs": args.sweep_runs, "quick": args.quick,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load_before},
        "seed_seconds": round(took, 1), "runs_table": table, "compare": comp,
        "compare_page": page, "fan_out": fan, "api_peak_rss_mb": peak,
    }
    result["targets"] = check(result)
    print(f"\n{'measure':30} {'measured':>10} {'target':>8}  met")
    for name, t in result["targets"].items():
        print(f"{name:30} {t['measured'] if t['measured'] is not None else '-':>10} "
              f"{'< ' + str(t['target']):>8}  {'yes' if t['met'] else 'NO'}")
    if args.json is not None:
        out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / (
            f"sweep_scale-{args.db}{'-quick' if args.quick else ''}.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {out}")


if __name__ == "__main__":
    main()
