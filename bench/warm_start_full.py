"""Correctness check at full scale: the warm start (PPO) on CartPole-v1 with the `full` profile, 8 seeds.

PureJaxRL reaches about 500; the bar is a mean final return of at least 450.
Run: .venv/bin/python bench/warm_start_full.py [--env CartPole-v1] [--profile full] [--seeds 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workers.evaluate import train_plugins, warm_start_plugins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    result = train_plugins(args.env, args.profile, list(range(args.seeds)), None, warm_start_plugins())
    print(f"env {args.env}  profile {args.profile}  seeds {args.seeds}  env steps per lane {result.env_steps}")
    for lr, returns in zip(result.learning_rates, result.returns, strict=True):
        print(f"  lr {lr:<8g} mean final return {np.mean(returns):8.2f}  per seed {np.round(returns, 1).tolist()}")
    print(f"best lr {result.best_lr:g}: mean final return {result.final_return:.2f} (bar: >= 450 on CartPole-v1)")
    print(f"compile {result.compile_seconds:.1f} s, train {result.train_seconds:.1f} s, "
          f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
