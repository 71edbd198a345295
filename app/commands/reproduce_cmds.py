"""``bamsprod reproduce``: the paper's claims measured through the service.

``--plan paper|quick`` (:mod:`app.studies.plan`) is printed with its estimated cost
(:mod:`app.studies.cost`) before anything is submitted; ``--dry-run`` stops there. The plan's
sweeps (one tuned sweep per task and optimizer, and the kappa x gamma grid) go to a running
server (``--url``), or, when none is given or the given one does not answer, to an embedded
default started here (``bamsprod up`` on a free port with ``BAMSPROD_HOME=<out>/service``,
stopped at the end). The command follows them until every stage 2 has run, reads the tuning
choices, the runs and ``GET /api/compare`` (stage-2 runs; baselines Adam by epoch and by time,
and Bop, at Adam's target), and writes ``reproduction.{md,html,json}`` under ``--out``;
:mod:`app.studies.stats` turns the answers into intervals and verdicts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bamsprod.app.commands.common import client, die_with_parent, request
from bamsprod.app.studies import plan as reproduce_plan
from bamsprod.app.studies import report_html as reproduce_html
from bamsprod.app.studies import report_md as reproduce_md
from bamsprod.app.studies import stats as reproduce_stats
from bamsprod.app.studies.cost import plan_cost
from bamsprod.app.studies.machine import machine_info, now_iso
from bamsprod.core.spec import TERMINAL_STATES

commands = typer.Typer()

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
        with client(url) as c:
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
            [sys.executable, "-m", "bamsprod", "up", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
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


def submit_plan(url: str, plan: reproduce_plan.Plan, stamp: str) -> list[dict[str, Any]]:
    """POST every sweep of the plan; per sweep its task, optimizer (None: the map), id and
    expected run count (a tuned sweep's count includes its stage 2)."""
    tags = (reproduce_plan.TAG, f"{reproduce_plan.TAG}-{stamp}")
    submitted = []
    for item in reproduce_plan.sweep_bodies(plan, tags):
        answer = request(url, "POST", "/api/sweeps", json=item["body"])
        submitted.append({"task": item["task"], "optimizer": item["optimizer"],
                          "sweep_id": answer["sweep"]["id"], "expected": answer["count"]})
    return submitted


def sweep_progress(detail: dict[str, Any], expected: int) -> tuple[int, bool]:
    """(runs ended, finished): finished once every run has ended and a tuned sweep has its
    stage 2, or can never get one (no stage-1 run succeeded or was pruned)."""
    states = detail["states"]
    n = sum(states.values())
    done = sum(v for k, v in states.items() if k in TERMINAL_STATES)
    chosen = any(states.get(k) for k in ("succeeded", "pruned"))
    return done, done == n and (n >= expected or not chosen)


def _bar(item: dict[str, Any]) -> str:
    return item["task"] if item["optimizer"] else f"{item['task']} κ×γ"


def follow(url: str, submitted: list[dict[str, Any]], poll: float,
           timeout: float | None) -> bool:
    """Progress bars over runs ended, per task and in all; False on timeout."""
    start = time.monotonic()
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        labels = list(dict.fromkeys(_bar(s) for s in submitted))
        bars = {k: progress.add_task(k, total=sum(s["expected"] for s in submitted
                                                  if _bar(s) == k)) for k in labels}
        overall = progress.add_task("all runs", total=sum(s["expected"] for s in submitted))
        while True:
            done = dict.fromkeys(labels, 0)
            finished = True
            for s in submitted:
                detail = request(url, "GET", f"/api/sweeps/{s['sweep_id']}")
                n, ended = sweep_progress(detail, s["expected"])
                done[_bar(s)] += n
                finished &= ended
            for k, bar in bars.items():
                progress.update(bar, completed=done[k])
            progress.update(overall, completed=sum(done.values()))
            if finished:
                return True
            if timeout is not None and time.monotonic() - start > timeout:
                return False
            time.sleep(poll)


def sweep_runs(url: str, sweep_id: int) -> list[dict[str, Any]]:
    """Every run of a sweep (id order), page by page."""
    runs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"sweep": sweep_id, "limit": 500, "order": "asc"}
    while True:
        page = request(url, "GET", "/api/runs", params=params)["items"]
        runs += page
        if len(page) < params["limit"]:
            return runs
        params["after"] = page[-1]["id"]


def _compare(url: str, ids: list[int], baseline: str | None, target: float | None = None,
             **kw: Any) -> dict[str, Any]:
    return request(url, "GET", "/api/compare",
                    params=reproduce_plan.compare_params(ids, baseline, target, **kw))


def _count(runs: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(r["state"] for r in runs))


def _ended(runs: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in runs if r["state"] in TERMINAL_STATES]


def fetch_task(url: str, task: reproduce_plan.Task, sweeps: list[dict[str, Any]],
               runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One task: each optimizer's tuning choice and runs, and the three compare answers over
    the stage-2 runs that ended (baseline Adam by epoch and by time, Bop at Adam's target).
    Adds the task's runs to ``runs``."""
    tuning, states = [], Counter[str]()
    for s in sweeps:
        choice = request(url, "GET", f"/api/sweeps/{s['sweep_id']}")["tuning"][0]
        mine = sweep_runs(url, s["sweep_id"])
        runs.update({r["id"]: r for r in mine})
        states.update(r["state"] for r in mine)
        stage1 = [r for r in mine if r["id"] in set(choice["stage1_run_ids"])]
        stage2 = [runs[i] for i in choice["stage2_run_ids"]]
        tuning.append({**choice, "sweep_id": s["sweep_id"], "stage1_states": _count(stage1),
                       "ended": _ended(stage2)})
    ended = {t["optimizer"]: t.pop("ended") for t in tuning}
    ids = [i for got in ended.values() for i in got]
    compare: dict[str, Any] = {}
    if ended.get("adam"):
        compare["adam"] = _compare(url, ids, "adam")
        target = compare["adam"]["target"]
        compare["adam_time"] = _compare(url, ids, "adam", target, x="time")
        if ended.get("bop"):
            compare["bop"] = _compare(url, ids, "bop", target)
    return {
        "key": task.key, "title": task.title, "states": dict(states), "tuning": tuning,
        "run_ids": ids, "stage2": ended, "target": compare.get("adam", {}).get("target"),
        "budget": compare.get("adam", {}).get("budget"),
        "configs": {o: runs[got[0]]["config"] for o, got in ended.items() if got},
        "compare": {k: reproduce_stats.slim_compare(v, keep_series=k == "adam")
                    for k, v in compare.items()},
    }


def fetch_map(url: str, m: reproduce_plan.SensitivityMap, sweep_id: int,
              task: dict[str, Any], runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The kappa x gamma runs compared, cell by cell, with the task's tuned Adam and Bop
    (grouped by optimizer, kappa and gamma; Adam's target)."""
    mine = sweep_runs(url, sweep_id)
    runs.update({r["id"]: r for r in mine})
    cells, base = _ended(mine), task["stage2"]
    compare = {}
    if base.get("adam") and cells:
        ids = cells + base["adam"] + base.get("bop", [])
        by = "optimizer,hparams.kappa,hparams.gamma"
        for baseline in ("adam", "bop") if base.get("bop") else ("adam",):
            compare[baseline] = reproduce_stats.slim_compare(
                _compare(url, ids, baseline, task["target"], group_by=by))
    return {"task": m.task, "sweep_id": sweep_id, "run_ids": cells, "lr": m.lr,
            "kappas": list(m.kappas), "gammas": list(m.gammas), "seeds": list(m.seeds),
            "target": task["target"], "states": _count(mine), "compare": compare}


def fetch(url: str, plan: reproduce_plan.Plan, submitted: list[dict[str, Any]]
          ) -> dict[str, Any]:
    """Every task and the map, and the compute they took: run seconds (started to finished)
    and epoch seconds (one compare answer over every run that ended, with its series)."""
    runs: dict[int, dict[str, Any]] = {}
    tasks = [fetch_task(url, t, [s for s in submitted if s["task"] == t.key and s["optimizer"]],
                        runs) for t in plan.tasks]
    sens = None
    for s in submitted:
        if s["optimizer"] is None and plan.sensitivity is not None:
            task = next(t for t in tasks if t["key"] == plan.sensitivity.task)
            sens = fetch_map(url, plan.sensitivity, s["sweep_id"], task, runs)
    ended = _ended(list(runs.values()))
    every = _compare(url, ended, None, include="runs") if ended else {}
    epoch_s = {r["id"]: sum(v for v in (r.get("series") or {}).get("seconds", []) if v)
               for r in every.get("runs", [])}
    return {"tasks": tasks, "sensitivity": sens, "runs": list(runs.values()),
            "compute": reproduce_stats.compute_time(list(runs.values()), epoch_s)}


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``reproduction.{md,html,json}`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "reproduction.md", out / "reproduction.html", out / "reproduction.json"]
    files[0].write_text(reproduce_md.markdown_report(report))
    files[1].write_text(reproduce_html.html_report(report))
    files[2].write_text(json.dumps(report, indent=1, default=str) + "\n")
    return files


def rerender(path: Path, out: Path) -> list[Path]:
    """Rebuild the numbers and the three files from a saved ``reproduction.json``."""
    report = json.loads(path.read_text())
    if report.get("format") != REPORT_FORMAT:
        console.print(f"[red]error:[/red] {path} was written by an earlier `bamsprod reproduce` "
                      "(fixed recipes, no tuning); its .md and .html beside it are its report")
        raise typer.Exit(2)
    return write_report(reproduce_stats.analyse(report), out)


REPORT_FORMAT = 2


@commands.command()
def reproduce(
    plan_name: str = typer.Option("paper", "--plan", help="paper: full data sets, every "
                                  "optimizer tuned, ~10 min of one GPU; quick: toy sizes, "
                                  "minutes on a CPU"),
    quick: bool = typer.Option(False, "--quick", help="the same as --plan quick"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and its estimated "
                                 "cost (markdown, on stdout) and run nothing"),
    url: str | None = typer.Option(None, help="a running bamsprod server, e.g. one whose "
                                   "workers have a GPU (default: start an embedded one under "
                                   "--out)"),
    out: Path = typer.Option(Path("reproduction"), help="where the report goes"),
    seeds: int | None = typer.Option(None, min=1, help="stage-2 seeds per optimizer (default: "
                                     "the plan's, 3 or 2)"),
    epochs: int | None = typer.Option(None, min=1, help="every task's epoch budget (default: "
                                      "per task)"),
    poll: float = typer.Option(2.0, min=0.1, help="seconds between progress polls"),
    timeout: float | None = typer.Option(None, min=1, help="give up following after this "
                                         "many seconds (the report covers what ended)"),
    threads: int = typer.Option(1, min=0, help="torch threads of the embedded worker "
                                "(OMP_NUM_THREADS; 0: torch's default). 1 is the safe choice on "
                                "a shared CPU, where 2 OpenMP threads can run 10x slower"),
    note: str = typer.Option("", help="a note for the report's header"),
    from_json: Path | None = typer.Option(None, "--from-json", exists=True, dir_okay=False,
                                          help="run nothing: rebuild the report files under "
                                          "--out from a saved reproduction.json"),
) -> None:
    """Measure the paper's claims (speed-up over Adam, accuracy over Bop) with every optimizer
    tuned, through the service."""
    if from_json is not None:
        for f in rerender(from_json, out):
            console.print(f"wrote {f}")
        return
    try:
        plan = reproduce_plan.make_plan("quick" if quick else plan_name, seeds, epochs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--plan") from None
    cost = plan_cost(plan)
    listing = "\n".join(reproduce_md.plan_markdown(plan.to_dict(), cost))
    if dry_run:
        typer.echo(listing)
        return
    console.print(listing, markup=False, highlight=False)
    if url is None and cost["cpu_seconds"] > 3600:
        console.print(f"[yellow]plan {plan.name} is sized for a GPU service (--url, workers "
                      "with --concurrency 4); the embedded worker here runs one run at a time: "
                      f"about {reproduce_md.fmt_seconds(cost['cpu_seconds'])} on a CPU like "
                      "this project's[/yellow]")
    t0 = time.monotonic()
    created = now_iso()
    stamp = created.replace("-", "").replace(":", "")[:15]
    with service(url, out, threads) as (base_url, mode):
        submitted = submit_plan(base_url, plan, stamp)
        finished = follow(base_url, submitted, poll, timeout)
        got = fetch(base_url, plan, submitted)
    note_text = note
    if not finished:
        note_text = (note + " " if note else "") + (
            f"Stopped following after {timeout:g} s: runs that had not ended are left out of "
            "the numbers (see each task's run states).")
    report = {
        "format": REPORT_FORMAT,
        "created": created,
        "wall_seconds": time.monotonic() - t0,
        "machine": machine_info(),
        "devices": sorted({reproduce_stats.device_of(r) for r in got["runs"] if r.get("device")}),
        "workers": sorted({str(r["worker_host"]) for r in got["runs"] if r.get("worker_host")}),
        "service": {"url": base_url, "mode": mode},
        "note": note_text.strip(),
        "plan": plan.to_dict(),
        "cost": cost,
        "compute": got["compute"],
        "tasks": got["tasks"],
        "sensitivity": got["sensitivity"],
    }
    files = write_report(reproduce_stats.analyse(report), out)
    console.print("\n".join(reproduce_md.table(
        ("task", "claim", "paper", "measured [95% CI]", "verdict"),
        reproduce_md.verdict_rows(report["tasks"]))), markup=False, highlight=False)
    for f in files:
        console.print(f"wrote {f}")
    if not finished:
        raise typer.Exit(1)
