"""A run's evaluation protocol: which seeds each phase trains on, and which learning rates it tries.

No two purposes share a seed: the search's seeds, each round of the verification race, the meta-test
and, under the `grid` protocol, the seeds that choose a learning rate are all disjoint, so a score is
never measured on the seeds that chose the candidate or its rate.
"""

from __future__ import annotations

import hashlib

from service.db.models import Run
from workers.results import SeedPlan
from workers.rl.envs import get_config
from workers.targets import TARGETS
from workers.vocabulary import EvalPhase, LearningRateProtocol

SEED_OFFSETS = {"train": 0, "reeval": 100, "test": 200, "train-lr": 300, "test-lr": 400}


def learning_rates(target: str, env: str, profile: str, protocol: LearningRateProtocol | str) -> list[float]:
    """`fixed`: the environment's published rate alone (or the target's own there, as OPEN's); `grid`: the
    profile's grid around it."""
    config = get_config(env, profile, TARGETS[target].training)
    if LearningRateProtocol(protocol) is LearningRateProtocol.FIXED:
        return [config.lr]
    return config.learning_rates()


def _seeds(run: Run, purpose: str, count: int) -> list[int]:
    return [run.seed * 1000 + SEED_OFFSETS[purpose] + i for i in range(count)]


ES_SEED_BASE = 2**30  # ES generations' seeds lie in [2^30, 2^31): apart from every seed above (run seeds < 10^6)


def generation_seeds(run: Run, generation: int, count: int) -> list[int]:
    """The seeds every member of an ES generation trains on (common random numbers): fresh each generation, a
    function of the run's seed and the generation only, so a re-run generation trains on the same ones."""
    def seed(i: int) -> int:
        digest = hashlib.sha256(f"es:{run.seed}:{generation}:{i}".encode()).digest()
        return ES_SEED_BASE + int.from_bytes(digest[:8], "big") % ES_SEED_BASE

    return [seed(i) for i in range(count)]


def race_rounds(verification_seeds: int) -> list[int]:
    """The verification seeds a contender has after each round of its race: 2, 8, 32, ... up to the budget."""
    ends, n = [], 2
    while n < verification_seeds:
        ends.append(n)
        n *= 4
    return [*ends, verification_seeds]


def seed_plan(run: Run, phase: EvalPhase, round_: int | None = None) -> SeedPlan:
    """The seeds of a phase.

    - train: the search seeds; under `grid` they choose the rate and fresh seeds are scored.
    - reeval: round `round_` of the verification race: the next fresh seeds, at the rate the search chose
      (under `grid`, `choose` names the search seeds, on which the warm start's rate was chosen too; the
      candidates' rates come from their search rows).
    - test: `metatest_seeds` fresh seeds; under `grid` the rate is chosen on yet other seeds.
    """
    grid = LearningRateProtocol(run.lr_protocol) is LearningRateProtocol.GRID
    if phase == EvalPhase.TRAIN:
        search = _seeds(run, "train", run.seeds_per_eval)
        return SeedPlan(choose=search, score=_seeds(run, "train-lr", run.seeds_per_eval)) if grid \
            else SeedPlan(score=search)
    if phase == EvalPhase.REEVAL:
        ends = [0, *race_rounds(run.verification_seeds)]
        fresh = _seeds(run, "reeval", ends[round_ or 1])[ends[(round_ or 1) - 1]:]
        return SeedPlan(choose=_seeds(run, "train", run.seeds_per_eval), score=fresh) if grid else SeedPlan(score=fresh)
    test = _seeds(run, "test", run.metatest_seeds)
    return SeedPlan(choose=_seeds(run, "test-lr", run.metatest_seeds), score=test) if grid else SeedPlan(score=test)
