"""Baselines per environment, profile and seeds: the warm start's and a random policy's returns.

Both are measured once by the trainer on the project's own warm start (never a candidate's artifact)
and kept in a JSON file cache on the host (beside JAX's compilation cache, never bound into a
sandbox), keyed by environment, profile, seeds and a hash of the warm starts' source, so a changed
warm start never reuses stale numbers. The warm start's compile and training times set the deadline
of every candidate's training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from workers.results import EvaluationResult, Outcome
from workers.targets import TARGETS


class Baseline(BaseModel):
    env: str
    profile: str
    seeds: list[int]
    warm_return: float
    random_return: float
    compile_seconds: float = 0.0
    train_seconds: float | None = None  # for all lanes (`lanes` = learning rates × seeds)
    lanes: int = 1


class BaselineError(RuntimeError):
    """The warm start itself failed to train: nothing can be scored against it."""


def _key(env: str, profile: str, seeds: list[int]) -> str:
    sources = "".join(t.warm_start for t in TARGETS.values())
    digest = hashlib.sha256(f"{env}|{profile}|{seeds}|{sources}".encode()).hexdigest()[:20]
    return f"{env}-{profile}-{digest}"


def get_baseline(env: str, profile: str, seeds: list[int], cache_dir: Path,
                 measure: Callable[[], EvaluationResult]) -> Baseline:
    """The cached baseline, or `measure()` the warm start (with the random policy) and cache it.

    Every target's warm start trains the same PPO, so the baseline does not depend on the target.
    """
    path = Path(cache_dir) / "baselines" / f"{_key(env, profile, seeds)}.json"
    if path.exists():
        return Baseline.model_validate_json(path.read_text())
    result = measure()
    if result.outcome is not Outcome.ok or result.result is None or result.result.random_return is None:
        raise BaselineError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    r = result.result
    baseline = Baseline(
        env=env, profile=profile, seeds=seeds, warm_return=r.final_return, random_return=r.random_return,
        compile_seconds=r.compile_seconds, train_seconds=r.train_seconds, lanes=len(r.learning_rates) * len(seeds),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(baseline.model_dump()))
    tmp.replace(path)
    return baseline
