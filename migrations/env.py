"""Alembic environment: async engine, URL from the service's Settings unless the
caller put one in the config (tests and `python -m app migrate` do)."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from app.adapters.db.schema import metadata
from app.settings import Settings, normalize_database_url

config = context.config


def _url() -> str:
    configured = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return normalize_database_url(configured) if configured else Settings().resolved_database_url()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        # Replicas starting together must not migrate twice at once.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274001)")
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
