"""Correctness check at full scale: the warm start (PPO) on CartPole-v1 with the `full` profile, 8 seeds.

PureJaxRL reaches about 500; the bar is a mean final return of at least 450.
Run: .venv/bin/python bench/warm_start_full.py [--env CartPole-v1] [--profile full] [--seeds 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workers.rl.envs import get_config
from workers.rl.scoring import final_returns
from workers.trainer.server import train_lanes, warm_start_plugins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    config = get_config(args.env, args.profile)
    lrs = config.learning_rates()
    arrays = train_lanes(args.env, args.profile, list(range(args.seeds)), lrs, warm_start_plugins())
    compile_s, train_s = arrays.compile_seconds, arrays.train_seconds
    returns = final_returns(arrays.return_sum[0], arrays.episodes[0])  # [lr, seed]
    print(f"env {args.env}  profile {args.profile}  seeds {args.seeds}  env steps per lane {config.env_steps}")
    for lr, per_seed in zip(lrs, returns, strict=True):
        print(f"  lr {lr:<8g} mean final return {np.mean(per_seed):8.2f}  per seed {np.round(per_seed, 1).tolist()}")
    best = int(np.argmax(returns.mean(axis=1)))
    print(f"best lr {lrs[best]:g}: mean final return {returns[best].mean():.2f} (bar: >= 450 on CartPole-v1)")
    print(f"compile {compile_s:.1f} s, train {train_s:.1f} s, total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
