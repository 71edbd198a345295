"""SQLite: run and sweep ids AUTOINCREMENT, so a deleted newest run's id is never reused.

PostgreSQL sequences never reuse ids: nothing to do there. SQLite can only add AUTOINCREMENT by
rebuilding the table (Alembic batch mode). Dropping the old table with foreign keys on would
cascade-delete every epoch, so they are switched off for the rebuild, and the migration stops
rather than rebuild a table with rows while they are still on.

Revision ID: 0002_autoincrement
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_autoincrement"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("sweep", "run")  # parents first


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("PRAGMA foreign_keys = OFF")  # takes effect only outside a transaction
    fk_on = bind.execute(sa.text("PRAGMA foreign_keys")).scalar()
    for table in TABLES:
        rows = bind.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
        if fk_on and rows:
            raise RuntimeError(f"cannot rebuild {table} safely with foreign keys on")
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    # env.py turns foreign keys back on once the migration's transaction has ended.


def downgrade() -> None:
    """Nothing to undo: AUTOINCREMENT ids work with the older schema too."""
