"""Alembic environment: the URL comes from ``app.store.engine.alembic_config`` or the settings."""

from __future__ import annotations

from alembic import context

from bamsprod.app.store.engine import get_engine, is_sqlite
from bamsprod.app.store.tables import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from bamsprod.app.settings import get_settings

        url = get_settings().database_url
    return url


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=is_sqlite(url),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    with get_engine(url).connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=is_sqlite(url),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if is_sqlite(url):
            # 0002 switches foreign keys off for a table rebuild: on again before the
            # connection goes back to the pool (a PRAGMA only takes outside a transaction).
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
