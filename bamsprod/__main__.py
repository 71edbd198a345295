"""``python -m bamsprod`` runs the ``bamsprod`` command line."""

from bamsprod.app.cli import main

main()
