"""Migrations: upgrade and downgrade on both backends, and the models agree with the migrated schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect, text

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
        assert current_revision(engine) == head_revision() == "0011"
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


def test_a_database_with_runs_keeps_its_proposal_indexes_and_protocol(db_url: str) -> None:
    """Upgrading a database that holds a run: 0003 labels the old run `grid` with its seeds for the meta-test,
    0004 moves each proposal's index out of its dedupe key into its own column."""
    engine = make_engine(db_url)
    try:
        upgrade_database(db_url, "0002")
        run_id = "r" * 32
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO runs (id, status, target, train_envs, test_envs, profile, proposer, budget, concurrency, "
                "seed, seeds_per_eval, config, tokens_used, cost_usd, duplicates_skipped, created_at, updated_at) "
                "VALUES (:id, 'running', 'lpo', '[]', '[]', 'smoke', '{}', '{}', 1, 0, 3, '{}', 0, 0, 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": run_id})
            for index in (1, 12):
                conn.execute(text(
                    "INSERT INTO jobs (id, run_id, kind, dedupe_key, status, attempts, created_at) "
                    "VALUES (:id, :run, 'propose', :key, 'done', 1, CURRENT_TIMESTAMP)"),
                    {"id": f"j{index}".ljust(32, "0"), "run": run_id, "key": f"propose:{run_id}:{index}"})
        upgrade_database(db_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT metatest_seeds, lr_protocol FROM runs")).one() == (3, "grid")
            indexes = conn.execute(text("SELECT proposal_index FROM jobs ORDER BY proposal_index")).scalars().all()
            assert indexes == [1, 12]
    finally:
        engine.dispose()
