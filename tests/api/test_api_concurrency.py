"""Many more concurrent requests than the API process has threads and pooled connections: all are answered,
and live event streams do not take the places of other requests (service/api/admission.py).

A request used to keep its database connection while it waited for a thread to run its route (and again
to close its session in); with every thread blocked waiting for a connection, the process hung until the
pool's 30 s timeout and answered 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from service.db import session_scope
from service.db.models import Run
from service.keys import find_key
from service.settings import Settings
from tests.api.conftest import serve
from workers.vocabulary import RunStatus


async def get_all(url: str, key: str, paths: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=20,
                                 limits=httpx.Limits(max_connections=len(paths))) as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    return [r.status_code for r in responses]


def test_a_burst_far_above_the_thread_and_connection_pools_is_answered(postgres_database: Callable[[], str],
                                                                       tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_database(), broker_url=None, cache_dir=tmp_path, api_threads=2)
    for server in serve(settings):  # a generator of one server
        key = server.new_key()
        reads = {"/v1/runs": 200, "/v1/runs/absent": 404, "/v1/runs/absent/candidates": 404}
        paths = list(reads) * 20  # 60 at once, against 2 threads and 2 + 10 connections
        assert asyncio.run(get_all(server.url, key, paths)) == [reads[path] for path in paths]
        read_pool = server.runtime.read_factory.kw["bind"].sync_engine.pool
        assert read_pool.checkedin() >= 1
    assert read_pool.checkedin() == 0  # the stopped server closed its read connections, on its own event loop


async def read_while_streaming(url: str, key: str, run_id: str, streams: int) -> int:
    """Open `streams` live event streams of a run and keep them open while one more request is made."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        async with AsyncExitStack() as open_streams:
            for _ in range(streams):
                response = await open_streams.enter_async_context(client.stream("GET", f"/v1/runs/{run_id}/events"))
                assert response.status_code == 200
            return (await client.get(f"/v1/runs/{run_id}")).status_code


def test_live_event_streams_do_not_hold_the_places_of_other_requests(postgres_database: Callable[[], str],
                                                                    tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_database(), broker_url=None, cache_dir=tmp_path, api_threads=2)
    for server in serve(settings):  # a generator of one server
        key = server.new_key()
        with session_scope(server.runtime.factory) as session:
            owner = find_key(session, key)
            run = Run(owner_key_id=owner.id, status=RunStatus.RUNNING, target="lpo", train_envs=["CartPole-v1"],
                      test_envs=[], profile="smoke", proposer={"kind": "evolution"}, budget={"candidates": 1},
                      concurrency=1, seed=0, seeds_per_eval=1, config={})
            session.add(run)
            session.flush()
            run_id = run.id
        assert asyncio.run(read_while_streaming(server.url, key, run_id, streams=4)) == 200
