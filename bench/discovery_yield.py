"""Discovery yield of the offline proposer: does evolution find candidates worth their training on a real game?

Runs the evolution proposer (no network) for `--candidates` proposals on `--env` (Breakout-MinAtar, `quick`,
2 search seeds) in this process with the local executor and a fresh SQLite database, meta-tests the best
on one held-out game, then prints:
- the share of proposals scoring within 20% of the warm start (score >= 0.8) and above it (> 1.0),
- behavioural duplicates: children turned down before training (counted by operator), and proposals
  recorded as duplicates (never trained); and how many candidates were trained twice for nothing (0),
- the best verified score (with its verdict) and the best's meta-test on the held-out game,
- each operator's children: tried, turned down (rule, duplicate), proposed, within 20%, above the warm start.
Goals: >= 50% of proposals within 20% of the warm start, and no behavioural duplicate trained.
Run: .venv/bin/python bench/discovery_yield.py [--env Breakout-MinAtar] [--test-env SpaceInvaders-MinAtar]
     [--candidates 16] [--seeds 2] [--seed 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Candidate, Evaluation, Run
from service.runs.queries.stats import operator_stats
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import build_runtime
from service.settings import Settings, get_settings
from workers.vocabulary import RUN_FINAL_STATUSES, EvalPhase

WITHIN = 0.8  # within 20% of the warm start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Breakout-MinAtar")
    parser.add_argument("--test-env", default="SpaceInvaders-MinAtar")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="discovery-yield-"))
    settings = Settings(database_url=f"sqlite:///{folder / 'yield.db'}", broker_url=None,
                        cache_dir=get_settings().cache_dir)
    upgrade_database(settings.database_url)
    runtime = build_runtime(settings, local_workers=args.concurrency, sweep_interval=5.0)
    spec = RunSpec.model_validate({
        "target": "lpo", "profile": args.profile, "seed": args.seed, "concurrency": args.concurrency,
        "environments": {"train": [args.env], "test": [args.test_env]}, "seeds_per_eval": args.seeds,
        "metatest_seeds": args.seeds, "budget": {"candidates": args.candidates}, "proposer": {"kind": "evolution"},
    })
    started = time.monotonic()
    try:
        run_id = start_run(runtime, spec)
        while True:
            with session_scope(runtime.factory) as session:
                status = session.get(Run, run_id).status
            if status in RUN_FINAL_STATUSES:
                break
            time.sleep(5)
        minutes = (time.monotonic() - started) / 60
        with session_scope(runtime.factory) as session:
            run = session.get(Run, run_id)
            proposals = session.scalars(select(Candidate).where(
                Candidate.run_id == run_id, Candidate.index > 0, Candidate.reference.is_(None))).all()
            trained = set(session.scalars(select(Evaluation.candidate_id).where(Evaluation.phase == EvalPhase.TRAIN)))
            tests = {(e.candidate_id, e.env): e for e in session.scalars(
                select(Evaluation).where(Evaluation.phase == EvalPhase.TEST))}
            warm_id = session.scalar(select(Candidate.id).where(Candidate.run_id == run_id, Candidate.is_warm_start))
            scores = [c.verified_score if c.verified_score is not None else c.score for c in proposals]
            recorded_duplicates = [c for c in proposals if c.duplicate_of is not None]
            fingerprints = Counter(c.fingerprint for c in proposals if c.id in trained and c.fingerprint)
            turned_down = sum(f.get("behavioural duplicate", 0) for f in run.operator_attempts.values())
            n = len(proposals)
            print(f"run {run_id}: {status} in {minutes:.1f} min; lpo on {args.env} ({args.profile}, {args.seeds} "
                  f"seeds), evolution, {n} proposals, seed {args.seed}")
            print(f"within 20% of the warm start: {sum(s is not None and s >= WITHIN for s in scores)}/{n} "
                  f"({sum(s is not None and s >= WITHIN for s in scores) / max(n, 1):.0%}); "
                  f"above it: {sum(s is not None and s > 1.0 for s in scores)}/{n}; "
                  f"failed or not trained: {sum(s is None for s in scores)}/{n}")
            print(f"behavioural duplicates: {turned_down} children turned down before proposal, "
                  f"{len(recorded_duplicates)} proposals recorded as duplicates (not trained); "
                  f"trained twice: {sum(k - 1 for k in fingerprints.values())}")
            best = run.best_score
            print(f"best verified score: {best:.3f} ({run.best_verdict or 'the warm start'})" if best is not None
                  else "best verified score: none")
            for env in run.test_envs:
                best_cell, warm_cell = tests.get((run.best_candidate_id, env)), tests.get((warm_id, env))
                shown = [f"{label} {cell.normalised_score:.3f} (return {cell.final_return:.1f})"
                         if cell is not None and cell.normalised_score is not None else f"{label} -"
                         for label, cell in (("best", best_cell), ("warm start", warm_cell))]
                print(f"meta-test on {env}: " + ", ".join(shown))
            print(f"{'operator':10} {'tried':>6} {'rule':>5} {'dup':>4} {'proposed':>9} {'within20%':>10} {'above':>6}")
            for row in operator_stats(session, run):
                print(f"{row.operator:10} {row.tried:6} {row.broke_a_rule:5} {row.behavioural_duplicates:4} "
                      f"{row.proposed:9} {row.within_20_percent:10} {row.above_warm_start:6}")
    finally:
        runtime.executor.close()


if __name__ == "__main__":
    main()
