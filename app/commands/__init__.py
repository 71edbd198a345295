"""Command groups of the ``bamsprod`` CLI: each module declares ``commands`` (a Typer group);
``app.commands.cli`` builds the command line from them."""
