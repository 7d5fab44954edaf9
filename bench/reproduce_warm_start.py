"""The paper's warm start (PPO) at the `full` profile, next to the paper's own PPO returns, and what a
`paper` run costs on this machine.

For every environment of the paper's LLM-LPO meta-test (gymnax only: no Brax Ant) it trains the
warm start with the environment's published learning rate only (the `fixed` protocol), on seeds
0..N-1, and prints PPO's mean final return with its spread over seeds next to the paper's
normaliser (its fixed PPO return), the env steps/s and the compile and train seconds.

Each environment's cost is estimated first from a short probe (the same program with 1% of the
updates, at least 4, run twice); an environment whose estimate does not fit in what is left of
`--budget-minutes` is skipped with one line, and the command to run it elsewhere (a GPU machine) is
printed at the end. Then it estimates, from the throughput measured here, what the `paper` preset
costs on this machine: one search candidate (Breakout-MinAtar, full, 8 seeds), the meta-test (best
candidate, warm start and DPO on five environments with 16 seeds) and the whole run.

Run: .venv/bin/python bench/reproduce_warm_start.py [--envs CartPole-v1,Breakout-MinAtar] [--seeds 8]
     [--budget-minutes 30]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

import jax
import numpy as np

from workers.rl.envs import PPOConfig, get_config, get_env_spec
from workers.rl.plugins import warm_start_plugins
from workers.rl.ppo import lane_inputs, make_lanes_train
from workers.rl.scoring import final_returns
from workers.trainer.server import train_lanes

# The paper's fixed PPO return per environment: what it divides a candidate's return by.
PAPER_PPO = {
    "CartPole-v1": 475.0,
    "Breakout-MinAtar": 50.08,
    "Asterix-MinAtar": 15.04,
    "Freeway-MinAtar": 61.84,
    "SpaceInvaders-MinAtar": 167.09,
}
PROFILE = "full"
# The `paper` preset: meta-train on Breakout with 8 seeds and 30 proposals; meta-test three
# algorithms (the best candidate, the warm start, DPO) on the five environments with 16 seeds.
META_TRAIN, SEARCH_SEEDS, PROPOSALS = "Breakout-MinAtar", 8, 30
META_TEST, TEST_SEEDS, TEST_ALGORITHMS = tuple(PAPER_PPO), 16, 3


@dataclass
class Probe:
    updates: int
    compile_seconds: float
    train_seconds: float

    def per_update(self) -> float:
        return self.train_seconds / self.updates


@dataclass
class Measured:
    """What one environment cost here: from the full run when it ran, else from the probe."""

    env: str
    config: PPOConfig
    seeds: int
    probe: Probe
    estimate_seconds: float
    returns: np.ndarray | None = None  # [seed]: mean final return per seed, when the full run ran
    compile_seconds: float | None = None
    train_seconds: float | None = None

    def steps_per_second(self) -> float:
        """Env steps per second over all seeds, compile excluded."""
        if self.train_seconds is not None:
            return self.config.env_steps * self.seeds / self.train_seconds
        return self.probe.updates * self.config.num_envs * self.config.num_steps * self.seeds / self.probe.train_seconds

    def source(self) -> str:
        return "full run" if self.train_seconds is not None else f"{self.probe.updates}-update probe"

    def compile_estimate(self) -> float:
        return self.compile_seconds if self.compile_seconds is not None else self.probe.compile_seconds


def probe(env: str, config: PPOConfig, seeds: list[int], lr: float) -> Probe:
    """The same program with a few updates, run twice: its compile time and its time per update."""
    updates = max(4, config.num_updates // 100)
    short = config.model_copy(update={"total_timesteps": updates * config.num_envs * config.num_steps})
    inputs = lane_inputs(env, short, 1, [lr], seeds)
    started = time.perf_counter()
    compiled = make_lanes_train(env, short, warm_start_plugins()).lower(*inputs).compile()
    compile_seconds = time.perf_counter() - started
    train_seconds = float("inf")
    for _ in range(2):  # the first call carries a fixed start-up cost that a longer run does not multiply
        started = time.perf_counter()
        jax.block_until_ready(compiled(*inputs))
        train_seconds = min(train_seconds, time.perf_counter() - started)
    return Probe(updates, compile_seconds, train_seconds)


def minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def command(envs: list[str], seeds: int, budget_minutes: float) -> str:
    return (f".venv/bin/python bench/reproduce_warm_start.py --envs {','.join(envs)} --seeds {seeds} "
            f"--budget-minutes {math.ceil(budget_minutes)}")


def print_table(rows: list[Measured], skipped: list[str], estimates: dict[str, float]) -> None:
    print("| environment | lr | env steps per seed | seeds | PPO mean final return | std over seeds | min .. max "
          "| paper's PPO (normaliser) | ours / paper | env steps/s | compile s | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m in rows:
        assert m.returns is not None and m.compile_seconds is not None and m.train_seconds is not None
        mean, paper = float(np.mean(m.returns)), PAPER_PPO[m.env]
        print(f"| {m.env} | {m.config.lr:g} | {m.config.env_steps:,} | {m.seeds} | {mean:.2f} "
              f"| {np.std(m.returns):.2f} | {np.min(m.returns):.2f} .. {np.max(m.returns):.2f} | {paper:g} "
              f"| {mean / paper:.2f} | {m.steps_per_second():,.0f} | {m.compile_seconds:.1f} | {m.train_seconds:.1f} |")
    for env in skipped:
        estimate = f"estimated {minutes(estimates[env])} here" if env in estimates else "not measured"
        print(f"| {env} | {get_env_spec(env).lr:g} | {get_config(env, PROFILE).env_steps:,} | | not run "
              f"({estimate}) | | | {PAPER_PPO[env]:g} | | | | |")


def print_paper_cost(measured: dict[str, Measured]) -> None:
    print("\nWhat a `paper` run costs on this machine (ESTIMATES, from the throughput measured above):")
    search = measured.get(META_TRAIN)
    if search is None:
        print(f"  {META_TRAIN} was not measured: run with it in --envs to estimate the search.")
        candidate = None
    else:
        sps = search.steps_per_second()
        candidate = search.compile_estimate() + search.config.env_steps * SEARCH_SEEDS / sps
        print(f"  based on: {META_TRAIN} at {sps:,.0f} env steps/s over {search.seeds} seeds ({search.source()}), "
              f"compile {search.compile_estimate():.1f} s; the time is assumed proportional to the number of seeds "
              f"(true on a saturated CPU, pessimistic on a GPU)")
        print(f"  one search candidate ({META_TRAIN}, {PROFILE}, {SEARCH_SEEDS} seeds, one learning rate): "
              f"{minutes(candidate)}")
    test_total, missing = 0.0, []
    for env in META_TEST:
        m = measured.get(env)
        if m is None:
            missing.append(env)
            continue
        one = m.compile_estimate() + m.config.env_steps * TEST_SEEDS / m.steps_per_second()
        test_total += TEST_ALGORITHMS * one
        print(f"  meta-test {env}, {TEST_SEEDS} seeds: {minutes(one)} per algorithm "
              f"({m.steps_per_second():,.0f} env steps/s, {m.source()})")
    at_least = "at least " if missing else ""
    not_measured = f" (not measured: {', '.join(missing)})" if missing else ""
    print(f"  meta-test, {TEST_ALGORITHMS} algorithms (best candidate, warm start, DPO) x {len(META_TEST)} "
          f"environments: {at_least}{minutes(test_total)}{not_measured}")
    if candidate is None:
        return
    trainings = 1 + PROPOSALS  # the warm start on the search seeds (the baseline), then every proposal
    whole = trainings * candidate + test_total
    print(f"  search: {trainings} trainings (the warm start's baseline + {PROPOSALS} proposals) = "
          f"{minutes(trainings * candidate)}")
    print(f"  whole run, with no re-evaluation: {at_least}{minutes(whole)}; each re-evaluation of a new best adds "
          f"{minutes(candidate)} (the first also trains the warm start on the re-evaluation seeds: another "
          f"{minutes(candidate)})")
    print("  not included: sandbox tracing (seconds per candidate), the proposer's latency, the random-policy "
          "baselines (rollouts without learning), and the overhead of running a candidate through its exported "
          "module instead of native code (bench/rl_throughput.py measures it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(PAPER_PPO), help="comma-separated, from: " + ", ".join(PAPER_PPO))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    args = parser.parse_args()
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in envs if e not in PAPER_PPO]
    if unknown:
        raise SystemExit(f"no paper reference for {', '.join(unknown)}; known: {', '.join(PAPER_PPO)}")
    seeds = list(range(args.seeds))
    budget = args.budget_minutes * 60
    started = time.perf_counter()
    print(f"warm start (PPO) at the `{PROFILE}` profile, the published learning rate only, seeds 0..{args.seeds - 1}; "
          f"backend {jax.default_backend()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the "
          f"start: other processes slow every figure below); budget {minutes(budget)}", flush=True)

    measured: dict[str, Measured] = {}
    for env in envs:  # probe everything first: the estimates decide what runs, and feed the cost of a paper run
        config = get_config(env, PROFILE)
        p = probe(env, config, seeds, config.lr)
        estimate = p.compile_seconds + config.num_updates * p.per_update()
        measured[env] = Measured(env, config, args.seeds, p, estimate)
        print(f"{env}: probe of {p.updates}/{config.num_updates} updates: compile {p.compile_seconds:.1f} s, "
              f"{measured[env].steps_per_second():,.0f} env steps/s; full run estimated at {minutes(estimate)}",
              flush=True)

    trained, skipped = [], []
    for env in envs:
        m, left = measured[env], budget - (time.perf_counter() - started)
        if m.estimate_seconds > left:
            print(f"{env}: SKIPPED, estimated {minutes(m.estimate_seconds)} does not fit in the "
                  f"{minutes(max(0.0, left))} left", flush=True)
            skipped.append(env)
            continue
        arrays = train_lanes(env, PROFILE, seeds, [m.config.lr], warm_start_plugins())
        m.returns = final_returns(arrays.return_sum[0], arrays.episodes[0])[0]  # [seed]
        m.compile_seconds, m.train_seconds = arrays.compile_seconds, arrays.train_seconds
        print(f"{env}: trained in {minutes(m.compile_seconds + m.train_seconds)} (estimated "
              f"{minutes(m.estimate_seconds)}); per seed {np.round(m.returns, 2).tolist()}", flush=True)
        trained.append(m)

    print()
    print_table(trained, skipped, {e: measured[e].estimate_seconds for e in skipped})
    if skipped:
        rest = sum(measured[e].estimate_seconds for e in skipped)
        print(f"\nNot run here (estimated {minutes(rest)} on this machine). On a GPU machine:")
        print('  .venv/bin/pip install "jax[cuda12]==0.10.2"')
        print(f"  {command(skipped, args.seeds, max(30.0, rest / 60))}")
    print_paper_cost(measured)
    print(f"\ntotal wall time of this bench: {minutes(time.perf_counter() - started)}")


if __name__ == "__main__":
    main()
