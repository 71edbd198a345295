"""Read paths side by side: bamsprod's API against an MLflow 3.17.2 tracking server, in one run.

    .venv/bin/python benchmarks/read_paths.py [--runs 50] [--epochs 100] [--db sqlite|postgresql]
                                              [--compare-runs 50] [--repeats 20] [--quick]
                                              [--no-mlflow] [--json [PATH]]

1. bamsprod: a fresh database (``sqlite`` file, or a new PostgreSQL database on 127.0.0.1)
   seeded with ``--runs`` finished runs x ``--epochs`` epochs (``api_load.seed``: 8 metrics an
   epoch), served by one uvicorn process with the compare cache off, so every compare is
   computed (the ETag 304 is timed on its own line).
2. MLflow: its own virtualenv (``mlflow==3.17.2``, made once under ``$BAMSPROD_BENCH_CACHE``,
   default ``~/.cache/bamsprod-bench``; never the project's venv), ``mlflow server`` on a
   SQLite backend and a free 127.0.0.1 port, seeded over its REST API with the same workload
   (one run per bamsprod run: params optimizer/seed/lr, the same 8 metrics per epoch).
3. Each read is timed ``--repeats`` times over keep-alive HTTP from this process (httpx, gzip
   accepted), median and p95:

   - history: one run's metric history. bamsprod: GET /api/runs/{id}/metrics (all 8 metrics);
     MLflow: GET metrics/get-history once per metric (8 requests), and as a second line for
     test_acc alone (1 request, an eighth of the data: in MLflow's favour).
   - list: runs filtered by optimizer, sorted by accuracy, a page of 50. bamsprod: GET
     /api/runs; MLflow: POST runs/search (params.optimizer filter, metrics.test_acc order).
   - compare: what a compare view of ``--compare-runs`` runs needs. bamsprod: one GET
     /api/compare (grouped by optimizer; all 8 metrics' mean/std/n per epoch and the measures);
     MLflow: runs/search for their params plus get-history of test_acc and train_loss per run
     (2 x runs requests, the issue's baseline), and as a second line MLflow's own chart read,
     get-history-bulk-interval (2 requests of up to 100 runs each).

Prints a table and the ratios MLflow / bamsprod; ``--json`` writes it (default
``benchmarks/results/read_paths-<db>[-quick].json``). Timings depend on the machine's load:
rerun on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from api_load import OPTIMIZERS, database, seed  # noqa: E402
from queue_latency import free_port  # noqa: E402

MLFLOW_VERSION = "3.17.2"
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "quant_error", "flip_rate",
           "lr", "seconds")
CACHE = Path(os.environ.get("BAMSPROD_BENCH_CACHE", Path.home() / ".cache" / "bamsprod-bench"))
READY_SECONDS = 120.0


# ------------------------------------------------------------------------------------ servers


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url}: not ready after {READY_SECONDS:g} s; see {log}")


@contextmanager
def server(cmd: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[None]:
    """Run ``cmd`` (its own process group) until the block ends."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
        try:
            wait_ready(ready, proc, log)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bamsprod_server(home: Path, db_env: dict[str, str]) -> tuple[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env.update(db_env, BAMSPROD_HOME=str(home), BAMSPROD_COMPARE_CACHE_BYTES="0",
               PYTHONPATH=str(ROOT))
    env.setdefault("BAMSPROD_BROKER_URL", "memory://")
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bamsprod.app.web.main:create_app",
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return url, server(cmd, env, f"{url}/api/runs?limit=1", home / "bamsprod-server.log")


def mlflow_venv() -> Path:
    """The python of a virtualenv holding mlflow==3.17.2, made on first use."""
    venv = CACHE / f"mlflow-{MLFLOW_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "mlflow").exists():
        print(f"making {venv} (pip install mlflow=={MLFLOW_VERSION}; once)", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}"],
                       check=True)
    return python


def mlflow_server(python: Path, home: Path) -> tuple[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    cmd = [str(python.parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
           "--default-artifact-root", str(home / "mlartifacts")]
    return url, server(cmd, env, f"{url}/health", home / "mlflow-server.log")


# The seeder runs in MLflow's venv: the same workload as api_load.seed, over the REST API.
MLFLOW_SEED = textwrap.dedent(
    """
    import json, random, sys, time
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    url, n_runs, n_epochs, optimizers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        sys.argv[4].split(",")
    client = MlflowClient(url)
    exp = client.create_experiment("read_paths")
    rng, now, ids = random.Random(0), int(time.time() * 1000), []
    for i in range(n_runs):
        opt = optimizers[i % len(optimizers)]
        run = client.create_run(exp, run_name=f"{opt} seed={i // len(optimizers)}")
        rid = run.info.run_id
        best = rng.uniform(0.8, 0.99)
        params = [Param("optimizer", opt), Param("seed", str(i // len(optimizers))),
                  Param("lr", "0.001")]
        metrics = []
        for e in range(1, n_epochs + 1):
            acc = best * (1 - 0.5 ** (e / 5))
            values = {"train_loss": 2.3 / e, "train_acc": acc, "test_loss": 2.4 / e,
                      "test_acc": acc - 0.01, "quant_error": 0.3 / e, "flip_rate": 0.01 / e,
                      "lr": 1e-3, "seconds": 0.5}
            metrics += [Metric(k, v, now + e, e) for k, v in values.items()]
        for k in range(0, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[k:k + 1000], params=params if k == 0 else [])
        client.set_terminated(rid)
        ids.append(rid)
    print(json.dumps({"experiment_id": exp, "run_ids": ids}))
    """
)


def seed_mlflow(python: Path, url: str, n_runs: int, n_epochs: int) -> dict[str, Any]:
    out = subprocess.run([str(python), "-c", MLFLOW_SEED, url, str(n_runs), str(n_epochs),
                          ",".join(OPTIMIZERS)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median / p95 / min milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ms.append(1000 * (time.perf_counter() - t0))
    ms.sort()
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {"median_ms": statistics.median(ms), "p95_ms": p95, "min_ms": ms[0], "n": len(ms)}


def ok(r: httpx.Response) -> httpx.Response:
    if r.status_code not in (200, 304):
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}")
    return r


def bamsprod_reads(c: httpx.Client, n_runs: int, compare_runs: int, repeats: int
                   ) -> dict[str, dict[str, Any]]:
    rng = random.Random(1)
    ids = ",".join(str(i) for i in range(1, compare_runs + 1))
    compare = f"/api/compare?runs={ids}&group_by=optimizer"
    first = ok(c.get(compare))
    tag = first.headers.get("etag", "")
    deep = max(0, n_runs - 100)
    reads = {
        "history": lambda: ok(c.get(f"/api/runs/{rng.randint(1, n_runs)}/metrics")),
        "list": lambda: ok(c.get("/api/runs", params={
            "optimizer": "adam", "sort": "best_test_acc", "order": "desc", "limit": 50})),
        "list, deep page": lambda: ok(c.get("/api/runs", params={
            "sort": "created_at", "order": "desc", "limit": 50, "offset": deep})),
        "compare": lambda: ok(c.get(compare)),
        "compare, include=runs": lambda: ok(c.get(compare + "&include=runs")),
        "compare, ETag revalidated (304)": lambda: ok(
            c.get(compare, headers={"If-None-Match": tag})),
    }
    out = {name: timed(fn, repeats) for name, fn in reads.items()}
    out["compare"]["bytes"] = len(first.content)
    out["compare"]["bytes_on_wire"] = int(first.headers.get("content-length", 0))
    return out


def mlflow_reads(c: httpx.Client, seeded: dict[str, Any], compare_runs: int, repeats: int
                 ) -> dict[str, dict[str, Any]]:
    rng = random.Random(1)
    run_ids, exp = seeded["run_ids"], seeded["experiment_id"]
    chosen = run_ids[:compare_runs]

    def history(rid: str, key: str) -> Any:
        return ok(c.get("/api/2.0/mlflow/metrics/get-history",
                        params={"run_id": rid, "metric_key": key, "max_results": 25000}))

    def search(filter_string: str, order_by: list[str], max_results: int) -> Any:
        return ok(c.post("/api/2.0/mlflow/runs/search", json={
            "experiment_ids": [exp], "filter": filter_string, "order_by": order_by,
            "max_results": max_results}))

    in_ids = ",".join(f"'{r}'" for r in chosen)

    def compare() -> None:
        search(f"attributes.run_id IN ({in_ids})", [], compare_runs)
        for rid in chosen:
            for key in ("test_acc", "train_loss"):
                history(rid, key)

    def compare_bulk() -> None:
        search(f"attributes.run_id IN ({in_ids})", [], compare_runs)
        for key in ("test_acc", "train_loss"):
            for k in range(0, len(chosen), 100):
                ok(c.get("/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                         params={"run_ids": chosen[k:k + 100], "metric_key": key,
                                 "max_results": 2500}))

    def history_all() -> None:
        rid = rng.choice(run_ids)
        for key in METRICS:
            history(rid, key)

    reads = {
        "history": history_all,
        "history, test_acc only": lambda: history(rng.choice(run_ids), "test_acc"),
        "list": lambda: search("params.optimizer = 'adam'", ["metrics.test_acc DESC"], 50),
        "compare": compare,
        "compare, bulk-interval": compare_bulk,
    }
    return {name: timed(fn, repeats) for name, fn in reads.items()}


# -------------------------------------------------------------------------------------- main


def print_table(ours: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, float]:
    print(f"\n{'read':34} {'bamsprod med/p95 ms':>21} {'MLflow med/p95 ms':>19} {'ratio':>7}")
    ratios: dict[str, float] = {}
    pairs = {"history": "history", "list": "list", "compare": "compare"}
    for name, r in ours.items():
        other = (theirs or {}).get(pairs.get(name, ""))
        left = f"{r['median_ms']:8.1f} / {r['p95_ms']:7.1f}"
        right, ratio = "", ""
        if other:
            right = f"{other['median_ms']:8.1f} / {other['p95_ms']:7.1f}"
            ratios[name] = other["median_ms"] / r["median_ms"]
            ratio = f"{ratios[name]:6.1f}x"
        print(f"{name:34} {left:>21} {right:>19} {ratio:>7}")
    for name, r in (theirs or {}).items():
        if name not in pairs:
            base = name.split(",")[0]
            ratios[name] = r["median_ms"] / ours[base]["median_ms"]
            print(f"{'MLflow ' + name:34} {'(vs ' + base + ')':>21} "
                  f"{r['median_ms']:8.1f} / {r['p95_ms']:7.1f} {ratios[name]:6.1f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--compare-runs", type=int, default=None, help="default: min(50, runs)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 12 runs x 20 epochs, 3 repeats (too small to quote)")
    parser.add_argument("--no-mlflow", action="store_true", help="bamsprod only (large seeds)")
    parser.add_argument("--json", nargs="?", type=Path, const=True, default=None,
                        help="write the results (default benchmarks/results/read_paths-<db>.json)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.epochs, args.repeats = 12, 20, 3
    compare_runs = min(args.compare_runs or 50, args.runs)
    python = None if args.no_mlflow else mlflow_venv()

    with tempfile.TemporaryDirectory(prefix="bamsprod-read-") as tmp:
        home = Path(tmp)
        with database(args.db, home) as db_env:
            took = seed(db_env["BAMSPROD_DATABASE_URL"], args.runs, args.epochs)
            print(f"bamsprod: seeded {args.runs} runs x {args.epochs} epochs ({args.db}) "
                  f"in {took:.1f} s", flush=True)
            url, running = bamsprod_server(home, db_env)
            with running, httpx.Client(base_url=url, timeout=60) as c:
                ours = bamsprod_reads(c, args.runs, compare_runs, args.repeats)
        theirs = None
        if python is not None:
            url, running = mlflow_server(python, home)
            with running:
                t0 = time.perf_counter()
                seeded = seed_mlflow(python, url, args.runs, args.epochs)
                print(f"MLflow {MLFLOW_VERSION}: seeded the same in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                with httpx.Client(base_url=url, timeout=120) as c:
                    theirs = mlflow_reads(c, seeded, compare_runs, args.repeats)
    print(f"\n{args.runs} runs x {args.epochs} epochs, compare of {compare_runs} runs, "
          f"{args.repeats} repeats, {args.db}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    ratios = print_table(ours, theirs)
    if args.json is not None:
        name = f"read_paths-{args.db}{'-quick' if args.quick else ''}.json"
        path = ROOT / "benchmarks" / "results" / name if args.json is True else args.json
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "runs": args.runs, "epochs": args.epochs, "compare_runs": compare_runs,
            "repeats": args.repeats, "db": args.db, "quick": args.quick,
            "mlflow_version": None if args.no_mlflow else MLFLOW_VERSION,
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "load_average": os.getloadavg()[0]},
            "bamsprod": ours, "mlflow": theirs, "ratio_mlflow_over_bamsprod": ratios,
        }, indent=2) + "\n")
        print(f"written: {path}")


if __name__ == "__main__":
    main()
