"""The Celery executor: publishes job ids by task name to the queue of the job's kind.

If the broker is down, publishing fails fast; the job rows stay unpublished and the sweeper
re-publishes them when the broker is back, so the API keeps answering and the run resumes. Every
process with this executor has a sweeper, but only the holder of a leader lock in Redis sweeps.
"""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy.orm import Session, sessionmaker

from service.executors.base import Sweeper, mark_published
from workers.celery_app import DELIVER_WEBHOOK_TASK, QUEUE_OF_KIND, RUN_JOB_TASK, make_celery
from workers.vocabulary import Task, TaskKind

log = logging.getLogger(__name__)


class RedisLeader:
    """One sweeper per deployment: whoever holds a Redis key with a time-to-live of a few sweep intervals.

    The holder renews it at every pass; when its process dies, the key expires and another takes over.
    While Redis is down nobody leads: nothing could be published then anyway. (With a broker other than
    Redis every process sweeps, which is safe, only redundant.)
    """

    KEY = "discovery:sweeper-leader"
    _RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
              "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")

    def __init__(self, redis_url: str, ttl_seconds: float) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.owner = uuid.uuid4().hex
        self.ttl_ms = max(1, int(ttl_seconds * 1000))

    def __call__(self) -> bool:
        try:
            if self.client.set(self.KEY, self.owner, nx=True, px=self.ttl_ms):
                return True
            return bool(self.client.eval(self._RENEW, 1, self.KEY, self.owner, self.ttl_ms))
        except redis.RedisError:
            return False


class CeleryExecutor:
    def __init__(self, factory: sessionmaker[Session], broker_url: str, sweep_interval: float = 10.0) -> None:
        self.factory = factory
        self.app = make_celery(broker_url)
        leader = RedisLeader(broker_url, 3 * sweep_interval) if broker_url.startswith(("redis://", "rediss://")) \
            else (lambda: True)
        self.sweeper = Sweeper(factory, self.publish, sweep_interval, leader)

    def publish(self, jobs: list[Task]) -> None:
        sent = []
        for item_id, kind in jobs:
            task = DELIVER_WEBHOOK_TASK if kind == TaskKind.WEBHOOK else RUN_JOB_TASK
            try:
                self.app.send_task(task, args=[item_id], queue=QUEUE_OF_KIND[kind])
                if kind != TaskKind.WEBHOOK:
                    sent.append(item_id)
            except Exception as exc:  # noqa: BLE001 - broker down: the sweeper publishes it later
                log.warning("could not publish %s %s: %s", kind, item_id, exc)
                break
        if sent:
            mark_published(self.factory, sent)

    def close(self, wait: bool = True) -> None:
        self.sweeper.close()
