"""Is the verdict calibrated? The warm start against its own anchor, a crippled drift, and lane independence.

Per environment (CartPole-v1 and Breakout-MinAtar at `quick` by default), through the tracer's artifact and the
trainer's program (in this process, project code only):
1. the anchor: the warm start's artifact on `--anchor-seeds` seeds of its own (as the service measures it);
2. the warm start again on `--sets` disjoint sets of `--budget` fresh seeds, each raced as a contender is
   (rounds 2, 8, ..., budget; Bonferroni over the rounds): the share of `better` and of `worse` verdicts (goal:
   each <= 5%), and the spread of its point score at 2, 8 and 32 seeds;
3. a crippled drift (a huge quadratic penalty that pins the policy where it started) raced the same way: the
   share called `worse` (goal >= 80%);
4. lane independence: the same 32 seeds trained as programs of 2, 8 and 32 lanes: mean and spread of the
   final return with a 95% bootstrap interval, how many lanes are bitwise equal across programs, and a
   Mann-Whitney test of 2 against 32 lanes;
5. the signal-to-noise ratio of the `final` and the `auc` metric (the anchor's per-seed spread against its distance
   from the crippled drift);
6. the smallest improvement the default budget detects at 80% power, and the CPU seconds a decided verdict costs.
Run: .venv/bin/python bench/score_calibration.py [--envs CartPole-v1 Breakout-MinAtar] [--profile quick]
     [--sets 20] [--budget 16] [--anchor-seeds 64] [--metric final|auc] [--no-lane-check]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from service.runs.protocol import race_rounds
from workers.anchor import anchor_seeds
from workers.evaluate import evaluate_in_process
from workers.rl.envs import get_env_spec
from workers.rl.scoring import normalised_score
from workers.statistics import compare, stratified_bootstrap_means
from workers.targets import TARGETS
from workers.vocabulary import Metric, Verdict

WARM = TARGETS["lpo"].warm_start
CRIPPLED = '''import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return 1.0e4 * (ratio - 1.0) ** 2
'''  # keeps to lpo's rules and pins the policy where it started
POOL_SEED_BASE = 5_000_000


AUC: dict[tuple[str, int], float] = {}  # (code, seed) -> the mean return over all of training (metric `auc`)


def train(code: str, env: str, profile: str, seeds: list[int], lanes: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Final return per seed (programs of `lanes` seeds), a random policy's per seed, and CPU seconds per lane."""
    returns, random, cpu = [], [], 0.0
    for start in range(0, len(seeds), lanes):
        chunk = seeds[start:start + lanes]
        began = time.process_time()
        [result] = evaluate_in_process("lpo", [code], env, profile, chunk, with_random_baseline=True)
        cpu += time.process_time() - began
        if result.result is None:
            raise SystemExit(f"training failed on {env}: {result.outcome} {result.error}")
        returns += result.result.returns[0]
        random += result.result.random_returns or []
        AUC.update(((code, seed), auc) for seed, auc in zip(chunk, result.result.per_seed(Metric.auc), strict=True))
    return np.asarray(returns), np.asarray(random), cpu / len(seeds)


def signal_to_noise(env: str, anchor_seeds_: list[int], crippled_seeds: list[int], anchor_returns: np.ndarray,
                    crippled_returns: np.ndarray) -> None:
    """Per metric: the anchor's per-seed spread relative to its mean above random, and how many of those spreads
    separate the crippled drift from it (larger is a clearer signal)."""
    for metric, anchor, crippled in (
            ("final", anchor_returns, crippled_returns),
            ("auc", np.asarray([AUC[(WARM, s)] for s in anchor_seeds_]),
             np.asarray([AUC[(CRIPPLED, s)] for s in crippled_seeds]))):
        floor = crippled.mean()
        cv = anchor.std(ddof=1) / (anchor.mean() - floor)
        print(f"  metric {metric:5}: anchor {anchor.mean():.2f} sd {anchor.std(ddof=1):.2f}; per-seed sd / (anchor - "
              f"crippled) = {cv:.3f}")


def race(scores: np.ndarray, anchor: np.ndarray, budget: int) -> tuple[Verdict, int]:
    """The service's race on one contender's fresh seeds: the verdict and the seeds it took."""
    rounds = race_rounds(budget)
    for n in rounds:
        verdict = compare([scores[:n]], [anchor], looks=len(rounds)).verdict
        if verdict is not Verdict.inconclusive:
            return verdict, n
    return Verdict.inconclusive, rounds[-1]


def interval(values: np.ndarray) -> str:
    boot = stratified_bootstrap_means([values], 4000, np.random.default_rng(0))
    low, high = np.quantile(boot, [0.025, 0.975])
    return f"mean {values.mean():.2f} [{low:.2f}, {high:.2f}] sd {values.std(ddof=1):.2f}"


def lane_independence(env: str, profile: str, seeds: list[int], in_32_lanes: np.ndarray) -> None:
    """The same 32 seeds as programs of 2 and 8 lanes, against one program of 32."""
    lanes = {32: in_32_lanes}
    for width in (2, 8):
        lanes[width], _, _ = train(WARM, env, profile, seeds, width)
    for width, returns in sorted(lanes.items()):
        same = int(np.sum(returns == lanes[32]))
        print(f"  {width:2} lanes per program: return {interval(returns)}; bitwise equal to the 32-lane program "
              f"on {same}/32 seeds")
    print(f"  Mann-Whitney 2 vs 32 lanes: p = {stats.mannwhitneyu(lanes[2], lanes[32]).pvalue:.3f}")


def scored(code: str, seeds: list[int], final: np.ndarray, metric: Metric) -> np.ndarray:
    """The per-seed returns the verdict is made of: the final ones, or the whole-training means (`auc`)."""
    return final if metric == Metric.final else np.asarray([AUC[(code, s)] for s in seeds])


def calibrate(env: str, profile: str, sets: int, budget: int, anchor_count: int, lane_check: bool,
              metric: Metric) -> None:
    print(f"== {env} ({profile}): anchor {anchor_count} seeds, {sets} sets of {budget} fresh seeds, metric {metric}",
          flush=True)
    anchor_final, anchor_random, cpu_per_lane = train(WARM, env, profile, anchor_seeds(anchor_count), 32)
    anchor_returns = scored(WARM, anchor_seeds(anchor_count), anchor_final, metric)
    print(f"anchor: return {interval(anchor_returns)}, random {anchor_random.mean():.2f}, "
          f"CPU {cpu_per_lane:.2f} s per lane")

    def normalise(returns: np.ndarray) -> np.ndarray:
        floor = get_env_spec(env).return_range[0]
        return np.asarray([normalised_score(r, list(anchor_returns), list(anchor_random), floor)[0] for r in returns])

    anchor = normalise(anchor_returns)
    pool_seeds = [POOL_SEED_BASE + i for i in range(sets * budget)]
    pool_returns, _, _ = train(WARM, env, profile, pool_seeds, 32)
    pool = normalise(scored(WARM, pool_seeds, pool_returns, metric)).reshape(sets, budget)
    outcomes = [race(row, anchor, budget) for row in pool]
    share = {v: sum(o == v for o, _ in outcomes) / sets for v in Verdict}
    print(f"warm start vs anchor, {sets} races: better {share[Verdict.better]:.0%} (goal <= 5%), "
          f"worse {share[Verdict.worse]:.0%} (goal <= 5%), inconclusive {share[Verdict.inconclusive]:.0%}")
    flat = pool.ravel()
    for k in (2, 8, 32):
        if len(flat) >= 2 * k:
            means = flat[: len(flat) // k * k].reshape(-1, k).mean(axis=1)
            print(f"  point score at {k:2} seeds over {len(means)} disjoint sets: sd {means.std(ddof=1):.3f}, "
                  f"range {means.min():.3f}-{means.max():.3f}")

    crippled_seeds = [POOL_SEED_BASE + 10**6 + i for i in range(sets * 2)]
    crippled_returns, _, _ = train(CRIPPLED, env, profile, crippled_seeds, 32)
    crippled = normalise(scored(CRIPPLED, crippled_seeds, crippled_returns, metric)).reshape(sets, 2)
    # A race stops at its first decided round; a crippled drift's first round is its 2 seeds.
    first_round = [compare([row], [anchor], looks=len(race_rounds(budget))).verdict for row in crippled]
    worse = sum(v is Verdict.worse for v in first_round) / sets
    print(f"crippled drift (score {crippled.mean():.2f}): called worse after its first round of 2 seeds in "
          f"{worse:.0%} of {sets} races (goal >= 80%; undecided ones would go on to 8 seeds)")

    signal_to_noise(env, anchor_seeds(anchor_count), crippled_seeds, anchor_final, crippled_returns)
    if lane_check:
        lane_independence(env, profile, pool_seeds[:32], pool_returns[:32])

    rounds = race_rounds(budget)
    sd = anchor.std(ddof=1)
    z = stats.norm.ppf(1 - 0.05 / (2 * len(rounds))) + stats.norm.ppf(0.8)
    smallest = z * sd * np.sqrt(1 / budget + 1 / anchor_count)
    seeds_used = np.mean([n for _, n in outcomes])
    print(f"smallest improvement detected at 80% power with {budget} verification seeds: {smallest:.2f} "
          f"(per-seed sd of the anchor {sd:.2f}); a race used {seeds_used:.1f} seeds on average = "
          f"{seeds_used * cpu_per_lane:.1f} CPU s per candidate (crippled: {2 * cpu_per_lane:.1f} CPU s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Breakout-MinAtar"])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--budget", type=int, default=16, help="verification seeds per race (the quick default)")
    parser.add_argument("--anchor-seeds", type=int, default=64)
    parser.add_argument("--no-lane-check", action="store_true", help="skip training 32 seeds twice more")
    parser.add_argument("--metric", choices=[m.value for m in Metric], default=Metric.final.value,
                        help="the per-seed return the verdicts are made of (the service's default: final)")
    args = parser.parse_args()
    if args.sets * args.budget < 32 and not args.no_lane_check:
        parser.error("the lane check reuses 32 pool seeds: give --sets x --budget >= 32, or --no-lane-check")
    for env in args.envs:
        calibrate(env, args.profile, args.sets, args.budget, args.anchor_seeds, not args.no_lane_check,
                  Metric(args.metric))


if __name__ == "__main__":
    main()
