"""The anchor: the warm start's own artifact, trained on many seeds of its own, that every score is measured against.

Per environment, profile, learning rate and warm-start artifact, the trainer trains the warm start through
the same tracer → trainer path as every candidate (an artifact of its own source, never the native code),
on `len(seeds)` anchor seeds that no run scores, beside a uniformly random policy on the same seeds. Its
mean return is the reference of the normalised score and its per-seed spread the noise model
(`workers.statistics`). It is measured once and kept in a JSON file cache on the host (beside JAX's
compilation cache, never bound into a sandbox), keyed by environment, profile, learning rates, seeds and
the artifact's SHA-256, so a changed warm start or a new JAX (another artifact) never reuses stale numbers.
Its compile and training times set the deadline of every candidate's training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from workers.results import EnvResult, EvaluationResult
from workers.rl.envs import get_env_spec
from workers.rl.scoring import normalised_score
from workers.vocabulary import Metric, Outcome, ScoreBasis

ANCHOR_SEED_BASE = 3_000_000_000  # anchor seeds: far from every run's seeds (seed·1000 + a purpose's offset)


def anchor_seeds(count: int) -> list[int]:
    return [ANCHOR_SEED_BASE + i for i in range(count)]


class Anchor(BaseModel):
    """The warm start's training result on the anchor seeds (its artifact's), with a random policy's returns.

    Everything else (seeds, rates, means, timings) is read off `result`, so nothing stored can disagree with it.
    """

    env: str
    profile: str
    artifact_sha256: str  # the warm start's artifact that was trained
    result: EnvResult  # the whole training result (returns, curves, timings): the warm start's search row
    random_returns: list[float]  # per seed, whole episodes of a uniformly random policy
    return_floor: float  # the lowest return an episode can have (the return ratio's zero)

    @property
    def seeds(self) -> list[int]:
        return self.result.seeds

    @property
    def best_lr(self) -> float:
        return self.result.best_lr

    @property
    def mean_returns(self) -> list[float]:
        """Per learning rate, the mean final return over the seeds."""
        return [sum(row) / len(row) for row in self.result.returns]

    @property
    def warm_returns(self) -> list[float]:
        """Per seed, the final return at the best learning rate."""
        return self.result.per_seed(Metric.final)

    @property
    def warm_return(self) -> float:
        return sum(self.warm_returns) / len(self.warm_returns)

    @property
    def random_return(self) -> float:
        return sum(self.random_returns) / len(self.random_returns)

    @property
    def compile_seconds(self) -> float:
        return self.result.compile_seconds

    @property
    def train_seconds(self) -> float:
        return self.result.train_seconds

    @property
    def lanes(self) -> int:
        return len(self.result.learning_rates) * len(self.result.seeds)

    def normalise(self, returns: list[float], metric: Metric = Metric.final) -> tuple[list[float], ScoreBasis]:
        """Per-seed returns (by `metric`) as normalised scores against this anchor (its own mean scores 1.0)."""
        warm = self.result.per_seed(metric)
        scored = [normalised_score(r, warm, self.random_returns, self.return_floor) for r in returns]
        return [s for s, _ in scored], scored[0][1]

    def own_scores(self, metric: Metric = Metric.final) -> list[float]:
        """The anchor's per-seed returns, normalised by itself: its noise model."""
        return self.normalise(self.result.per_seed(metric), metric)[0]


class AnchorError(RuntimeError):
    """The warm start itself failed to train: nothing can be scored against it."""


def _key(target: str, env: str, profile: str, seeds: list[int], learning_rates: list[float],
         artifact_sha256: str) -> str:
    digest = hashlib.sha256(
        f"v6|{target}|{env}|{profile}|{seeds}|{learning_rates}|{artifact_sha256}".encode()).hexdigest()
    return f"{env}-{profile}-{digest[:20]}"


def get_anchor(target: str, env: str, profile: str, seeds: list[int], learning_rates: list[float],
               artifact_sha256: str, cache_dir: Path, measure: Callable[[], EvaluationResult]) -> Anchor:
    """The cached anchor, or `measure()` the warm start's artifact (with the random policy) and cache it.

    The cache key names the target and its warm start's artifact: two targets that share a warm start (optimizer and
    open) train it under different protocols, so each has anchors of its own.
    """
    key = _key(target, env, profile, seeds, learning_rates, artifact_sha256)
    path = Path(cache_dir) / "anchors" / f"{key}.json"
    if path.exists():
        return Anchor.model_validate_json(path.read_text())
    result = measure()
    if result.outcome is not Outcome.ok or result.result is None or not result.result.random_returns:
        raise AnchorError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    anchor = Anchor(env=env, profile=profile, artifact_sha256=artifact_sha256, result=result.result,
                    random_returns=result.result.random_returns, return_floor=get_env_spec(env).return_range[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(anchor.model_dump(mode="json")))
    tmp.replace(path)
    return anchor
