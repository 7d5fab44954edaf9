"""Baselines per environment, profile and seeds: the warm start's and a random policy's returns.

Both are measured once by the trainer on the project's own warm start (never a candidate's artifact)
and kept in a JSON file cache on the host (beside JAX's compilation cache, never bound into a
sandbox), keyed by environment, profile, seeds, learning rates and a hash of the warm starts' source, so a changed
warm start never reuses stale numbers. The warm start's compile and training times set the deadline
of every candidate's training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, computed_field

from workers.results import EvaluationResult, Outcome
from workers.rl.envs import get_env_spec
from workers.targets import TARGETS


class Baseline(BaseModel):
    """The warm start's and a random policy's returns per seed on one environment, profile and seed set."""

    env: str
    profile: str
    seeds: list[int]
    learning_rates: list[float]  # what the warm start was trained with
    best_lr: float  # the best of them on these seeds
    mean_returns: list[float]  # per learning rate, the mean over seeds
    warm_returns: list[float]  # per seed, at best_lr
    random_returns: list[float]  # per seed, whole episodes of a uniformly random policy
    return_floor: float  # the lowest return an episode can have (the return ratio's zero)
    compile_seconds: float = 0.0
    train_seconds: float | None = None  # for all lanes (`lanes` = learning rates × seeds)
    lanes: int = 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warm_return(self) -> float:
        return sum(self.warm_returns) / len(self.warm_returns)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def random_return(self) -> float:
        return sum(self.random_returns) / len(self.random_returns)


class BaselineError(RuntimeError):
    """The warm start itself failed to train: nothing can be scored against it."""


def _key(env: str, profile: str, seeds: list[int], learning_rates: list[float]) -> str:
    sources = "".join(t.warm_start for t in TARGETS.values())
    digest = hashlib.sha256(f"v2|{env}|{profile}|{seeds}|{learning_rates}|{sources}".encode()).hexdigest()[:20]
    return f"{env}-{profile}-{digest}"


def get_baseline(env: str, profile: str, seeds: list[int], learning_rates: list[float], cache_dir: Path,
                 measure: Callable[[], EvaluationResult]) -> Baseline:
    """The cached baseline, or `measure()` the warm start (with the random policy) and cache it.

    Every target's warm start trains the same PPO, so the baseline does not depend on the target.
    """
    path = Path(cache_dir) / "baselines" / f"{_key(env, profile, seeds, learning_rates)}.json"
    if path.exists():
        return Baseline.model_validate_json(path.read_text())
    result = measure()
    if result.outcome is not Outcome.ok or result.result is None or not result.result.random_returns:
        raise BaselineError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    r = result.result
    best = r.learning_rates.index(r.best_lr)
    baseline = Baseline(
        env=env, profile=profile, seeds=seeds, learning_rates=r.learning_rates, best_lr=r.best_lr,
        mean_returns=[sum(row) / len(row) for row in r.returns],
        warm_returns=r.returns[best], random_returns=r.random_returns,
        return_floor=get_env_spec(env).return_range[0], compile_seconds=r.compile_seconds,
        train_seconds=r.train_seconds, lanes=len(r.learning_rates) * len(seeds),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(baseline.model_dump()))
    tmp.replace(path)
    return baseline
