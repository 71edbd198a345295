"""A run's phase before its first epoch (``run.phase``: loading data, building the optimizer
kernel; null while it trains) and the archive flag (``run.archived``: hidden from the runs
table unless asked for, nothing deleted).

Revision ID: 0009_run_phase_archived
Revises: 0008_reliability
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_run_phase_archived"
down_revision = "0008_reliability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("phase", sa.String(length=64), nullable=True))
    # Every run stored before the flag existed is in the table: not archived.
    op.add_column("run", sa.Column("archived", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    # Plain ALTER TABLE on both back ends (SQLite >= 3.35), as 0006 does: a batch rebuild of
    # ``run`` would drop the old table, and with it (foreign keys on) every epoch.
    op.drop_column("run", "archived")
    op.drop_column("run", "phase")
