"""``python -m app`` runs the ``bamsprod`` command line."""

from app.cli import main

main()
