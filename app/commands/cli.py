"""The ``bamsprod`` command line (Typer), built here from the command groups; no command
module imports this one.

Help reads as prose: docstrings are Markdown (``markdown`` markup mode), so a paragraph wrapped
in the source is one paragraph on screen, and a flag shows no value placeholder (Typer would
print ``<bool>`` beside ``--json`` or ``--help``, though they take no value).
"""

from __future__ import annotations

from typing import Any

import typer

from bamsprod.app.commands import (
    core_cmds,
    plugin_cmds,
    service_cmds,
    study_cmds,
    tune_cmds,
)

MARKUP = "markdown"

cli = typer.Typer(
    name="bamsprod",
    help="Run and compare optimizer experiments on binary neural networks.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=MARKUP,
)
for group in (core_cmds.commands, service_cmds.commands, tune_cmds.commands,
              plugin_cmds.commands, study_cmds.commands):
    cli.add_typer(group)


def _markup_everywhere(app: typer.Typer) -> None:
    """The root's markup mode for every group beneath it (each Typer keeps its own)."""
    for info in app.registered_groups:
        if info.typer_instance is not None:
            info.typer_instance.rich_markup_mode = MARKUP
            _markup_everywhere(info.typer_instance)


def _no_flag_placeholders(command: Any) -> None:
    """Flags take no value: show none (``--json``, ``--dry-run``, ``--help``). Typer's own
    click types, so by attribute, not by class."""
    helper = command.get_help_option(command.context_class(command, info_name=command.name))
    for param in [*command.params, *([helper] if helper is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _no_flag_placeholders(sub)


def command() -> Any:
    """The whole command line as one click command, help tidied (see the module docstring)."""
    _markup_everywhere(cli)
    built = typer.main.get_command(cli)
    _no_flag_placeholders(built)
    return built


def main() -> None:
    command()()
