"""Shared fixtures: databases.

- `sqlite_url`: an empty SQLite file in tmp_path.
- `postgres_url` (session): an empty PostgreSQL database with a unique name, dropped at the end.
- `postgres_database`: a factory that makes more such databases (for tests that need a fresh one).
- `db_url`: an empty database of either kind (parametrised: sqlite, postgresql), never shared.
- `sqlite_engine`, `postgres_engine`, `db_engine`: engines on databases migrated to head. The
  PostgreSQL one is shared by the session and emptied (TRUNCATE) after each test.
- `session_factory`: a sessionmaker on `db_engine` (so tests using it run on both backends).
- `cache_dir` (session): the one DISCOVERY_CACHE_DIR of the session (anchors, JAX compile cache).
- `suite_redis` (session), `broker_url`, `private_redis`: redis-servers of the suite's own, on ports it chose.

PostgreSQL is the local server (CI always has it); set TEST_POSTGRES_ADMIN_URL to use another one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Hermetic: the suite, and every process it starts, has a home of its own, set before any settings are read. A
# user's caches and local identity (`make demo` leaves one in ~/.cache/discovery) are never read or written, nor
# their DISCOVERY_* variables or a .env in the working folder (an empty DISCOVERY_API_KEY= from .env.example, a
# set DISCOVERY_SANDBOX_ISOLATION, would change what the tests test). The trainer runs on the CPU.
os.environ["HOME"] = tempfile.mkdtemp(prefix="discovery-tests-home-")
os.environ.pop("XDG_CACHE_HOME", None)

import pytest  # noqa: E402
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory, upgrade_database
from service.db.models import Base

SUITE_SETTINGS = {"DISCOVERY_ENV_FILE": os.devnull, "DISCOVERY_TRAINER_DEVICE": "cpu"}
for _name in [name for name in os.environ if name.startswith("DISCOVERY_")]:
    del os.environ[_name]
os.environ.update(SUITE_SETTINGS)


def process_env() -> dict[str, str]:
    """The environment of a process a test starts: this one's, with no DISCOVERY_* setting but the suite's own (the
    test adds what it sets)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DISCOVERY_")}, **SUITE_SETTINGS}

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DB_BACKENDS = ["sqlite", "postgresql"]
ENGINE_FIXTURES = {"sqlite": "sqlite_engine", "postgresql": "postgres_engine"}


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- PostgreSQL: one admin connection for the session, databases made and dropped through it -----


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure here means the same thing
        engine.dispose()
        shown_url = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL is unreachable at {shown_url} ({type(exc).__name__}: {exc})."
            " Start it (see .ci/run) or set TEST_POSTGRES_ADMIN_URL.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_database(postgres_admin: Engine) -> Iterator[Callable[[], str]]:
    """A factory: each call creates an empty database and returns its URL; all are dropped at the end."""
    created: list[str] = []

    def create() -> str:
        name = f"discovery_test_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create

    with postgres_admin.connect() as connection:
        for name in created:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url(postgres_database: Callable[[], str]) -> str:
    """An empty PostgreSQL database for the whole session."""
    return postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database file."""
    return _sqlite_url(tmp_path / "discovery.db")


@pytest.fixture(params=DB_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, never shared with another test: SQLite file or fresh PostgreSQL database."""
    if request.param == "sqlite":
        return _sqlite_url(tmp_path / "discovery.db")
    return request.getfixturevalue("postgres_database")()


# --- Migrated engines ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; tests get a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade_database(_sqlite_url(path))
    return path


@pytest.fixture
def sqlite_engine(_sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a SQLite file migrated to head, private to the test."""
    path = tmp_path / "discovery.db"
    shutil.copyfile(_sqlite_template, path)
    engine = make_engine(_sqlite_url(path))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgres_migrated(postgres_url: str) -> Iterator[Engine]:
    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine(_postgres_migrated: Engine) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database, migrated to head; emptied after the test."""
    yield _postgres_migrated
    # DELETE, children first: on a few rows it is much faster than TRUNCATE (no new files to sync).
    with _postgres_migrated.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(params=DB_BACKENDS)
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """An engine on a migrated database, for each backend."""
    return request.getfixturevalue(ENGINE_FIXTURES[request.param])


@pytest.fixture
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker on a migrated database, for each backend."""
    return make_session_factory(db_engine)


# --- the cache and Redis ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One DISCOVERY_CACHE_DIR for the session (anchors and JAX compile cache), also set in os.environ."""
    path = tmp_path_factory.mktemp("discovery-cache")
    old = os.environ.get("DISCOVERY_CACHE_DIR")
    os.environ["DISCOVERY_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DISCOVERY_CACHE_DIR", None)
    else:
        os.environ["DISCOVERY_CACHE_DIR"] = old


@dataclass
class PrivateRedis:
    """A `redis-server` of the test's own on a free port, which the test may stop and start again."""

    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)

    def start(self) -> None:
        """Start it (on the same port every time) and wait until it answers."""
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port),
                        "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                        "--pidfile", str(self.folder / "redis.pid"), "--logfile", str(self.folder / "redis.log")],
                       check=True, capture_output=True)
        began = time.monotonic()
        while not self.answers():
            if time.monotonic() - began > 20:
                raise RuntimeError(f"redis-server on port {self.port} did not answer in 20 s: see {self.folder}")
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=10)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def suite_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A redis-server of this test process's own, on a port it chose: two suites on one host (or the xdist
    workers of one) never share a broker, and the host's Redis is never written."""
    server = PrivateRedis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker_url(suite_redis: PrivateRedis) -> Iterator[str]:
    """The test broker, flushed before and after the test."""
    suite_redis.client().flushdb()
    yield suite_redis.url
    suite_redis.client().flushdb()
