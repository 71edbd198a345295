"""How fast the compare page renders 50 runs x 100 epochs in headless Chromium.

    .venv/bin/python benchmarks/compare_render.py [--runs 50] [--epochs 100] [--loads 3]

Seeds a fresh SQLite database (temporary BAMSPROD_HOME) through ``app.store`` with ``--runs``
finished runs (5 optimizers x seeds) of ``--epochs`` epochs each, starts the API
(``python -m bamsprod serve``) on a free port and loads
``/compare?runs=...&group_by=optimizer&baseline=adam`` in Debian's Chromium (Playwright, never
``playwright install``). The page sets ``window.__bamsprodRendered`` (``performance.now()``,
i.e. ms since navigation start) once its four Plotly charts have rendered.

- cold: a new browser context per load (empty cache: HTML, 4.8 MB plotly.min.js, data, render);
- warm: reloads in one context (static files cached, data fetched and rendered again).

Prints each time and the medians; writes ``artifacts/compare_render.json``. Target: < 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser_fixtures import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (one launch recipe)

OPTIMIZERS = ("adam", "bamsprod", "amsgrad", "bop", "sgd")
TARGET_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_epoch(epoch: int, rate: float, rng: random.Random) -> dict[str, Any]:
    """Plausible metrics for one epoch of a run that learns at ``rate``."""
    acc = 0.98 - 0.88 * math.exp(-rate * epoch) + rng.gauss(0, 0.005)
    loss = 2.3 * math.exp(-rate * epoch) + 0.05 + abs(rng.gauss(0, 0.01))
    return {
        "epoch": epoch,
        "train_loss": loss,
        "train_acc": min(1.0, acc + 0.01),
        "test_loss": loss * 1.1,
        "test_acc": min(1.0, acc),
        "quant_error": 0.3 * math.exp(-0.01 * epoch) + abs(rng.gauss(0, 0.003)),
        "quant_error_layers": {"layers.4.weight": 0.3, "layers.7.weight": 0.28},
        "flip_rate": 0.05 * math.exp(-0.03 * epoch) + abs(rng.gauss(0, 0.001)),
        "lr": 1e-3,
        "seconds": 1.0 + rng.random() * 0.1,
    }


def seed_database(database_url: str, n_runs: int, n_epochs: int) -> list[int]:
    """``n_runs`` succeeded runs of ``n_epochs`` epochs, written with ``app.store``."""
    from bamsprod.app import store
    from bamsprod.app.store.engine import init_db, session_scope
    from bamsprod.core.config import RunConfig

    init_db(database_url)
    rng = random.Random(0)
    ids: list[int] = []
    with session_scope(database_url) as session:
        for i in range(n_runs):
            optimizer = OPTIMIZERS[i % len(OPTIMIZERS)]
            config = RunConfig(
                name=f"bench {optimizer} seed={i // len(OPTIMIZERS)}",
                optimizer=optimizer,
                epochs=n_epochs,
                seed=i // len(OPTIMIZERS),
                model_args={"width": 32},
            )
            run = store.create_run(session, config)
            assert run.id is not None
            store.claim_run(session, run.id, "bench", "cpu")
            rate = 0.05 * (1.3 if optimizer == "bamsprod" else 1.0) * (1 + rng.gauss(0, 0.05))
            for epoch in range(1, n_epochs + 1):
                store.record_epoch(session, run.id, synthetic_epoch(epoch, rate, rng))
            store.finish_run(session, run.id, "succeeded")
            ids.append(run.id)
    return ids


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_")}
    env["BAMSPROD_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bamsprod", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/runs?limit=1", timeout=2).is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start in 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = (name) => (performance.getEntriesByName(name)[0] || {}).startTime ?? null;
  return {
    rendered: window.__bamsprodRendered,
    plotly_ready: nav.domContentLoadedEventEnd,
    data: mark("bamsprod:data"),
  };
}"""


def render_ms(page: Any, url: str, reload: bool = False) -> dict[str, float]:
    """Load (or reload) the compare page; ms from navigation start to the charts rendered
    (``rendered``), to Plotly loaded (``plotly_ready``) and to the data parsed (``data``)."""
    if reload:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_function("() => window.__bamsprodRendered !== undefined", timeout=60_000)
    groups = page.locator("#summary-body tr").count()
    if groups != len(OPTIMIZERS):
        raise SystemExit(f"expected {len(OPTIMIZERS)} groups on the page, saw {groups}")
    return {k: round(float(v), 1) for k, v in page.evaluate(TIMINGS).items() if v is not None}


def median_of(loads: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(x[key] for x in loads), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "compare_render.json")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bamsprod-bench-") as tmp:
        home = Path(tmp)
        database_url = f"sqlite:///{home / 'bamsprod.db'}"
        t0 = time.perf_counter()
        ids = seed_database(database_url, args.runs, args.epochs)
        seed_s = time.perf_counter() - t0
        print(f"seeded {len(ids)} runs x {args.epochs} epochs in {seed_s:.1f} s")
        port = free_port()
        proc = start_server(home, port)
        base = f"http://127.0.0.1:{port}"
        query = f"runs={','.join(map(str, ids))}&group_by=optimizer&baseline=adam"
        url = f"{base}/compare?{query}"
        try:
            api_ms = []
            for _ in range(args.loads):
                t = time.perf_counter()
                r = httpx.get(f"{base}/api/compare?{query}", timeout=60)
                r.raise_for_status()
                api_ms.append((time.perf_counter() - t) * 1000)
            payload_kb = len(r.content) / 1024
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                cold = []
                for _ in range(args.loads):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    cold.append(render_ms(context.new_page(), url))
                    context.close()
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                render_ms(page, url)  # fill the cache
                warm = [render_ms(page, url, reload=True) for _ in range(args.loads)]
                context.close()
                browser.close()
        finally:
            stop_server(proc)

    cold_ms = [x["rendered"] for x in cold]
    result = {
        "runs": len(ids),
        "epochs": args.epochs,
        "groups": len(OPTIMIZERS),
        "loads": args.loads,
        "cold_ms": cold_ms,
        "warm_ms": [x["rendered"] for x in warm],
        "cold_median_ms": median_of(cold, "rendered"),
        "warm_median_ms": median_of(warm, "rendered"),
        "cold_breakdown_median_ms": {k: median_of(cold, k) for k in ("plotly_ready", "data")},
        "warm_breakdown_median_ms": {k: median_of(warm, k) for k in ("plotly_ready", "data")},
        "api_compare_ms": [round(x, 1) for x in api_ms],
        "api_compare_median_ms": round(statistics.median(api_ms), 1),
        "api_payload_kb": round(payload_kb, 1),
        "target_ms": TARGET_SECONDS * 1000,
        "meets_target": statistics.median(cold_ms) < TARGET_SECONDS * 1000,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(
        f"GET /api/compare: median {result['api_compare_median_ms']:.0f} ms "
        f"({result['api_payload_kb']:.0f} KiB)"
    )
    for kind in ("cold", "warm"):
        b = result[f"{kind}_breakdown_median_ms"]
        print(
            f"{kind} loads (ms): {result[f'{kind}_ms']}  median {result[f'{kind}_median_ms']:.0f}"
            f"  (Plotly loaded at {b['plotly_ready']:.0f}, data parsed at {b['data']:.0f})"
        )
    print(f"load average before/after: {load_before} / {result['machine']['load_average_after']}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(
        f"compare page render, median of {args.loads} cold loads: "
        f"{result['cold_median_ms'] / 1000:.2f} s ({verdict} the {TARGET_SECONDS:g} s target)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
