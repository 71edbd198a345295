"""``bamsprod reproduce``: the paper's claims measured through the service.

Submits the plan of :mod:`app.reproduce` (three tasks x six optimizers x seeds) to a running
server (``--url``), or, when none is given or the given one does not answer, to an embedded
default it starts itself (``bamsprod up`` on a free port with ``BAMSPROD_HOME=<out>/service``,
stopped at the end). It follows the runs with a progress bar, fetches ``GET /api/compare``
per task with baselines Adam, AMSGrad (at Adam's target) and Bop, and writes
``reproduction.md``, ``reproduction.html`` and ``reproduction.json`` under ``--out``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app import reproduce as rp
from app.cli import cli
from app.commands.service_cmds import _client, _die_with_parent, _request
from core.spec import TERMINAL_STATES

console = Console(stderr=True)

SERVICE_READY_SECONDS = 180.0
SERVICE_STOP_SECONDS = 60.0
# Settings the embedded service keeps from this environment; the rest (database, broker, home)
# are its own, so the reproduction never writes into someone else's service.
KEEP_ENV = ("BAMSPROD_API_TOKEN", "BAMSPROD_READ_TOKEN", "BAMSPROD_DATA_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_ready(url: str, timeout: float = 3.0) -> bool:
    """True when ``url``'s /api/health answers ``ok`` and sees at least one worker."""
    try:
        with _client(url) as c:
            r = c.get("/api/health", timeout=timeout)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return False
    return r.status_code == 200 and body.get("status") == "ok" and bool(body.get("workers_seen"))


@contextmanager
def embedded_service(home: Path, threads: int = 1) -> Iterator[str]:
    """``bamsprod up`` on a free port with its own home; yields its URL once it has a worker,
    and stops it (SIGTERM, then SIGKILL) on exit; it also gets SIGTERM if this process dies.
    ``threads`` > 0 sets the worker's ``OMP_NUM_THREADS`` (torch's intra-op threads)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAMSPROD_") or k in KEEP_ENV}
    env["BAMSPROD_HOME"] = str(home)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    log_path = home / "service.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "up", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
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
def service(url: str | None, out: Path, threads: int = 1) -> Iterator[tuple[str, str]]:
    """``(url, mode)``: the given server when it answers, else an embedded default."""
    if url and service_ready(url):
        yield url.rstrip("/"), "external"
        return
    if url:
        console.print(f"[yellow]{url} does not answer; starting an embedded service[/yellow]")
    console.print(f"starting the embedded service (home: {out / 'service'}) ...")
    with embedded_service(out / "service", threads) as embedded:
        console.print(f"embedded service up at {embedded}")
        per = f"OMP_NUM_THREADS={threads}" if threads else "torch's default threads"
        yield embedded, f"embedded (SQLite + SQLite broker, one worker, {per})"


def submit_plan(url: str, plan: rp.Plan, stamp: str) -> list[dict[str, Any]]:
    """POST the sweeps of every task; per task its sweep and run ids."""
    submitted = []
    for task in plan.tasks:
        sweep_ids: list[int] = []
        run_ids: list[int] = []
        for body in rp.sweep_bodies(task, plan.recipes, plan.seeds,
                                    tags=(rp.TAG, f"{rp.TAG}-{stamp}")):
            answer = _request(url, "POST", "/api/sweeps", json=body)
            sweep_ids.append(answer["sweep"]["id"])
            run_ids += answer["run_ids"]
        submitted.append({"task": task, "sweep_ids": sweep_ids, "run_ids": run_ids})
    return submitted


def sweep_states(url: str, sweep_ids: list[int]) -> dict[str, int]:
    """Run states summed over ``sweep_ids``."""
    states: dict[str, int] = {}
    for sid in sweep_ids:
        for k, v in _request(url, "GET", f"/api/sweeps/{sid}")["states"].items():
            states[k] = states.get(k, 0) + v
    return states


def follow(url: str, submitted: list[dict[str, Any]], poll: float,
           timeout: float | None) -> bool:
    """Progress bars over runs finished, per task and in all; False on timeout."""
    start = time.monotonic()
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[states]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        total = sum(len(s["run_ids"]) for s in submitted)
        bars = [progress.add_task(s["task"].key, total=len(s["run_ids"]), states="")
                for s in submitted]
        overall = progress.add_task("all runs", total=total, states="")
        while True:
            done_all = 0
            for bar, s in zip(bars, submitted, strict=True):
                states = sweep_states(url, s["sweep_ids"])
                done = sum(v for k, v in states.items() if k in TERMINAL_STATES)
                done_all += done
                text = " ".join(f"{k}:{v}" for k, v in sorted(states.items()))
                progress.update(bar, completed=done, states=text)
            progress.update(overall, completed=done_all)
            if done_all >= total:
                return True
            if timeout is not None and time.monotonic() - start > timeout:
                return False
            time.sleep(poll)


def fetch_task(url: str, sub: dict[str, Any]) -> dict[str, Any]:
    """Compare results (baselines Adam, AMSGrad, Bop at Adam's target), rows and configs."""
    task: rp.Task = sub["task"]
    sweep_ids, run_ids = sub["sweep_ids"], sub["run_ids"]
    compares: dict[str, Any] = {}
    adam = _request(url, "GET", "/api/compare",
                    params=rp.compare_params(run_ids, sweep_ids, "adam"))
    compares["adam"] = adam
    for base in ("amsgrad", "bop"):
        compares[base] = _request(url, "GET", "/api/compare",
                                  params=rp.compare_params(run_ids, sweep_ids, base,
                                                           adam.get("target")))
    runs = [_request(url, "GET", f"/api/runs/{rid}") for rid in run_ids]
    configs: dict[str, Any] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        configs.setdefault(r["config"]["optimizer"], r["config"])
    states: dict[str, int] = {}
    for r in runs:
        states[r["state"]] = states.get(r["state"], 0) + 1
    rows = rp.task_rows(compares)
    return {
        "key": task.key,
        "title": task.title,
        "sweep_ids": sweep_ids,
        "run_ids": run_ids,
        "states": states,
        "devices": sorted({str(r.get("device")) for r in runs if r.get("device")}),
        "workers": sorted({str(r.get("worker_host")) for r in runs if r.get("worker_host")}),
        "target": adam.get("target"),
        "target_source": adam.get("target_source"),
        "budget": adam.get("budget"),
        "rows": rows,
        "claims": rp.claim_summary(rows),
        "configs": configs,
        "all_configs": {str(r["id"]): r["config"] for r in runs},
        "compare": {"adam": rp.slim_compare(adam, keep_series=True),
                    "amsgrad": rp.slim_compare(compares["amsgrad"]),
                    "bop": rp.slim_compare(compares["bop"])},
    }


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``reproduction.{md,html,json}`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "reproduction.md", out / "reproduction.html", out / "reproduction.json"]
    files[0].write_text(rp.markdown_report(report))
    files[1].write_text(rp.html_report(report))
    files[2].write_text(json.dumps(report, indent=1, default=str) + "\n")
    return files


def rerender(path: Path, out: Path) -> list[Path]:
    """Rebuild the rows, claims and the three files from a saved ``reproduction.json``."""
    report = json.loads(path.read_text())
    for task in report["tasks"]:
        task["rows"] = rp.task_rows(task["compare"])
        task["claims"] = rp.claim_summary(task["rows"])
    return write_report(report, out)


@cli.command()
def reproduce(
    quick: bool = typer.Option(False, "--quick",
                               help="a few epochs, one seed, small subsets: minutes"),
    url: str | None = typer.Option(None, help="a running bamsprod server (default: start an "
                                   "embedded one under --out)"),
    out: Path = typer.Option(Path("reproduction"), help="where the report goes"),
    seeds: int | None = typer.Option(None, min=1, help="seeds per optimizer (default 3; 1 "
                                     "with --quick)"),
    epochs: int | None = typer.Option(None, min=1, help="epochs for every task (default: "
                                      "per task)"),
    poll: float = typer.Option(2.0, min=0.1, help="seconds between progress polls"),
    timeout: float | None = typer.Option(None, min=1, help="give up following after this "
                                         "many seconds (the report covers what finished)"),
    threads: int = typer.Option(1, min=0, help="torch threads of the embedded worker "
                                "(OMP_NUM_THREADS; 0: torch's default). 1 is the safe choice on "
                                "a shared CPU, where 2 OpenMP threads can run 10x slower"),
    note: str = typer.Option("", help="a note for the report's header"),
    from_json: Path | None = typer.Option(None, "--from-json", exists=True, dir_okay=False,
                                          help="run nothing: rebuild the report files under "
                                          "--out from a saved reproduction.json"),
) -> None:
    """Measure the paper's two claims (speed-up, accuracy over Bop) through the service."""
    if from_json is not None:
        for f in rerender(from_json, out):
            console.print(f"wrote {f}")
        return
    t0 = time.monotonic()
    plan = rp.make_plan(quick=quick, seeds=seeds, epochs=epochs)
    out.mkdir(parents=True, exist_ok=True)
    created = rp.now_iso()
    stamp = created.replace("-", "").replace(":", "")[:15]
    console.print(f"reproduce: {plan.n_runs} runs ({len(plan.tasks)} tasks x "
                  f"{len(plan.recipes)} optimizers x {len(plan.seeds)} seeds)")
    with service(url, out, threads) as (base_url, mode):
        submitted = submit_plan(base_url, plan, stamp)
        finished = follow(base_url, submitted, poll, timeout)
        tasks = [fetch_task(base_url, s) for s in submitted]
    wall = time.monotonic() - t0
    note_text = note
    if not finished:
        note_text = (note + " " if note else "") + (
            f"Stopped following after {timeout:g} s: unfinished runs are left out of the "
            "numbers (see each task's run states).")
    report = {
        "created": created,
        "wall_seconds": wall,
        "machine": rp.machine_info(),
        "devices": sorted({d for t in tasks for d in t["devices"]}),
        "service": {"url": base_url, "mode": mode},
        "n_runs": plan.n_runs,
        "note": note_text.strip(),
        "plan": plan.to_dict(),
        "tasks": tasks,
    }
    files = write_report(report, out)
    console.print(rp.claims_markdown(tasks))
    for f in files:
        console.print(f"wrote {f}")
    if not finished:
        raise typer.Exit(1)
