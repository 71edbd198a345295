"""The ``bamsprod`` command line (Typer)."""

from __future__ import annotations

import typer

cli = typer.Typer(
    name="bamsprod",
    help="Run and compare optimizer experiments on binary neural networks.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # Each command group lives in its own module and adds itself to ``cli``.
    from app.commands import core_cmds, reproduce_cmds, service_cmds, tune_cmds  # noqa: F401


def main() -> None:
    _register()
    cli()
