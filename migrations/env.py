"""Alembic environment: where the migrations find their database and the models.

The URL comes from, in order: a connection passed in `config.attributes["connection"]`, the
`-x url=...` command-line argument, the config's `sqlalchemy.url`, then service.settings
(DISCOVERY_DATABASE_URL). SQLite runs in batch mode (ALTER by table copy).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from service.db.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:
    # Only when run from the alembic command line; never reconfigure the service's logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.settings import get_settings

    return get_settings().database_url


def configure(**kwargs) -> None:
    url = kwargs.get("url") or kwargs["connection"].engine.url
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=str(url).startswith("sqlite"),
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_with_connection(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    # A plain engine (no PRAGMA foreign_keys on SQLite, as batch migrations want), no pool.
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_with_connection(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
