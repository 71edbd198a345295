"""Per-epoch validation metrics: val_loss and val_acc (NULL where a run holds out no split).

Revision ID: 0003_val_metrics
Revises: 0002_autoincrement
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_val_metrics"
down_revision = "0002_autoincrement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_metric") as batch:
        batch.add_column(sa.Column("val_loss", sa.Float(), nullable=True))
        batch.add_column(sa.Column("val_acc", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_metric") as batch:
        batch.drop_column("val_acc")
        batch.drop_column("val_loss")
