"""The database layer: engine and sessions, migrations, models (see service.db.models)."""

from __future__ import annotations

from service.db.engine import (
    alembic_config,
    current_revision,
    database_is_current,
    downgrade_database,
    head_revision,
    make_async_engine,
    make_async_session_factory,
    make_engine,
    make_session_factory,
    session_scope,
    upgrade_database,
)
from service.db.jobs import claim_job
from service.db.models import Base, new_id, utcnow

__all__ = [
    "Base",
    "alembic_config",
    "claim_job",
    "current_revision",
    "database_is_current",
    "downgrade_database",
    "head_revision",
    "make_async_engine",
    "make_async_session_factory",
    "make_engine",
    "make_session_factory",
    "new_id",
    "session_scope",
    "upgrade_database",
    "utcnow",
]
