"""Reliability: a submit's idempotency key, and the lease of the worker that holds a run.

``run.idempotency_key`` (unique): a client's ``Idempotency-Key`` header, so a retried submit
returns the run the first one created. ``run.lease``: drawn afresh at every claim; heartbeats,
epochs and the final state of a worker whose lease is no longer the run's are refused.

Revision ID: 0008_reliability
Revises: 0007_eval_points
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_reliability"
down_revision = "0007_eval_points"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("idempotency_key", sa.String(length=64), nullable=True))
    op.add_column("run", sa.Column("lease", sa.String(length=32), nullable=True))
    op.create_index("ux_run_idempotency_key", "run", ["idempotency_key"], unique=True)


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild: dropping the old
    # run table with foreign keys on would cascade-delete every epoch (see 0002 and 0007).
    op.drop_index("ux_run_idempotency_key", table_name="run")
    op.drop_column("run", "lease")
    op.drop_column("run", "idempotency_key")
