"""Prometheus metrics: request counts and latencies, and run/candidate states read from the database."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.models import Candidate, Evaluation, Run

registry = CollectorRegistry()
requests_total = Counter("discovery_http_requests_total", "HTTP requests", ["method", "route", "status"],
                         registry=registry)
request_seconds = Histogram("discovery_http_request_seconds", "HTTP request latency", ["method", "route"],
                            registry=registry)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    requests_total.labels(method, route, str(status)).inc()
    request_seconds.labels(method, route).observe(seconds)


class RequestMetrics:
    """ASGI middleware counting every HTTP request by method, route template and status, with its latency.

    Plain ASGI rather than `@app.middleware("http")`, whose per-request task and streams cost more than the
    read endpoints themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            observe_request(scope["method"], getattr(route, "path", "unmatched"), status,
                            time.perf_counter() - started)


def render(factory: sessionmaker[Session]) -> bytes:
    """The exposition text: the process's counters plus gauges read from the database now."""
    with factory() as session:
        runs = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
        candidates = session.execute(select(Candidate.status, func.count()).group_by(Candidate.status)).all()
        eval_seconds = session.scalar(
            select(func.coalesce(func.sum(Evaluation.compile_seconds + Evaluation.train_seconds), 0.0)))
    runs_gauge = GaugeMetricFamily("discovery_runs", "runs by status", labels=["status"])
    for status, count in runs:
        runs_gauge.add_metric([status], count)
    cand_gauge = GaugeMetricFamily("discovery_candidates", "candidates by status", labels=["status"])
    for status, count in candidates:
        cand_gauge.add_metric([status], count)
    seconds = GaugeMetricFamily("discovery_evaluation_seconds_total", "compile + train seconds of all evaluations")
    seconds.add_metric([], float(eval_seconds or 0.0))

    class Snapshot:
        def collect(self):  # noqa: ANN202
            yield from (runs_gauge, cand_gauge, seconds)

    snapshot_registry = CollectorRegistry()
    snapshot_registry.register(Snapshot())
    return generate_latest(registry) + generate_latest(snapshot_registry)
