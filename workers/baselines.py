"""Baselines per environment, profile and seeds: the warm start's and a random policy's returns.

Both are measured once by a trusted evaluation of the warm start and kept in a JSON file cache on the
host (beside JAX's compilation cache), keyed by environment, profile, seeds and a hash of the warm
starts' source, so a changed warm start never reuses stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from workers.results import EvaluationRequest, EvaluationResult, Outcome
from workers.targets import TARGETS


class Baseline(BaseModel):
    env: str
    profile: str
    seeds: list[int]
    warm_return: float
    random_return: float


class BaselineError(RuntimeError):
    """The warm start itself failed to train: nothing can be scored against it."""


def _key(env: str, profile: str, seeds: list[int]) -> str:
    sources = "".join(t.warm_start for t in TARGETS.values())
    digest = hashlib.sha256(f"{env}|{profile}|{seeds}|{sources}".encode()).hexdigest()[:20]
    return f"{env}-{profile}-{digest}"


def get_baseline(
    target: str, env: str, profile: str, seeds: list[int], cache_dir: Path,
    evaluate: Callable[[EvaluationRequest], EvaluationResult],
) -> Baseline:
    """The cached baseline, or measure it with `evaluate` (the sandbox, or in-process) and cache it.

    Every target's warm start trains the same PPO, so the baseline does not depend on the target.
    """
    path = Path(cache_dir) / "baselines" / f"{_key(env, profile, seeds)}.json"
    if path.exists():
        return Baseline.model_validate_json(path.read_text())
    request = EvaluationRequest(
        target=target, code=TARGETS[target].warm_start, env=env, profile=profile, seeds=seeds,
        trusted=True, with_random_baseline=True,
    )
    result = evaluate(request)
    if result.outcome is not Outcome.ok or result.result is None or result.result.random_return is None:
        raise BaselineError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    baseline = Baseline(
        env=env, profile=profile, seeds=seeds,
        warm_return=result.result.final_return, random_return=result.result.random_return,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(baseline.model_dump()))
    tmp.replace(path)
    return baseline
