"""The process's runtime: settings, database sessions and the executor, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_async_engine, make_async_session_factory, make_engine, make_session_factory
from service.executors.base import Executor
from service.runs.jobs import run_job
from service.settings import Settings, get_settings
from workers.vocabulary import Task


@dataclass
class Runtime:
    settings: Settings
    factory: sessionmaker[Session]
    executor: Executor

    @cached_property
    def read_factory(self) -> async_sessionmaker[AsyncSession]:
        """Async sessions for the API's reads, which never write (`service.api.deps.read`): on the event loop,
        so a read needs no worker thread; autocommit (each statement reads on its own, no BEGIN or COMMIT
        round trip); on a pool of their own that does not ping a connection at each checkout."""
        engine = make_async_engine(self.settings.database_url, pool_size=self.settings.api_threads,
                                   pool_pre_ping=False, isolation_level="AUTOCOMMIT")
        return make_async_session_factory(engine)

    async def close_reads(self) -> None:
        """Close the read pool's connections, if it was ever used, on the event loop that opened them (else
        they outlive their loop, one pool per API server a process starts and stops)."""
        if "read_factory" in self.__dict__:
            await self.read_factory.kw["bind"].dispose()

    def publish(self, jobs: list[Task]) -> None:
        self.executor.publish(jobs)

    def run_job(self, job_id: str) -> None:
        run_job(self.factory, self.settings, job_id, self.publish)


def build_runtime(settings: Settings, local_workers: int = 2, sweep_interval: float = 10.0) -> Runtime:
    factory = make_session_factory(make_engine(settings.database_url, pool_size=settings.api_threads))
    executor: Executor
    if settings.broker_url:
        from service.executors.celery import CeleryExecutor

        executor = CeleryExecutor(factory, settings.broker_url, sweep_interval)
    else:
        from service.executors.local import LocalExecutor

        executor = LocalExecutor(factory, settings, local_workers, sweep_interval)
    return Runtime(settings=settings, factory=factory, executor=executor)


@cache
def get_runtime() -> Runtime:
    return build_runtime(get_settings())
