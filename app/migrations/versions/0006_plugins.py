"""Runs record the plugins they use: distribution and version, per optimizer/model/data set.

Revision ID: 0006_plugins
Revises: 0005_tuning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_plugins"
down_revision = "0005_tuning"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Every run stored before plugins existed used built-ins only: an empty record.
    op.add_column("run", sa.Column("plugins", JSON, nullable=False,
                                   server_default=sa.text("'[]'")))


def downgrade() -> None:
    # A plain ALTER TABLE on both back ends (SQLite >= 3.35): a batch rebuild of ``run`` would
    # drop the old table, and with it (foreign keys on) every epoch.
    op.drop_column("run", "plugins")
