"""Engine set-up, session scope, and the alembic command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.db import alembic_config, make_engine, session_scope
from service.db.models import ApiKey

REPO = Path(__file__).resolve().parents[2]


def test_sqlite_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert connection.scalar(text("PRAGMA busy_timeout")) == 30_000


def test_sqlite_in_memory_engine_works() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
    engine.dispose()


def test_session_scope_commits_or_rolls_back(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        session.add(ApiKey(name="kept", prefix="dk_1", key_hash="1" * 64))
    with pytest.raises(RuntimeError), session_scope(session_factory) as session:
        session.add(ApiKey(name="dropped", prefix="dk_2", key_hash="2" * 64))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(session_factory) as session:
        assert session.scalars(select(ApiKey.name)).all() == ["kept"]
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 1


def test_alembic_config_escapes_percent() -> None:
    url = "postgresql+psycopg://user:p%40ss@localhost/db"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url


def test_alembic_command_line_uses_settings_url(tmp_path: Path) -> None:
    """`alembic upgrade head`, then `alembic check`, from the repository root; URL from the settings."""
    env = {**os.environ, "DISCOVERY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    alembic = [sys.executable, "-m", "alembic"]
    for args in (["upgrade", "head"], ["check"]):
        result = subprocess.run(alembic + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()
