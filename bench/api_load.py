"""API load: many concurrent clients listing and reading runs and candidates on 100k candidates.

Fills a fresh database (PostgreSQL by default) with 100 runs x 1,000 candidates, serves the API with
uvicorn on loopback (one process), then runs concurrent clients for a fixed time and prints requests
per second and p50 / p99 latency per kind of request.
Run: .venv/bin/python bench/api_load.py [--database-url URL] [--clients 32] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import httpx
from sqlalchemy import create_engine, insert, text

from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Candidate, Run
from service.keys import create_key
from workers.targets import TARGETS


def fill(url: str, runs: int, per_run: int) -> tuple[str, list[str], list[str]]:
    upgrade_database(url)
    factory = make_session_factory(make_engine(url))
    with session_scope(factory) as session:
        key, row = create_key(session, "bench")
        owner = row.id
    engine = make_engine(url)
    run_ids, candidate_ids = [], []
    code = TARGETS["lpo"].warm_start
    with engine.begin() as conn:
        for r in range(runs):
            run_id = uuid.uuid4().hex
            run_ids.append(run_id)
            conn.execute(insert(Run), [dict(id=run_id, owner_key_id=owner, status="completed", target="lpo",
                                            train_envs=["CartPole-v1"], test_envs=["Acrobot-v1"], profile="smoke",
                                            proposer={"kind": "evolution"}, budget={"candidates": per_run},
                                            concurrency=2, seed=r, seeds_per_eval=2, config={})])
            rows = []
            for i in range(per_run):
                cid = uuid.uuid4().hex
                candidate_ids.append(cid)
                rows.append(dict(id=cid, run_id=run_id, index=i, is_warm_start=i == 0, name=f"candidate {i}",
                                 thought="", code=code, parent_ids=[], ast_hash=uuid.uuid4().hex, status="evaluated",
                                 outcome="ok", score=random.random() * 2, pooled_score=None))
            conn.execute(insert(Candidate), rows)
    return key, run_ids, candidate_ids


async def client_loop(base: str, key: str, run_ids: list[str], candidate_ids: list[str], deadline: float,
                      latencies: dict[str, list[float]], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while time.perf_counter() < deadline:
            kind, path = random.choice([
                ("list runs", "/v1/runs?limit=50"),
                ("get run", f"/v1/runs/{random.choice(run_ids)}"),
                ("list candidates by score", f"/v1/runs/{random.choice(run_ids)}/candidates?sort=score&limit=50"),
                ("get candidate", f"/v1/candidates/{random.choice(candidate_ids)}"),
            ])
            started = time.perf_counter()
            response = await client.get(path)
            latencies[kind].append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"{response.status_code} {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database on 127.0.0.1")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--per-run", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    created = None
    url = args.database_url
    if url is None:
        created = f"discovery_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{created}"'))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{created}"
    t0 = time.perf_counter()
    key, run_ids, candidate_ids = fill(url, args.runs, args.per_run)
    print(f"filled {len(run_ids)} runs, {len(candidate_ids):,} candidates in {time.perf_counter() - t0:.1f} s")
    env = {**os.environ, "DISCOVERY_DATABASE_URL": url}
    env.pop("DISCOVERY_BROKER_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(args.port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        deadline = time.perf_counter() + args.seconds

        async def run_all() -> None:
            await asyncio.gather(*(client_loop(base, key, run_ids, candidate_ids, deadline, latencies, errors)
                                   for _ in range(args.clients)))

        started = time.perf_counter()
        asyncio.run(run_all())
        elapsed = time.perf_counter() - started
        total = sum(len(v) for v in latencies.values())
        print(f"{args.clients} clients, {elapsed:.1f} s: {total:,} requests, {total / elapsed:,.0f} req/s, "
              f"{len(errors)} errors")
        print(f"{'request':28} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}")
        for kind, values in sorted(latencies.items()):
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(f"{kind:28} {len(values):7} {statistics.median(values) * 1000:8.1f} {p99 * 1000:8.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if created:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{created}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
