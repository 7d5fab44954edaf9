"""A real API server for the tests: uvicorn on a free loopback port, in a thread, on a fresh database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from service.api.app import create_app
from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Run
from service.keys import create_key
from service.runs.orchestrator import cancel
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.conftest import free_port
from workers.vocabulary import Task


@dataclass
class ApiServer:
    url: str
    runtime: Runtime

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def new_key(self, name: str = "tester") -> str:
        with session_scope(self.runtime.factory) as session:
            key, _ = create_key(session, name)
        return key


@contextmanager
def uvicorn_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port until the block ends; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(settings: Settings) -> Iterator[ApiServer]:
    upgrade_database(settings.database_url)
    runtime = build_runtime(settings, local_workers=2, sweep_interval=2.0)
    try:
        with uvicorn_in_thread(create_app(runtime)) as url:
            yield ApiServer(url=url, runtime=runtime)
    finally:
        stop_every_run(runtime)
        runtime.executor.close()


def stop_every_run(runtime: Runtime) -> None:
    """Cancel what the tests left running, so closing waits for in-flight work only, not whole runs."""
    with session_scope(runtime.factory) as session:
        running = session.scalars(select(Run.id).where(~Run.ended)).all()
    for run_id in running:
        cancel(runtime.factory, run_id)


@pytest.fixture(scope="module")
def api(postgres_database: Callable[[], str], cache_dir: Path) -> Iterator[ApiServer]:
    """The API with the local executor on a fresh PostgreSQL database."""
    settings = Settings(database_url=postgres_database(), broker_url=None, cache_dir=cache_dir,
                        webhook_allowed_hosts="127.0.0.1")
    yield from serve(settings)


@dataclass
class RecordingExecutor:
    """An executor that records what it is given to publish and runs nothing."""

    published: list[Task] = field(default_factory=list)

    def publish(self, jobs: list[Task]) -> None:
        self.published += jobs

    def close(self, wait: bool = True) -> None:
        pass


@pytest.fixture
def recording_server(tmp_path: Path) -> Iterator[ApiServer]:
    """The API on an SQLite database whose executor only records: routes are tested, no job runs."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", broker_url=None, cache_dir=tmp_path)
    upgrade_database(settings.database_url)
    runtime = Runtime(settings=settings, factory=make_session_factory(make_engine(settings.database_url)),
                      executor=RecordingExecutor())
    with uvicorn_in_thread(create_app(runtime)) as url:
        yield ApiServer(url=url, runtime=runtime)
