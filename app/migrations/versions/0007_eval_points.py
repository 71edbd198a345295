"""Evaluation points: the validation split evaluated several times per epoch (``eval_point``,
one row per run and optimizer step), each epoch's evaluation seconds (``eval_seconds``, kept
out of its training ``seconds``), and where each run trained (``run.environment``).

Revision ID: 0007_eval_points
Revises: 0005_tuning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007_eval_points"
down_revision = "0006_plugins"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "eval_point",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("run.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("val_acc", sa.Float(), nullable=True),
        sa.Column("eval_seconds", sa.Float(), nullable=True),
    )
    with op.batch_alter_table("epoch_metric") as batch:
        batch.add_column(sa.Column("eval_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("environment", JSON, nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch rebuild: dropping the old
    # run table with foreign keys on would cascade-delete every epoch (see 0002).
    op.drop_column("run", "environment")
    op.drop_column("epoch_metric", "eval_seconds")
    op.drop_table("eval_point")
