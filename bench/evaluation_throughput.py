"""Evaluation efficiency through the whole worker path: trace, verify, compile, train, score.

For each environment, 8 distinct drifts go through the path twice in the same run:
- batch=1 on a cold trainer: every candidate alone, each with a freshly started trainer process
  (about what a per-candidate process cost before the trainer was warm and batched);
- batch=8 on a warm trainer: the 8 traced in parallel sandboxes, then trained as one program.
Efficiency = (time the bare warm-start PPO program needs for the same lanes, measured here, compile
excluded) / (wall time through the worker path). Prints, per case, exactly
`efficiency ENV batch=K: X`, then candidates per hour.
Run: .venv/bin/python bench/evaluation_throughput.py [--envs CartPole-v1,Breakout-MinAtar] [--profile quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from service.evaluation import anchor_for, env_score, trace_many, train_artifacts
from service.runs.protocol import learning_rates
from service.settings import Settings
from workers.rl.plugins import warm_start_plugins
from workers.trainer.client import POOL
from workers.trainer.server import train_lanes
from workers.vocabulary import Outcome

CANDIDATES = 8


def drifts() -> list[str]:
    """Eight distinct, reasonable drifts (clip variants with their own widths and slopes)."""
    out = []
    for k in range(CANDIDATES):
        width, slope = 0.5 + 0.15 * k, 1.0 + 0.1 * k
        out.append(f'''import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    clipped = jnp.clip(ratio, 1.0 - {width:.2f} * epsilon, 1.0 + {width:.2f} * epsilon)
    return {slope:.2f} * jax.nn.relu((ratio - clipped) * advantage)
''')
    return out


def through_worker(settings: Settings, env: str, profile: str, seeds: list[int], codes: list[str]
                   ) -> tuple[list[float], str]:
    """Scores, and where the time went (tracing; the trainer's compile and train)."""
    started = time.perf_counter()
    traced = trace_many(settings, "lpo", codes)
    trace_s = time.perf_counter() - started
    artifacts = [t.artifact for t in traced if t.outcome is Outcome.ok and t.artifact]
    if len(artifacts) != len(codes):
        raise SystemExit(f"tracing failed: {[t.error for t in traced if t.outcome is not Outcome.ok]}")
    rates = learning_rates("lpo", env, profile, "grid")
    anchor = anchor_for(settings, "lpo", env, profile, rates, seeds)
    results = train_artifacts(settings, "lpo", env, profile, seeds, rates, artifacts, anchor)
    if any(r.result is None for r in results):
        raise SystemExit(f"training failed: {[r.error for r in results if r.result is None]}")
    first = results[0].result
    assert first is not None
    where = f"trace {trace_s:.1f} s, compile {first.compile_seconds:.1f} s, train {first.train_seconds:.1f} s"
    return [env_score(r.result, anchor).comparison.score for r in results if r.result is not None], where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="CartPole-v1,Breakout-MinAtar")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    codes = drifts()
    settings = Settings(cache_dir=Path(tempfile.mkdtemp(prefix="discovery-bench-")), database_url="sqlite://")
    for env in args.envs.split(","):
        lrs = learning_rates("lpo", env, args.profile, "grid")
        bare = train_lanes(env, args.profile, seeds, lrs, warm_start_plugins(), candidates=CANDIDATES)
        bare_seconds = bare.train_seconds
        lanes = CANDIDATES * len(lrs) * len(seeds)
        print(f"{env} {args.profile}: bare warm-start PPO for {lanes} lanes: {bare_seconds:.1f} s (compile excluded)",
              flush=True)
        anchor_for(settings, "lpo", env, args.profile, lrs, seeds)  # measured once per host, as in production

        started = time.perf_counter()
        scores = []
        for code in codes:
            POOL.close()  # a cold trainer for every candidate
            scores += through_worker(settings, env, args.profile, seeds, [code])[0]
        cold = time.perf_counter() - started
        print(f"efficiency {env} batch=1: {bare_seconds / cold:.3f}")
        print(f"  {CANDIDATES / cold * 3600:.0f} candidates/hour ({cold:.1f} s for {CANDIDATES}; "
              f"point scores on {len(seeds)} seeds, no interval, a sanity check only: "
              f"{' '.join(f'{s:.2f}' for s in scores)})", flush=True)

        through_worker(settings, env, args.profile, seeds, codes[:1])  # the trainer is up and warm
        started = time.perf_counter()
        scores, where = through_worker(settings, env, args.profile, seeds, codes)
        warm = time.perf_counter() - started
        print(f"efficiency {env} batch={CANDIDATES}: {bare_seconds / warm:.3f}")
        print(f"  {CANDIDATES / warm * 3600:.0f} candidates/hour ({warm:.1f} s for {CANDIDATES}: {where}; "
              f"point scores on {len(seeds)} seeds, no interval, a sanity check only: "
              f"{' '.join(f'{s:.2f}' for s in scores)})", flush=True)
    POOL.close()


if __name__ == "__main__":
    main()
