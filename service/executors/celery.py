"""The Celery executor: publishes job ids by task name to the queue of the job's kind.

If the broker is down, publishing fails fast; the job rows stay unpublished and the sweeper
re-publishes them when the broker is back, so the API keeps answering and the run resumes.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from service.executors.base import WEBHOOK, Sweeper, mark_published
from workers.celery_app import DELIVER_WEBHOOK_TASK, QUEUE_OF_KIND, RUN_JOB_TASK, make_celery

log = logging.getLogger(__name__)


class CeleryExecutor:
    def __init__(self, factory: sessionmaker[Session], broker_url: str, sweep_interval: float = 10.0) -> None:
        self.factory = factory
        self.app = make_celery(broker_url)
        self.sweeper = Sweeper(factory, self.publish, sweep_interval)

    def publish(self, jobs: list[tuple[str, str]]) -> None:
        sent = []
        for item_id, kind in jobs:
            task = DELIVER_WEBHOOK_TASK if kind == WEBHOOK else RUN_JOB_TASK
            try:
                self.app.send_task(task, args=[item_id], queue=QUEUE_OF_KIND[kind])
                if kind != WEBHOOK:
                    sent.append(item_id)
            except Exception as exc:  # noqa: BLE001 - broker down: the sweeper publishes it later
                log.warning("could not publish %s %s: %s", kind, item_id, exc)
                break
        if sent:
            mark_published(self.factory, sent)

    def close(self) -> None:
        self.sweeper.close()
