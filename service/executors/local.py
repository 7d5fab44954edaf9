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
from service.webhooks import deliver
from workers.vocabulary import Task, TaskKind

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, factory: sessionmaker[Session], settings: Settings, workers: int,
                 sweep_interval: float = 10.0) -> None:
        self.factory, self.settings = factory, settings
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self.closed = False
        self.sweeper = Sweeper(factory, self.publish, sweep_interval)

    def publish(self, jobs: list[Task]) -> None:
        if self.closed:
            return  # shutting down: the rows stay unpublished and the next process's sweeper takes them
        for item_id, kind in jobs:
            self.pool.submit(self._run, item_id, kind)
        mark_published(self.factory, [item_id for item_id, kind in jobs if kind != TaskKind.WEBHOOK])

    def _run(self, item_id: str, kind: str) -> None:
        try:
            if kind == TaskKind.WEBHOOK:
                deliver(self.factory, self.settings, item_id)
            else:
                run_job(self.factory, self.settings, item_id, self.publish)
        except Exception:  # noqa: BLE001 - logged; the sweeper re-publishes the job when its lease runs out
            log.exception("%s %s crashed", kind, item_id)

    def close(self, wait: bool = True) -> None:
        """Stop taking jobs; with `wait`, let the jobs in flight finish (without, the process is about to exit and
        they end with it: their rows say what is left to do)."""
        self.closed = True
        self.sweeper.close()
        self.pool.shutdown(wait=wait, cancel_futures=True)
