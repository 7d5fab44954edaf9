"""Engines, sessions and migrations.

`make_engine(url)` sets up SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (pre-ping) the same
way everywhere, and `make_async_engine(url)` the same on asyncio drivers (psycopg's, aiosqlite);
`session_scope(factory)` wraps one unit of work; `upgrade_database(url)` runs the
Alembic migrations to head. The application never calls `metadata.create_all`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from service.data_dirs import data_dir

MIGRATIONS_DIR = data_dir("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` (SQLite or PostgreSQL); extra keyword arguments go to create_engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        in_memory = parsed.database in (None, "", ":memory:")
        event.listen(engine, "connect", _sqlite_on_connect(wal=not in_memory))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncio engine for `url`: psycopg's async connections, or aiosqlite with make_engine's pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed.set(drivername="sqlite+aiosqlite"), **kwargs)
        in_memory = parsed.database in (None, "", ":memory:")
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(wal=not in_memory))
        return engine
    return create_async_engine(url, **kwargs)  # postgresql+psycopg: SQLAlchemy picks psycopg's async side


def _sqlite_on_connect(wal: bool):
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    return on_connect


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit (expire_on_commit=False)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Async sessions bound to `engine`, with make_session_factory's settings."""
    return async_sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back if it raises, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    """An Alembic configuration for `url` that does not depend on the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # configparser interpolation: a literal '%' (e.g. in an encoded password) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Run the migrations on `url` up to `revision` (default: the latest)."""
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str, revision: str = "base") -> None:
    """Undo migrations on `url` down to `revision` (default: an empty database)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The latest revision in migrations/versions."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database behind `engine` is at (None if never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def database_is_current(engine: Engine) -> bool:
    """Whether the database is migrated to head (for readiness checks)."""
    return current_revision(engine) == head_revision()
