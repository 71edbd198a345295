"""Running a study through the service: start or find it, submit, follow, fetch, report.

The study's sweeps (per task and optimizer a tuned sweep, or a grid sweep over the seeds for
a fixed optimizer; and the kappa x gamma grid) go to a running server (``url``), or, when none
is given or the given one does not answer, to an embedded default started here (``bamsprod up``
on a free port with ``BAMSPROD_HOME=<out>/service``, with the study's worker processes and
torch threads, stopped at the end). :func:`follow` waits until every stage 2 has run;
:func:`fetch` reads the tuning choices, the runs and ``GET /api/compare`` (stage-2 runs, the
target's baseline and metric, each run's own series), and keeps one record per run
(:func:`app.studies.stats.run_records`), so :func:`app.studies.stats.analyse` can rebuild
every number from the saved JSON.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bamsprod.app.commands.common import request
from bamsprod.app.studies import plan as sp
from bamsprod.app.studies import report_html, report_md, stats
from bamsprod.app.studies.environment import device_of
from bamsprod.app.studies.service import service
from bamsprod.core.config import TERMINAL_STATES

console = Console(stderr=True)

REPORT_FORMAT = 3


# ----------------------------------------------------------------------- submit, follow


def submit(url: str, study: sp.Study, stamp: str) -> list[dict[str, Any]]:
    """POST every sweep of the study; per sweep its task, optimizer (None: the map), whether
    it is tuned, id and expected run count (a tuned sweep's count includes its stage 2)."""
    tags = (sp.TAG, f"{sp.TAG}-{study.name}-{stamp}"[:64])
    submitted = []
    for item in sp.sweep_bodies(study, tags):
        answer = request(url, "POST", "/api/sweeps", json=item["body"])
        submitted.append({"task": item["task"], "optimizer": item["optimizer"],
                          "tuned": item["tuned"], "sweep_id": answer["sweep"]["id"],
                          "expected": answer["count"]})
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


# -------------------------------------------------------------------------------- fetch


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
                   params=sp.compare_params(ids, baseline, target, **kw))


def _count(runs: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(r["state"] for r in runs))


def _ended(runs: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in runs if r["state"] in TERMINAL_STATES]


def _fixed_choice(search: sp.Search, mine: list[dict[str, Any]]) -> dict[str, Any]:
    """A fixed optimizer in the shape of a tuned sweep's choice (no stage 1)."""
    hparams = {**search.fixed, **{k: v[0] for k, v in search.hparams.items()}}
    return {"optimizer": search.optimizer, "tuned": False, "criterion": None,
            "searched": {"lr": list(search.lrs)}, "stage1_run_ids": [],
            "chosen": {"lr": search.lrs[0], **{f"hparams.{k}": v for k, v in hparams.items()}},
            "value": None, "best_run_id": None, "stage2_run_ids": [r["id"] for r in mine]}


def trial_scores(url: str, ids: list[int]) -> list[float | None]:
    """Each stage-1 trial's best validation accuracy over its epochs (the tuning criterion)."""
    if not ids:
        return []
    answer = _compare(url, ids, None, include="runs", metric="val_acc")
    out = []
    for entry in answer.get("runs", []):
        values = [v for v in (entry.get("series") or {}).get("val_acc") or [] if stats.ok(v)]
        out.append(max(values) if values else None)
    return out


def main_compare(url: str, study: sp.Study, task: sp.Task, ids: list[int]
                 ) -> dict[str, Any] | None:
    """The stage-2 runs compared by optimizer with each run's series, at the task's target:
    its own, else ``fraction`` x the baseline's best mean (compare's rule is 0.99 x; another
    fraction is applied to the best it found)."""
    t = study.target
    answer = _compare(url, ids, t.baseline, task.target, include="runs", metric=t.metric)
    if task.target is None and answer.get("target") and t.fraction != sp.DEFAULT_FRACTION:
        target = answer["target"] / sp.DEFAULT_FRACTION * t.fraction
        answer = _compare(url, ids, t.baseline, target, include="runs", metric=t.metric)
    return answer


def fetch_task(url: str, study: sp.Study, task: sp.Task, sweeps: list[dict[str, Any]],
               runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One task: each optimizer's choice, runs and stage-1 scores; one record per stage-2 run
    from the compare answer. Adds the task's runs to ``runs``."""
    tuning, states = [], Counter[str]()
    ended: dict[str, list[int]] = {}
    trials: dict[str, list[float | None]] = {}
    for s in sweeps:
        mine = sweep_runs(url, s["sweep_id"])
        runs.update({r["id"]: r for r in mine})
        states.update(r["state"] for r in mine)
        if s["tuned"]:
            choice = {**request(url, "GET", f"/api/sweeps/{s['sweep_id']}")["tuning"][0],
                      "tuned": True}
            stage1 = [r for r in mine if r["id"] in set(choice["stage1_run_ids"])]
            choice["stage1_states"] = _count(stage1)
            trials[s["optimizer"]] = trial_scores(url, _ended(stage1))
        else:
            choice = {**_fixed_choice(study.search(s["optimizer"]), mine), "stage1_states": {}}
        choice["sweep_id"] = s["sweep_id"]
        ended[s["optimizer"]] = _ended([runs[i] for i in choice["stage2_run_ids"] if i in runs])
        tuning.append(choice)
    ids = [i for got in ended.values() for i in got]
    main = None
    if ids and (task.target is not None or ended.get(study.target.baseline)):
        main = main_compare(url, study, task, ids)
    return {
        "key": task.key, "title": task.title, "states": dict(states), "tuning": tuning,
        "run_ids": ids, "stage2": ended, "metric": study.target.metric,
        "target": (main or {}).get("target"), "budget": (main or {}).get("budget"),
        "configs": {o: runs[got[0]]["config"] for o, got in ended.items() if got},
        "runs": stats.run_records(main, runs) if main else [],
        "trials": trials,
        "compare": {"main": stats.slim_compare(main, keep_series=True)} if main else {},
    }


def fetch_map(url: str, study: sp.Study, sweep_id: int, task: dict[str, Any],
              runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The map's runs, one record each at the task's target."""
    m = study.sensitivity
    assert m is not None
    mine = sweep_runs(url, sweep_id)
    runs.update({r["id"]: r for r in mine})
    cells = _ended(mine)
    records: list[dict[str, Any]] = []
    if cells and task.get("target") is not None:
        answer = _compare(url, cells, None, task["target"], include="runs",
                          metric=study.target.metric)
        records = stats.run_records(answer, runs)
    return {"task": m.task, "optimizer": m.optimizer, "sweep_id": sweep_id, "run_ids": cells,
            "lr": m.lr, "kappas": list(m.kappas), "gammas": list(m.gammas),
            "seeds": list(m.seeds), "target": task.get("target"), "states": _count(mine),
            "runs": records}


def fetch(url: str, study: sp.Study, submitted: list[dict[str, Any]]) -> dict[str, Any]:
    """Every task and the map, and the compute they took: run seconds (started to finished)
    and epoch seconds (one compare answer over every run that ended, with its series)."""
    runs: dict[int, dict[str, Any]] = {}
    tasks = [fetch_task(url, study, t, [s for s in submitted
                                        if s["task"] == t.key and s["optimizer"]], runs)
             for t in study.tasks]
    sens = None
    for s in submitted:
        if s["optimizer"] is None and study.sensitivity is not None:
            task = next(t for t in tasks if t["key"] == study.sensitivity.task)
            sens = fetch_map(url, study, s["sweep_id"], task, runs)
    ended = _ended(list(runs.values()))
    every = _compare(url, ended, None, include="runs") if ended else {}
    epoch_s = {r["id"]: sum(v for v in (r.get("series") or {}).get("seconds", []) if v)
               for r in every.get("runs", [])}
    return {"tasks": tasks, "sensitivity": sens, "runs": list(runs.values()),
            "compute": stats.compute_time(list(runs.values()), epoch_s)}


# ------------------------------------------------------------------------------- report


def write_report(report: dict[str, Any], out: Path, stem: str = "report") -> list[Path]:
    """``<stem>.{md,html,json}`` under ``out``, and plotly.js beside the HTML."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{stem}.md", out / f"{stem}.html", out / f"{stem}.json"]
    files[0].write_text(report_md.markdown_report(report))
    files[1].write_text(report_html.html_report(report))
    files[2].write_text(json.dumps(report, indent=1, default=str) + "\n")
    report_html.write_plotly_js(out)
    return files


def rerender(path: Path, out: Path, stem: str = "report") -> list[Path]:
    """Rebuild the numbers and the three files from a saved report JSON; ``ValueError`` for a
    report of an earlier format."""
    report = json.loads(path.read_text())
    if report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} was written by an earlier bamsprod (format "
                         f"{report.get('format', 1)}, this one reads {REPORT_FORMAT}); the .md "
                         "and .html beside it are its report")
    return write_report(stats.analyse(report), out, stem)


def run_study(study: sp.Study, url: str | None, out: Path, *, poll: float = 2.0,
              timeout: float | None = None, note: str = "", stem: str = "report",
              cost: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Path], bool]:
    """Submit, follow, fetch and write the report; (report, files, finished in time)."""
    from bamsprod.app.studies.cost import study_cost
    from bamsprod.app.studies.machine import machine_info, now_iso

    t0 = time.monotonic()
    created = now_iso()
    stamp = created.replace("-", "").replace(":", "")[:15]
    with service(url, out, study.workers, study.threads) as (base_url, mode):
        submitted = submit(base_url, study, stamp)
        finished = follow(base_url, submitted, poll, timeout)
        got = fetch(base_url, study, submitted)
    if not finished:
        note = (note + " " if note else "") + (
            f"Stopped following after {timeout:g} s: runs that had not ended are left out of "
            "the numbers (see each task's run states).")
    report = {
        "format": REPORT_FORMAT,
        "created": created,
        "wall_seconds": time.monotonic() - t0,
        "machine": machine_info(),
        "devices": sorted({device_of(r) for r in got["runs"] if r.get("device")}),
        "worker_hosts": sorted({str(r["worker_host"]) for r in got["runs"]
                                if r.get("worker_host")}),
        "service": {"url": base_url, "mode": mode},
        "note": note.strip(),
        "study": study.to_dict(),
        "cost": cost or study_cost(study),
        "compute": got["compute"],
        "tasks": got["tasks"],
        "sensitivity": got["sensitivity"],
    }
    files = write_report(stats.analyse(report), out, stem)
    return report, files, finished
