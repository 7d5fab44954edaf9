"""Search strategies at a fixed budget: evolution with and without islands and early stopping.

Runs the evolution proposer (no network) once per strategy, each with the same proposals budget, seed
and meta-train environments (two by default, since early stopping acts after the first), in this
process with the local executor and a fresh SQLite database per run, then prints for each strategy:
- the best verified score (the run's best on fresh verification seeds) and the share of proposals
  within 20% of the warm start,
- compute used: environment trainings (one candidate on one environment, search and re-evaluation) and
  the seconds they took (compile + train),
- for early stopping, what stopping cost: each stopped candidate is trained afterwards on the
  environments it skipped (off the clock, same seeds) to see whether it would have ranked differently:
  how many would have scored above the run's median, and whether any would have beaten the run's best.
Run: .venv/bin/python bench/search_strategies.py [--envs CartPole-v1 Acrobot-v1] [--profile smoke]
     [--candidates 12] [--seed 0] [--strategies baseline islands early both] [--margin 0.5]
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path
from statistics import mean, median
from typing import Any

from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Artifact, Candidate, Evaluation, Run
from service.evaluation import env_score, evaluate_artifacts
from service.runs.protocol import seed_plan
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings, get_settings
from workers.vocabulary import RUN_FINAL_STATUSES, EvalPhase

STRATEGIES = ("baseline", "islands", "early", "both")


def search_of(strategy: str, margin: float) -> dict[str, Any]:
    islands = {"islands": 2, "migration_interval": 3} if strategy in ("islands", "both") else {}
    stopping = {"early_stopping": {"margin": margin, "min_evaluated": 3}} if strategy in ("early", "both") else {}
    return {**islands, **stopping}


def run_strategy(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"discovery-search-{name}-"))
    settings = Settings(database_url=f"sqlite:///{folder / 'search.db'}", broker_url=None,
                        cache_dir=get_settings().cache_dir)
    upgrade_database(settings.database_url)
    runtime = build_runtime(settings, local_workers=args.concurrency, sweep_interval=5.0)
    spec = RunSpec.model_validate({
        "target": "lpo", "profile": args.profile, "seed": args.seed, "concurrency": args.concurrency,
        "environments": {"train": args.envs, "test": args.envs[:1]}, "seeds_per_eval": args.seeds,
        "metatest_seeds": 1, "budget": {"candidates": args.candidates}, "proposer": {"kind": "evolution"},
        "search": search_of(name, args.margin),
    })
    started = time.monotonic()
    try:
        run_id = start_run(runtime, spec)
        while True:
            with session_scope(runtime.factory) as session:
                if session.get(Run, run_id).status in RUN_FINAL_STATUSES:
                    break
            time.sleep(5)
        return summarise(runtime, run_id, name, (time.monotonic() - started) / 60)
    finally:
        runtime.executor.close()


def summarise(runtime: Runtime, run_id: str, name: str, minutes: float) -> dict[str, Any]:
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        proposals = session.scalars(select(Candidate).where(
            Candidate.run_id == run_id, Candidate.index > 0, Candidate.reference.is_(None))).all()
        trainings = session.scalars(select(Evaluation).join(Candidate).where(
            Candidate.run_id == run_id, Evaluation.phase.in_([EvalPhase.TRAIN, EvalPhase.REEVAL]))).all()
        scores = [c.score for c in proposals if c.score is not None and not c.stopped_early]
        stopped = [c for c in proposals if c.stopped_early]
        row = {
            "strategy": name, "status": run.status, "minutes": minutes, "best": run.best_score,
            "within": sum(c.score is not None and c.score >= 0.8 for c in proposals) / max(len(proposals), 1),
            "trainings": len(trainings),
            "seconds": sum((e.compile_seconds or 0) + (e.train_seconds or 0) for e in trainings),
            "stopped": len(stopped), "false_stops": 0, "would_beat_best": 0,
        }
        if not stopped:
            return row
        plan, first = seed_plan(run, EvalPhase.TRAIN), run.train_envs[0]
        artifacts = [base64.b64encode(session.get(Artifact, c.artifact_sha256).data).decode() for c in stopped]
        partial = {c.id: c.score for c in stopped}
        target, profile, protocol = run.target, run.profile, run.lr_protocol
        best_search = max([c.score for c in proposals if c.id == run.best_candidate_id] or [1.0])
        middle = median(scores + [1.0])
    full: dict[str, list[float]] = {c.id: [partial[c.id]] for c in stopped}
    for env in run.train_envs:
        if env == first:
            continue
        results, anchor = evaluate_artifacts(runtime.settings, target, env, profile, protocol, plan, artifacts,
                                             [None] * len(artifacts))
        for candidate, result in zip(stopped, results, strict=True):
            full[candidate.id].append(env_score(result.result, anchor).comparison.score if result.result
                                      else float("-inf"))
    totals = [mean(values) for values in full.values()]
    row["false_stops"] = sum(total >= middle for total in totals)
    row["would_beat_best"] = sum(total > best_search for total in totals)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--margin", type=float, default=0.5, help="early stopping: how far below the median")
    args = parser.parse_args()
    print(f"lpo, evolution, {args.candidates} proposals, seed {args.seed}, {args.profile} on {', '.join(args.envs)} "
          f"({args.seeds} search seeds); early stopping margin {args.margin}")
    print(f"{'strategy':10} {'status':10} {'min':>5} {'best':>6} {'within20%':>9} {'trainings':>9} {'train s':>8} "
          f"{'stopped':>7} {'false':>5} {'beat best':>9}")
    for name in args.strategies:
        r = run_strategy(name, args)
        best = "-" if r["best"] is None else f"{r['best']:.3f}"
        print(f"{r['strategy']:10} {r['status']:10} {r['minutes']:5.1f} {best:>6} {r['within']:9.0%} "
              f"{r['trainings']:9} {r['seconds']:8.0f} {r['stopped']:7} {r['false_stops']:5} {r['would_beat_best']:9}",
              flush=True)
    print("trainings: one candidate on one environment (search and re-evaluation); stopped: early-stopped "
          "candidates; false: of those, how many would have scored at least the run's median had they been "
          "trained on every environment; beat best: how many would have beaten the run's best search score")


if __name__ == "__main__":
    main()
