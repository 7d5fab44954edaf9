"""Migrations: upgrade and downgrade on both backends, and the models agree with the migrated schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect

from service.db import (
    current_revision,
    database_is_current,
    downgrade_database,
    head_revision,
    make_engine,
    upgrade_database,
)
from service.db.models import Base

MODEL_TABLES = set(Base.metadata.tables)


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        upgrade_database(db_url)
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
        assert current_revision(engine) == head_revision() == "0003"
        assert database_is_current(engine)

        downgrade_database(db_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None

        upgrade_database(db_url)  # a downgraded database migrates again
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
    finally:
        engine.dispose()


def test_models_match_migrations(db_engine: Engine) -> None:
    """What `alembic check` does: autogenerate against the migrated database finds nothing to do."""
    with db_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_named_constraints_survive_migration(db_engine: Engine) -> None:
    """CHECK constraints and the cycle-closing foreign keys exist with their model names.

    compare_metadata does not look at CHECK constraints, and SQLite adds the late foreign keys by
    copying the table, so check both by name.
    """
    inspector = inspect(db_engine)
    for table in Base.metadata.sorted_tables:
        expected_checks = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        reflected_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert expected_checks == reflected_checks, table.name

        expected_fks = {(fk.name, fk.ondelete) for fk in table.foreign_key_constraints}
        reflected_fks = {
            (fk["name"], (fk.get("options") or {}).get("ondelete"))
            for fk in inspector.get_foreign_keys(table.name)
        }
        assert expected_fks == reflected_fks, table.name
