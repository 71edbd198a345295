"""Tuned sweeps: which run is which tuning trial, and each optimizer's stage-2 decision.

Revision ID: 0005_tuning
Revises: 0004_read_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_tuning"
down_revision = "0004_read_indexes"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tune_trial",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("run.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweep.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("optimizer", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
    )
    op.create_index("ix_tune_trial_sweep_id", "tune_trial", ["sweep_id"])
    op.create_table(
        "tune_stage",
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweep.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("optimizer", sa.String(length=32), primary_key=True),
        sa.Column("best_run_id", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("chosen", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tune_stage")
    op.drop_index("ix_tune_trial_sweep_id", table_name="tune_trial")
    op.drop_table("tune_trial")
