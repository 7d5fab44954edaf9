"""The Celery executor: publishes job ids by task name to the queue of the job's kind.

If the broker is down, publishing fails fast; the job rows stay unpublished and the sweeper
re-publishes them when the broker is back, so the API keeps answering and the run resumes.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from service.executors.base import Sweeper, mark_published
from workers.celery_app import QUEUE_OF_KIND, RUN_JOB_TASK, make_celery

log = logging.getLogger(__name__)


class CeleryExecutor:
    def __init__(self, factory: sessionmaker[Session], broker_url: str, sweep_interval: float = 10.0) -> None:
        self.factory = factory
        self.app = make_celery(broker_url)
        self.sweeper = Sweeper(factory, self.publish, sweep_interval)

    def publish(self, jobs: list[tuple[str, str]]) -> None:
        sent = []
        for job_id, kind in jobs:
            try:
                self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=QUEUE_OF_KIND[kind])
                sent.append(job_id)
            except Exception as exc:  # noqa: BLE001 - broker down: the sweeper publishes it later
                log.warning("could not publish job %s (%s): %s", job_id, kind, exc)
                break
        if sent:
            mark_published(self.factory, sent)

    def close(self) -> None:
        self.sweeper.close()
