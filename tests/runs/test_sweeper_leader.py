"""One sweeper per deployment: every Celery process has one, only the holder of the Redis lock sweeps."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from sqlalchemy import Engine

from service.db import make_session_factory
from service.executors.base import Sweeper
from service.executors.celery import RedisLeader


def test_one_leader_at_a_time_and_another_takes_over_when_it_stops(broker_url: str) -> None:
    redis.Redis.from_url(broker_url).delete(RedisLeader.KEY)
    first, second = RedisLeader(broker_url, 0.5), RedisLeader(broker_url, 0.5)
    assert first() and not second()
    time.sleep(0.3)
    assert first() and not second()  # the holder renews its lease
    time.sleep(0.8)  # the holder stopped renewing (its process died)
    assert second() and not first()


def test_of_two_sweepers_only_one_sweeps(broker_url: str, sqlite_engine: Engine) -> None:
    redis.Redis.from_url(broker_url).delete(RedisLeader.KEY)
    factory = make_session_factory(sqlite_engine)
    passes = {"a": 0, "b": 0}

    def counted(name: str) -> Callable[[], bool]:
        leader = RedisLeader(broker_url, 0.5)

        def lead() -> bool:
            ok = leader()
            passes[name] += ok
            return ok

        return lead

    sweepers = [Sweeper(factory, lambda jobs: None, 0.1, counted(name)) for name in passes]
    time.sleep(2.0)
    for sweeper in sweepers:
        sweeper.close()
    assert sorted(passes.values())[0] == 0, passes  # the other never swept
    assert sum(passes.values()) >= 10, passes
