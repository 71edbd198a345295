"""Indexes for the read paths: the runs table sorted by best accuracy or finish time, and the
queue order (state, queued_at).

Revision ID: 0004_read_indexes
Revises: 0003_val_metrics
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004_read_indexes"
down_revision = "0003_val_metrics"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_run_best_test_acc": ["best_test_acc"],
    "ix_run_finished_at": ["finished_at"],
    "ix_run_state_queued_at": ["state", "queued_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "run", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="run")
