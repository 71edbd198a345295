"""Command groups of the ``bamsprod`` CLI; each module registers its commands on ``app.cli.cli``."""
