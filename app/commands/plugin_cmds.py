"""``bamsprod plugins``: every optimizer, model and data set this environment has, built-ins and
plugins, with where each comes from and whether it loads."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from bamsprod.app.commands.common import console, plain

commands = typer.Typer()


@commands.command()
def plugins(
    as_json: bool = typer.Option(False, "--json", help="one JSON object per entry, a line each"),
) -> None:
    """List every registry entry: kind, name, source distribution and version, ok or broken
    (with its error). A broken plugin is only listed; the others work as usual."""
    from bamsprod.core.plugins import registry

    entries = registry().entries
    if as_json:
        for e in entries:
            typer.echo(json.dumps(e.describe()))
        return
    table = Table("kind", "name", "source", "status", title="optimizers, models, data sets")
    for e in entries:
        status = "ok" if e.ok else f"broken: {e.error}"
        table.add_row(e.kind, plain(e.name), plain(e.source + (" (built-in)" if e.builtin else "")),
                      plain(status), style=None if e.ok else "red")
    console.print(table)
