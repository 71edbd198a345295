"""The ``bamsprod`` command line (Typer), built here from the command groups; no command
module imports this one."""

from __future__ import annotations

import typer

from bamsprod.app.commands import (
    core_cmds,
    plugin_cmds,
    service_cmds,
    study_cmds,
    tune_cmds,
)

cli = typer.Typer(
    name="bamsprod",
    help="Run and compare optimizer experiments on binary neural networks.",
    no_args_is_help=True,
    add_completion=False,
)
for group in (core_cmds.commands, service_cmds.commands, tune_cmds.commands,
              plugin_cmds.commands, study_cmds.commands):
    cli.add_typer(group)


def main() -> None:
    cli()
