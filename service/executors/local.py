"""The local executor: jobs run on a thread pool inside this process (the embedded default).

Threads are enough: the heavy work of an evaluation already runs in a fresh sandboxed child process,
and a proposal waits on the network or does milliseconds of AST work.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from service.executors.base import Sweeper, mark_published
from service.runs.jobs import run_job
from service.settings import Settings

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, factory: sessionmaker[Session], settings: Settings, workers: int,
                 sweep_interval: float = 10.0) -> None:
        self.factory, self.settings = factory, settings
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self.sweeper = Sweeper(factory, self.publish, sweep_interval)

    def publish(self, jobs: list[tuple[str, str]]) -> None:
        for job_id, _kind in jobs:
            self.pool.submit(self._run, job_id)
        mark_published(self.factory, [job_id for job_id, _ in jobs])

    def _run(self, job_id: str) -> None:
        try:
            run_job(self.factory, self.settings, job_id, self.publish)
        except Exception:  # noqa: BLE001 - logged; the sweeper re-publishes the job when its lease runs out
            log.exception("job %s crashed", job_id)

    def close(self) -> None:
        self.sweeper.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
