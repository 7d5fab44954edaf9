"""API load: how many reads a second the API serves on 100k candidates, and its latency at a fixed rate.

Fills a fresh database (PostgreSQL by default) with 100 runs x 1,000 candidates, serves the API with
`discovery serve --workers N` on loopback, then measures twice with a mix of the four read requests
(list runs, get a run, list a run's candidates by score, get a candidate):
1. capacity: `--clients` closed-loop clients for `--seconds`; requests per second.
2. fixed rate: requests started on a fixed schedule at `--rate` per second (open loop: a late request is
   timed from when it was due, so a stall is not hidden); p50 and p99 latency.
The load generator runs on the same machine; the CPU seconds of the generator, the API processes and
PostgreSQL are printed beside the figures, so the machine's whole budget is visible.
Goals (2 cores): >= 500 reads/s, and p99 < 50 ms at 300 req/s.
Run: .venv/bin/python bench/api_load.py [--workers 2] [--clients 32] [--seconds 20] [--rate 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO

import aiohttp
import httpx
import psutil
from sqlalchemy import create_engine, insert, text

from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Candidate, Run
from service.keys import create_key
from workers.targets import TARGETS

READS_PER_SECOND_GOAL = 500
P99_GOAL_MS = 50.0


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
                                 outcome="ok", score=random.random() * 2, verified_score=None))
            conn.execute(insert(Candidate), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # What autovacuum would do a minute later (mid-measurement), and the checkpoint of the fill's writes.
            conn.execute(text("VACUUM (ANALYZE)"))
            conn.execute(text("CHECKPOINT"))
    return key, run_ids, candidate_ids


@dataclass
class Reads:
    """The request mix: a random one of the four reads, on a random run or candidate."""

    run_ids: list[str]
    candidate_ids: list[str]

    def pick(self) -> tuple[str, str]:
        return random.choice([
            ("list runs", "/v1/runs?limit=50"),
            ("get run", f"/v1/runs/{random.choice(self.run_ids)}"),
            ("list candidates by score", f"/v1/runs/{random.choice(self.run_ids)}/candidates?sort=score&limit=50"),
            ("get candidate", f"/v1/candidates/{random.choice(self.candidate_ids)}"),
        ])


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)

    async def get(self, client: aiohttp.ClientSession, kind: str, path: str, due: float) -> None:
        try:
            async with client.get(path) as response:
                await response.read()
                if response.status != 200:
                    self.errors.append(f"{response.status} {path}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__} {path}")
            return
        self.latencies[kind].append(time.perf_counter() - due)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.latencies.values())


class CpuMeter:
    """CPU seconds used by this process (the load generator), the server's processes and PostgreSQL."""

    def __init__(self, server: psutil.Process) -> None:
        self.server = server
        self.start = self.sample()

    def sample(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of each process of each group (a PostgreSQL backend may start or end meanwhile)."""
        def cpu(processes: list[psutil.Process]) -> dict[int, float]:
            seconds = {}
            for p in processes:
                try:
                    times = p.cpu_times()
                    seconds[p.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            return seconds

        postgres = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
        return {"generator": cpu([psutil.Process()]),
                "api": cpu([self.server, *self.server.children(recursive=True)]),
                "postgres": cpu(postgres)}

    def used(self, seconds: float) -> str:
        now = self.sample()
        shares = {k: sum(cpu - self.start[k].get(pid, 0.0) for pid, cpu in now[k].items()) / seconds for k in now}
        parts = ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
        return f"CPU cores busy: {parts} (total {sum(shares.values()):.2f} of {os.cpu_count()})"


def client_session(base: str, key: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                 connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=10))


async def capacity(base: str, key: str, reads: Reads, clients: int, seconds: float) -> Tally:
    """Closed loop: each client sends its next request when the last one is answered."""
    tally = Tally()
    deadline = time.perf_counter() + seconds
    async with client_session(base, key, clients) as client:
        async def loop() -> None:
            while time.perf_counter() < deadline:
                kind, path = reads.pick()
                await tally.get(client, kind, path, time.perf_counter())

        await asyncio.gather(*(loop() for _ in range(clients)))
    return tally


async def fixed_rate(base: str, key: str, reads: Reads, rate: float, seconds: float) -> Tally:
    """Open loop: request i is due at start + i/rate, sent then whatever the earlier ones are doing."""
    tally = Tally()
    async with client_session(base, key, 256) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, path = reads.pick()
            tasks.append(asyncio.create_task(tally.get(client, kind, path, due)))
        await asyncio.gather(*tasks)
    return tally


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def report(tally: Tally) -> None:
    print(f"  {'request':28} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}")
    everything = [v for values in tally.latencies.values() for v in values]
    for kind, values in sorted(tally.latencies.items()):
        print(f"  {kind:28} {len(values):7} {percentile(values, 0.5):8.1f} {percentile(values, 0.99):8.1f}")
    print(f"  {'all':28} {len(everything):7} {percentile(everything, 0.5):8.1f} {percentile(everything, 0.99):8.1f}")


def wait_until_serving(base: str, server: subprocess.Popen[bytes], log: IO[bytes], workers: int,
                       seconds: float = 120) -> None:
    """Until every worker has started (a worker still importing would miss the first seconds) and /healthz answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        log.seek(0)
        if log.read().count(b"Application startup complete") >= workers:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    log.seek(0)
    sys.exit(f"the API did not start:\n{log.read().decode(errors='replace')[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database on 127.0.0.1")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/7",
                        help="the API's broker (needed for more than one worker; no job is started)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--per-run", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="API processes (discovery serve --workers)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second of the fixed-rate phase")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with socket.socket() as probe:  # else the figures could be another server's, still running on the port
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            sys.exit(f"port {args.port} is in use (an earlier run still shutting down?); wait or pass --port")
    created = None
    url = args.database_url
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    if url is None:
        created = f"discovery_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{created}"'))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{created}"
    t0 = time.perf_counter()
    key, run_ids, candidate_ids = fill(url, args.runs, args.per_run)
    reads = Reads(run_ids, candidate_ids)
    print(f"filled {len(run_ids)} runs, {len(candidate_ids):,} candidates in {time.perf_counter() - t0:.1f} s")
    env = {**os.environ, "DISCOVERY_DATABASE_URL": url, "DISCOVERY_BROKER_URL": args.broker_url}
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(args.port),
                               "--workers", str(args.workers), "--no-access-log"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_until_serving(base, server, log, args.workers)
        asyncio.run(capacity(base, key, reads, args.clients, 2.0))  # warm up every worker's pools and caches

        meter = CpuMeter(psutil.Process(server.pid))
        started = time.perf_counter()
        tally = asyncio.run(capacity(base, key, reads, args.clients, args.seconds))
        elapsed = time.perf_counter() - started
        throughput = tally.count / elapsed
        print(f"capacity: {args.workers} API workers, {args.clients} clients, {elapsed:.1f} s: "
              f"{tally.count:,} reads, {throughput:,.0f} reads/s, {len(tally.errors)} errors")
        print(f"  {meter.used(elapsed)}")
        report(tally)

        meter = CpuMeter(psutil.Process(server.pid))
        started = time.perf_counter()
        tally = asyncio.run(fixed_rate(base, key, reads, args.rate, args.seconds))
        elapsed = time.perf_counter() - started
        everything = [v for values in tally.latencies.values() for v in values]
        p99 = percentile(everything, 0.99)
        print(f"fixed rate: {args.rate:.0f} req/s for {args.seconds:.0f} s: {tally.count:,} reads, "
              f"p50 {percentile(everything, 0.5):.1f} ms, p99 {p99:.1f} ms, {len(tally.errors)} errors")
        print(f"  {meter.used(elapsed)}")
        report(tally)
        met = {True: "met", False: "NOT met"}
        print(f"goals: >= {READS_PER_SECOND_GOAL} reads/s: {met[throughput >= READS_PER_SECOND_GOAL]} "
              f"({throughput:,.0f}); p99 < {P99_GOAL_MS:.0f} ms at {args.rate:.0f} req/s: "
              f"{met[p99 < P99_GOAL_MS and not tally.errors]} "
              f"({p99:.1f} ms)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # uvicorn's parent and its worker processes
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        if created:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{created}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
