"""``python -m bamsprod`` runs the ``bamsprod`` command line."""

from bamsprod.app.commands.cli import main

main()
