"""The executor interface, and the sweeper that every executor runs beside itself.

An executor only carries job ids; the database is the source of truth. The sweeper re-publishes
jobs that were never published (the broker was down), whose lease ran out (their worker died), or
that sat unclaimed too long, and nudges every unfinished run forward. It leaves an interrupted run alone
(`service.runs.orchestrator.interrupt`): only `discovery runs resume` or the API's resume sets it going.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Job, Run
from service.runs.orchestrator import Publish, advance
from service.webhooks import due_deliveries
from workers.vocabulary import JobStatus, RunStatus, Task, TaskKind

log = logging.getLogger(__name__)
REPUBLISH_AFTER_SECONDS = 60.0


class Executor(Protocol):
    def publish(self, jobs: list[Task]) -> None: ...
    def close(self, wait: bool = True) -> None: ...  # wait=False: leave the jobs in flight (the process exits)


def mark_published(factory: sessionmaker[Session], job_ids: list[str]) -> None:
    with session_scope(factory) as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(published_at=utcnow()))


def sweep(factory: sessionmaker[Session], publish: Publish, republish_after: float = REPUBLISH_AFTER_SECONDS) -> int:
    """Re-publish stranded jobs, publish due webhook deliveries, advance unfinished runs.

    Returns how many jobs were re-published.
    """
    now = utcnow()
    with session_scope(factory) as session:
        # An interrupted run's jobs wait for `discovery runs resume`; a crashed run's are taken over.
        interrupted = select(Run.id).where(Run.status == RunStatus.INTERRUPTED)
        stranded = session.execute(select(Job.id, Job.kind).where(Job.run_id.not_in(interrupted), or_(
            and_(Job.status == JobStatus.PENDING,
                 or_(Job.published_at.is_(None), Job.published_at < now - timedelta(seconds=republish_after))),
            and_(Job.status == JobStatus.CLAIMED, Job.lease_until < now),
        ))).all()
        runs = session.scalars(select(Run.id).where(~Run.stopped)).all()
        deliveries = due_deliveries(session, now)
    if stranded:
        log.info("sweeper re-publishes %d job(s)", len(stranded))
        publish([Task(job_id, TaskKind(kind)) for job_id, kind in stranded])
    if deliveries:
        publish([Task(delivery_id, TaskKind.WEBHOOK) for delivery_id in deliveries])
    for run_id in runs:
        advance(factory, run_id, publish)
    return len(stranded)


class Sweeper:
    """Runs `sweep` every `interval` seconds in a daemon thread until closed.

    `leader()` is asked before each pass: where many processes run a sweeper (every Celery worker
    process and the API), only the one holding the deployment's leader lock sweeps.
    """

    def __init__(self, factory: sessionmaker[Session], publish: Publish, interval: float,
                 leader: Callable[[], bool] = lambda: True) -> None:
        self.factory, self.publish, self.interval, self.leader = factory, publish, interval, leader
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        # The first pass re-publishes every pending job: a process that starts may be replacing one that
        # died with jobs handed to it (its thread pool, or a broker that lost its queue on restart).
        republish_after = 0.0
        while not self.stopped.wait(self.interval):
            try:
                if not self.leader():
                    continue
                sweep(self.factory, self.publish, republish_after)
                republish_after = REPUBLISH_AFTER_SECONDS
            except Exception:  # noqa: BLE001 - the database or broker may be away; try again next time
                log.warning("sweep failed", exc_info=True)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=self.interval + 5)
