"""Initial schema: sweep, run, epoch_metric.

Revision ID: 0001
Revises:
Create Date: 2026-05-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("optimizer", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column(
            "sweep_id", sa.Integer(), sa.ForeignKey("sweep.id", ondelete="SET NULL"), nullable=True
        ),
        _ts("created_at", nullable=False),
        _ts("queued_at"),
        _ts("started_at"),
        _ts("finished_at"),
        _ts("heartbeat_at"),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("last_epoch", sa.Integer(), nullable=True),
        sa.Column("last_test_acc", sa.Float(), nullable=True),
        sa.Column("last_train_loss", sa.Float(), nullable=True),
        sa.Column("best_test_acc", sa.Float(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("final_quant_error", sa.Float(), nullable=True),
        sa.Column("diverged_epoch", sa.Integer(), nullable=True),
    )
    for col in ("state", "config_hash", "optimizer", "model", "dataset", "sweep_id", "created_at"):
        op.create_index(f"ix_run_{col}", "run", [col])
    op.create_table(
        "epoch_metric",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("run.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("train_acc", sa.Float(), nullable=True),
        sa.Column("test_loss", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("quant_error", sa.Float(), nullable=True),
        sa.Column("quant_error_layers", JSON, nullable=False),
        sa.Column("flip_rate", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        _ts("created_at", nullable=False),
    )
    # Unique per (run, epoch); also the index behind "epochs after N" reads.
    op.create_index("ux_epoch_metric_run_epoch", "epoch_metric", ["run_id", "epoch"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_epoch_metric_run_epoch", table_name="epoch_metric")
    op.drop_table("epoch_metric")
    for col in ("state", "config_hash", "optimizer", "model", "dataset", "sweep_id", "created_at"):
        op.drop_index(f"ix_run_{col}", table_name="run")
    op.drop_table("run")
    op.drop_table("sweep")
