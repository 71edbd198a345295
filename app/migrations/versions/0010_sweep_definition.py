"""The sweep's stored body is ``sweep.definition`` (was ``spec``, a name that also meant the run
config module and the registry's entries).

Revision ID: 0010_sweep_definition
Revises: 0009_run_phase_archived
"""

from __future__ import annotations

from alembic import op

revision = "0010_sweep_definition"
down_revision = "0009_run_phase_archived"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... RENAME COLUMN on both back ends (SQLite >= 3.25): a batch rebuild
    # would drop and recreate ``sweep``, and with it (foreign keys on) its runs.
    op.execute("ALTER TABLE sweep RENAME COLUMN spec TO definition")


def downgrade() -> None:
    op.execute("ALTER TABLE sweep RENAME COLUMN definition TO spec")
