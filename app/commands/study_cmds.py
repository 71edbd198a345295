"""``bamsprod study run|list|show`` and its alias ``bamsprod reproduce``: the Typer commands
only; the study file is read by :mod:`app.studies.studyfile`, run by :mod:`app.studies.runner`.

``study run FILE|NAME`` prints the study and its estimated cost (:mod:`app.studies.cost`)
before anything is submitted; ``--dry-run`` stops there. ``reproduce --plan paper|quick`` is
``study run paper|quick`` writing ``reproduction.{md,html,json}``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from bamsprod.app.commands.common import console, err, safe
from bamsprod.app.studies import report_md, runner
from bamsprod.app.studies.cost import study_cost
from bamsprod.app.studies.fmt import fmt_seconds, table
from bamsprod.app.studies.listing import plan_markdown
from bamsprod.app.studies.studyfile import StudyFileError, load_study, shipped_names, shipped_text

commands = typer.Typer()
study_app = typer.Typer(help="Studies: tasks x optimizers x tuning x seeds x claims, declared "
                        "in a TOML file (docs/studies.md), run through the service.",
                        no_args_is_help=True)
commands.add_typer(study_app, name="study")

# A study meant for a GPU service warns when it would run on the embedded CPU service for
# longer than this.
CPU_WARN_SECONDS = 3600.0


def _run(source: str, *, url: str | None, dry_run: bool, out: Path | None, seeds: int | None,
         epochs: int | None, poll: float, timeout: float | None, workers: int | None,
         threads: int | None, note: str, from_json: Path | None, stem: str) -> None:
    if from_json is not None:
        try:
            files = runner.rerender(from_json, out or from_json.parent, stem)
        except ValueError as exc:
            err.print(f"[red]error:[/red] {safe(exc)}")
            raise typer.Exit(2) from None
        for f in files:
            console.print(f"wrote {f}")
        return
    try:
        study = load_study(source).override(seeds, epochs)
    except (StudyFileError, ValueError) as exc:
        err.print(f"[red]error:[/red] {safe(exc)}")
        raise typer.Exit(2) from None
    if workers is not None or threads is not None:
        study = replace(study, workers=workers or study.workers,
                        threads=study.threads if threads is None else threads)
    cost = study_cost(study)
    listing = "\n".join(plan_markdown(study.to_dict(), cost))
    if dry_run:
        typer.echo(listing)
        return
    err.print(listing, markup=False, highlight=False)
    if url is None and study.device == "gpu" and cost["cpu_seconds"] > CPU_WARN_SECONDS:
        err.print(f"[yellow]study {study.name} is sized for a GPU service (--url, workers "
                  f"with --concurrency {study.workers}); on this machine's CPU it would take "
                  f"about {fmt_seconds(cost['cpu_seconds'])}[/yellow]")
    out = out or Path(f"study-{study.name}")
    report, files, finished = runner.run_study(study, url, out, poll=poll, timeout=timeout,
                                               note=note, stem=stem, cost=cost)
    if report["study"].get("claims"):
        err.print("\n".join(table(
            ("task", "claim", "claimed", "measured [95% CI]", "verdict"),
            report_md.verdict_rows(report["tasks"]))), markup=False, highlight=False)
    for f in files:
        console.print(f"wrote {f}")
    if not finished:
        raise typer.Exit(1)


URL = typer.Option(None, help="a running bamsprod server, e.g. one whose workers have a GPU "
                   "(default: start an embedded one under --out)")
DRY_RUN = typer.Option(False, "--dry-run", help="print the study and its estimated cost "
                       "(markdown, on stdout) and run nothing")
SEEDS = typer.Option(None, min=1, help="stage-2 seeds per optimizer (default: the study's)")
EPOCHS = typer.Option(None, min=1, help="every task's epoch budget (default: per task)")
POLL = typer.Option(2.0, min=0.1, help="seconds between progress polls")
TIMEOUT = typer.Option(None, min=1, help="give up following after this many seconds (the "
                       "report covers what ended)")
WORKERS = typer.Option(None, min=1, max=64, help="worker processes of the embedded service "
                       "(default: the study's [resources] workers)")
THREADS = typer.Option(None, min=0, help="torch threads per embedded worker process "
                       "(OMP_NUM_THREADS; 0: torch's default; default: the study's). 1 is the "
                       "safe choice on a shared CPU, where 2 OpenMP threads can run 10x slower")
NOTE = typer.Option("", help="a note for the report's header")
FROM_JSON = typer.Option(None, "--from-json", exists=True, dir_okay=False,
                         help="run nothing: rebuild the report files under --out from a saved "
                         "report JSON")


@study_app.command("run")
def study_run(
    study: str = typer.Argument(..., help="a study file (TOML), or a shipped study's name "
                                "(bamsprod study list)"),
    url: str | None = URL,
    dry_run: bool = DRY_RUN,
    out: Path | None = typer.Option(None, help="where the report goes [default: "
                                    "study-<name>]"),
    seeds: int | None = SEEDS,
    epochs: int | None = EPOCHS,
    poll: float = POLL,
    timeout: float | None = TIMEOUT,
    workers: int | None = WORKERS,
    threads: int | None = THREADS,
    note: str = NOTE,
    from_json: Path | None = FROM_JSON,
) -> None:
    """Plan a study, state its cost, run it through the service and write its report
    (report.md, report.html, report.json)."""
    _run(study, url=url, dry_run=dry_run, out=out, seeds=seeds, epochs=epochs, poll=poll,
         timeout=timeout, workers=workers, threads=threads, note=note, from_json=from_json,
         stem="report")


@study_app.command("list")
def study_list() -> None:
    """The studies that ship with bamsprod, with their size and estimated cost."""
    for name in shipped_names():
        study = load_study(name)
        cost = study_cost(study)
        wall = cost["gpu_wall_seconds"] if study.device == "gpu" else cost["cpu_wall_seconds"]
        typer.echo(f"{name:<8} {cost['runs']:>4} runs {cost['epochs']:>5} epochs  about "
                   f"{fmt_seconds(wall)} on a {study.device.upper()}: "
                   f"{study.purpose}")


@study_app.command("show")
def study_show(name: str = typer.Argument(..., help="a shipped study's name")) -> None:
    """Print a shipped study's TOML (a starting point for your own)."""
    try:
        typer.echo(shipped_text(name), nl=False)
    except KeyError:
        err.print(f"[red]error:[/red] no shipped study {safe(name)!r}; shipped: "
                  f"{', '.join(shipped_names())}")
        raise typer.Exit(2) from None


@commands.command()
def reproduce(
    plan_name: str = typer.Option("paper", "--plan", help="paper: full data sets, every "
                                  "optimizer tuned, ~10 min of one GPU; quick: toy sizes, "
                                  "minutes on a CPU"),
    quick: bool = typer.Option(False, "--quick", help="the same as --plan quick"),
    dry_run: bool = DRY_RUN,
    url: str | None = URL,
    out: Path = typer.Option(Path("reproduction"), help="where the report goes"),
    seeds: int | None = SEEDS,
    epochs: int | None = EPOCHS,
    poll: float = POLL,
    timeout: float | None = TIMEOUT,
    threads: int | None = THREADS,
    note: str = NOTE,
    from_json: Path | None = FROM_JSON,
) -> None:
    """Measure the paper's claims with every optimizer tuned: ``study run paper`` (or
    ``quick``), writing reproduction.{md,html,json}."""
    name = "quick" if quick else plan_name
    if name not in ("paper", "quick"):
        raise typer.BadParameter(f"unknown plan {name!r}; known: paper, quick",
                                 param_hint="--plan")
    _run(name, url=url, dry_run=dry_run, out=out, seeds=seeds, epochs=epochs, poll=poll,
         timeout=timeout, workers=None, threads=threads, note=note, from_json=from_json,
         stem="reproduction")
