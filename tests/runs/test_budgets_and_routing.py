"""The cost and wall-time budgets stop a run's search at their limits (and not before), and each kind of task
reaches its own Celery queue (propose, evaluate, webhooks), so a deployment can size each pool apart."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from service.db import utcnow
from service.db.models import Run
from service.executors.celery import CeleryExecutor
from service.runs.orchestrator import budget_spent
from tests.conftest import PrivateRedis
from workers.vocabulary import Task, TaskKind


def run_with(budget: dict[str, float], **columns: object) -> Run:
    return Run(target="lpo", profile="smoke", proposer={"kind": "evolution"}, seeds_per_eval=1,
               budget={"candidates": 10, **budget}, **columns)


def test_the_cost_budget_stops_the_search_at_its_limit() -> None:
    assert budget_spent(run_with({"cost_usd": 0.50}, cost_usd=0.49), proposals=3) is None
    assert budget_spent(run_with({"cost_usd": 0.50}, cost_usd=0.50), proposals=3) == "cost"
    assert budget_spent(run_with({"tokens": 1000}, tokens_used=1000), proposals=3) == "tokens"
    assert budget_spent(run_with({}, cost_usd=99.0, tokens_used=10**9), proposals=3) is None  # no such budget


def test_the_wall_time_budget_stops_the_search_once_it_has_run_that_long() -> None:
    started = utcnow()
    assert budget_spent(run_with({"wall_seconds": 60}, started_at=started - timedelta(seconds=50)), 3) is None
    assert budget_spent(run_with({"wall_seconds": 60}, started_at=started - timedelta(seconds=61)), 3) == "wall time"
    assert budget_spent(run_with({"wall_seconds": 60}), proposals=3) is None  # not started: no time spent
    assert budget_spent(run_with({"wall_seconds": 60}, started_at=started), proposals=10) == "candidates"


def test_each_kind_of_task_reaches_its_own_queue(session_factory: sessionmaker[Session],
                                                 private_redis: PrivateRedis) -> None:
    executor = CeleryExecutor(session_factory, private_redis.url, sweep_interval=3600)
    try:
        executor.publish([Task("p1", TaskKind.PROPOSE), Task("e1", TaskKind.EVALUATE),
                          Task("r1", TaskKind.REEVALUATE), Task("m1", TaskKind.METATEST),
                          Task("w1", TaskKind.WEBHOOK)])
    finally:
        executor.close()
    client = private_redis.client()

    def queued(queue: str) -> list[tuple[str, list[str]]]:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
        return sorted((m["headers"]["task"], json.loads(_body(m))[0]) for m in messages)

    assert queued("propose") == [("discovery.run_job", ["p1"])]
    assert queued("evaluate") == [("discovery.run_job", ["e1"]), ("discovery.run_job", ["m1"]),
                                  ("discovery.run_job", ["r1"])]
    assert queued("webhooks") == [("discovery.deliver_webhook", ["w1"])]


def _body(message: dict[str, object]) -> str:
    """The task's arguments, as kombu's Redis transport stores them (base64 JSON: [args, kwargs, embed])."""
    return base64.b64decode(str(message["body"])).decode()
