"""The service's one door to evaluation: settings into sandbox and trainer limits, and the calls that
trace candidates, measure the anchor and train batches on this process's warm trainers, under a run's
learning-rate protocol (`fixed`: the published rate; `grid`: chosen on some seeds, scored on others).

Every score is against the anchor (`workers/anchor.py`): the warm start's own artifact, traced from its
source like any candidate's and trained on many seeds of its own; `env_score` turns one result into
per-seed normalised scores and their comparison with the anchor (`workers/statistics.py`)."""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel

from service.runs.protocol import learning_rates
from service.settings import Settings
from workers.anchor import Anchor, AnchorError, anchor_seeds, get_anchor
from workers.evaluate import artifact_sha256, trace, train_batch
from workers.results import Comparison, EnvResult, EvaluationResult, LearningRateChoice, SeedPlan, TraceResult
from workers.rl.envs import get_config
from workers.sandbox.host import SandboxLimits, require_isolation
from workers.statistics import compare
from workers.targets import TARGETS
from workers.trainer.client import POOL, TrainerConfig
from workers.trainer.parameters import encode_parameters
from workers.trainer.protocol import TrainRequest
from workers.vocabulary import LearningRateProtocol, Metric, Outcome, ScoreBasis


class EvaluationFailed(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome = outcome


class AnchorSummary(BaseModel):
    """What a score was normalised by: the anchor's artifact, its mean returns and its own per-seed scores."""

    artifact_sha256: str
    learning_rate: float
    warm_return: float
    random_return: float
    scores: list[float]  # the anchor's per-seed returns normalised by itself (mean 1.0): the noise model


class EnvScore(BaseModel):
    """One result on one environment against the anchor: stored with the evaluation (`Evaluation.stats`)."""

    scores: list[float]  # per scored seed, normalised
    basis: ScoreBasis
    metric: Metric  # which per-seed return was scored
    anchor: AnchorSummary
    comparison: Comparison


class ScoredResult(BaseModel):
    result: EnvResult
    anchor: Anchor
    scored: EnvScore


def tracer_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        timeout_seconds=settings.sandbox_timeout_seconds,
        memory_mb=settings.sandbox_memory_mb,
        cpu_seconds=settings.sandbox_cpu_seconds,
        max_output_bytes=settings.sandbox_max_output_bytes,
        isolation=settings.sandbox_isolation,
    )


def trainer_config(settings: Settings) -> TrainerConfig:
    limits = SandboxLimits(
        memory_mb=settings.trainer_memory_mb, cpus=settings.trainer_cpus or float(os.cpu_count() or 1),
        cpu_seconds=10**9,  # RLIMIT_CPU counts the whole life of a long-lived process; deadlines bound requests
        max_processes=1024, max_file_mb=1024, scratch_mb=256, isolation=settings.sandbox_isolation,
        cache_dir=settings.cache_dir,
    )
    return TrainerConfig(limits=limits, device=settings.trainer_device)


def check_isolation(settings: Settings) -> str:
    """The isolation this host gets (logged); raises IsolationUnavailable when settings require more."""
    return require_isolation(tracer_limits(settings)).summary()


def trace_code(settings: Settings, target: str, code: str, check_rules: bool = False) -> TraceResult:
    """Static check and the sandboxed tracer: an artifact and the behaviour fingerprint, or the verdict (with
    `check_rules`, also on the target's rules); raises only IsolationUnavailable."""
    return trace(code, target, tracer_limits(settings), check_rules)


def trace_many(settings: Settings, target: str, codes: list[str]) -> list[TraceResult]:
    """Trace several candidates, each in its own sandboxed child, as many at once as there are cores."""
    if len(codes) <= 1:
        return [trace_code(settings, target, code) for code in codes]
    with ThreadPoolExecutor(max_workers=min(len(codes), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda code: trace_code(settings, target, code), codes))


_WARM_ARTIFACTS: dict[str, str] = {}
_WARM_LOCK = threading.Lock()


def warm_artifact(settings: Settings, target: str) -> str:
    """The warm start's artifact (base64), traced from its source in the sandbox like any candidate's; once per
    process and warm-start source."""
    source = TARGETS[target].warm_start
    key = hashlib.sha256(f"{target}|{source}".encode()).hexdigest()
    with _WARM_LOCK:
        if key not in _WARM_ARTIFACTS:
            traced = trace_code(settings, target, source)
            if traced.outcome is not Outcome.ok or traced.artifact is None:
                raise AnchorError(f"the warm start of {target} failed to trace ({traced.outcome}): {traced.error}")
            _WARM_ARTIFACTS[key] = traced.artifact
        return _WARM_ARTIFACTS[key]


def anchor_for(settings: Settings, target: str, env: str, profile: str, rates: list[float],
               seeds: list[int] | None = None) -> Anchor:
    """The cached anchor, or the warm start's artifact trained now on the anchor seeds (or `seeds`) beside the
    random policy. A grid's rate is chosen on an anchor of the choosing seeds."""
    warm = warm_artifact(settings, target)
    seeds = seeds if seeds is not None else anchor_seeds(settings.anchor_seeds[profile])

    def measure() -> EvaluationResult:
        request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds, learning_rates=rates,
                               artifacts=[warm], with_random_baseline=True)
        with POOL.acquire(trainer_config(settings)) as trainer:
            return train_batch(trainer, request, None)[0]

    return get_anchor(target, env, profile, seeds, rates, artifact_sha256(warm), settings.cache_dir, measure)


Trainable = str | np.ndarray  # a traced artifact (base64), or a parameter vector of the target's network


def train_request(target: str, env: str, profile: str, seeds: list[int], rates: list[float], batch: list[Trainable],
                  check_rules: bool = False) -> TrainRequest:
    """The trainer's request for a batch of artifacts, or of the target's network's parameter vectors (one kind)."""
    vectors = [item for item in batch if isinstance(item, np.ndarray)]
    if not vectors:
        return TrainRequest(target=target, env=env, profile=profile, seeds=seeds, learning_rates=rates,
                            artifacts=[item for item in batch if isinstance(item, str)], check_rules=check_rules)
    network = TARGETS[target].network
    if network is None:
        raise ValueError(f"target {target!r} has no network to train parameters of")
    if len(vectors) != len(batch):
        raise ValueError("a batch trains artifacts or parameter vectors, not both")
    sized = network.of_size(vectors[0].size) if vectors[0].ndim == 1 else None  # a distilled student's width
    if sized is None or any(v.shape != (sized.parameter_count,) for v in vectors):
        raise ValueError(f"{network.name} takes vectors of {network.parameter_count} values (or, a batch of "
                         "students, of one width's)")
    return TrainRequest(target=target, env=env, profile=profile, seeds=seeds, learning_rates=rates,
                        parameters=[encode_parameters(v) for v in vectors], network=sized.name)


def train_artifacts(settings: Settings, target: str, env: str, profile: str, seeds: list[int], rates: list[float],
                    artifacts: list[Trainable], anchor: Anchor, check_rules: bool = False) -> list[EvaluationResult]:
    """Train a batch of artifacts (or of network vectors) in one program; one result per item, in order (with
    `check_rules`, the trainer refuses artifacts that break the target's rules)."""
    request = train_request(target, env, profile, seeds, rates, artifacts, check_rules)
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, anchor)


def _warm_rate(settings: Settings, target: str, env: str, profile: str, plan: SeedPlan, grid: list[float]) -> float:
    """The warm start's learning rate: the only one, or the best of the grid on the choosing seeds."""
    if plan.choose is None or len(grid) == 1:
        return grid[0]
    return anchor_for(settings, target, env, profile, grid, plan.choose).best_lr


def anchor_of(settings: Settings, target: str, env: str, profile: str, protocol: str, plan: SeedPlan) -> Anchor:
    """The anchor a phase's scores are measured against: at the warm start's rate under the protocol."""
    grid = learning_rates(target, env, profile, protocol)
    return anchor_for(settings, target, env, profile, [_warm_rate(settings, target, env, profile, plan, grid)])


def anchor_row(settings: Settings, target: str, env: str, profile: str, protocol: str, plan: SeedPlan
               ) -> tuple[EvaluationResult, Anchor]:
    """The warm start's search evaluation: the anchor itself, with how the grid chose its rate."""
    anchor = anchor_of(settings, target, env, profile, protocol, plan)
    result = anchor.result.model_copy()
    steps, seconds = trained_cost(result)
    grid = learning_rates(target, env, profile, protocol)
    if plan.choose is not None and len(grid) > 1:
        chooser = anchor_for(settings, target, env, profile, grid, plan.choose)
        result.lr_choice = LearningRateChoice(seeds=plan.choose, learning_rates=grid,
                                              mean_returns=chooser.mean_returns, chosen=anchor.best_lr)
        chose_steps, chose_seconds = trained_cost(chooser.result)
        steps, seconds = steps + chose_steps, seconds + chose_seconds
    return EvaluationResult(outcome=Outcome.ok, result=result, env_steps=steps, trainer_seconds=seconds), anchor


def trained_cost(result: EnvResult) -> tuple[int, float]:
    """What a result trained alone cost (the anchor's: one artifact per program): environment steps over its lanes,
    and its compile and train seconds."""
    lanes = len(result.seeds) * len(result.learning_rates)
    return lanes * result.env_steps, result.compile_seconds + result.train_seconds


def evaluate_artifacts(settings: Settings, target: str, env: str, profile: str, protocol: str, plan: SeedPlan,
                       artifacts: list[Trainable], chosen: list[float | None], check_rules: bool = False
                       ) -> tuple[list[EvaluationResult], Anchor]:
    """Train candidates on one environment under the learning-rate protocol; one result per artifact.

    A candidate's rate is `chosen[i]` when an earlier phase chose it, else the only rate, else the best of
    the grid on `plan.choose`; its score is then measured on `plan.score` (never the seeds that chose it).
    With `check_rules` the trainer refuses candidates that break the target's rules.
    """
    grid = learning_rates(target, env, profile, protocol)
    anchor = anchor_of(settings, target, env, profile, protocol, plan)
    rates: list[float | None] = [rate if rate is not None else grid[0] if len(grid) == 1 else None
                                 for rate in chosen]
    results: list[EvaluationResult | None] = [None] * len(artifacts)
    choices: dict[int, LearningRateChoice] = {}
    chose_at: dict[int, EvaluationResult] = {}  # what choosing the rate cost, added to the result that is scored
    to_choose = [i for i, rate in enumerate(rates) if rate is None]
    if to_choose:
        if plan.choose is None:
            raise ValueError("a learning rate must be chosen, and the plan has no seeds to choose it on")
        chooser = anchor_for(settings, target, env, profile, grid, plan.choose)
        trained = train_artifacts(settings, target, env, profile, plan.choose, grid,
                                  [artifacts[i] for i in to_choose], chooser, check_rules)
        for i, result in zip(to_choose, trained, strict=True):
            if result.result is None:
                results[i] = result
                continue
            rates[i], chose_at[i] = result.result.best_lr, result
            choices[i] = LearningRateChoice(seeds=plan.choose, learning_rates=grid,
                                            mean_returns=[sum(row) / len(row) for row in result.result.returns],
                                            chosen=result.result.best_lr)
    for rate in dict.fromkeys(r for i, r in enumerate(rates) if r is not None and results[i] is None):
        group = [i for i, r in enumerate(rates) if r == rate and results[i] is None]
        for i, result in zip(group, train_artifacts(settings, target, env, profile, plan.score, [rate],
                                                    [artifacts[i] for i in group], anchor, check_rules), strict=True):
            if result.result is not None and i in choices:
                result.result.lr_choice = choices[i]
            if i in chose_at:
                result.env_steps += chose_at[i].env_steps
                result.trainer_seconds += chose_at[i].trainer_seconds
            results[i] = result
    assert all(r is not None for r in results)
    return results, anchor  # type: ignore[return-value]


def env_score(result: EnvResult, anchor: Anchor, confidence: float = 0.95, metric: Metric = Metric.final
              ) -> EnvScore:
    """Per-seed normalised scores (by `metric`) at the result's learning rate, and their comparison with the
    anchor."""
    scores, basis = anchor.normalise(result.per_seed(metric), metric)
    own = anchor.own_scores(metric)
    return EnvScore(
        scores=scores, basis=basis, metric=metric,
        anchor=AnchorSummary(artifact_sha256=anchor.artifact_sha256, learning_rate=anchor.best_lr,
                             warm_return=float(np.mean(anchor.result.per_seed(metric))),
                             random_return=anchor.random_return, scores=own),
        comparison=compare([scores], [own], confidence),
    )


def evaluate_code(settings: Settings, target: str, code: str, env: str, profile: str, seeds: list[int],
                  protocol: LearningRateProtocol = LearningRateProtocol.FIXED,
                  metric: Metric = Metric.final) -> ScoredResult:
    """Trace and train `code` on one environment and score it; raise EvaluationFailed if it failed.

    Under `grid` the rate is chosen on `seeds` and the score measured on as many fresh seeds after them.
    """
    traced = trace_code(settings, target, code)
    if traced.outcome is not Outcome.ok or traced.artifact is None:
        raise EvaluationFailed(traced.outcome.value, (traced.error or "no artifact").splitlines()[0])
    return score_artifact(settings, target, traced.artifact, env, profile, seeds, protocol, metric)


def score_artifact(settings: Settings, target: str, artifact: str, env: str, profile: str, seeds: list[int],
                   protocol: LearningRateProtocol = LearningRateProtocol.FIXED,
                   metric: Metric = Metric.final) -> ScoredResult:
    """Train a traced artifact on one environment and score it (`evaluate_code` after the tracer)."""
    plan = SeedPlan(score=seeds) if protocol == LearningRateProtocol.FIXED else SeedPlan(
        choose=seeds, score=[max(seeds) + 1 + i for i in range(len(seeds))])
    [evaluation], anchor = evaluate_artifacts(settings, target, env, profile, protocol, plan, [artifact], [None])
    if evaluation.result is None:
        raise EvaluationFailed(evaluation.outcome.value, (evaluation.error or "no result").splitlines()[0])
    return ScoredResult(result=evaluation.result, anchor=anchor,
                        scored=env_score(evaluation.result, anchor, metric=metric))


class PopulationScore(BaseModel):
    """An ES generation's evaluation: each member's fitness, and what it cost."""

    fitness: list[float]  # per member: mean normalised score over the environments (NaN: a member failed)
    errors: dict[int, str]  # member -> why it has no score (its first failure)
    env_steps: int  # members x seeds x the profile's steps, summed over the environments
    trainer_seconds: float  # wall time spent in trainer requests


def train_population(settings: Settings, target: str, env: str, profile: str, seeds: list[int], rate: float,
                     vectors: np.ndarray, anchor: Anchor) -> list[EvaluationResult]:
    """Train a population of the target's network (`vectors`: [members, parameters]) on one environment in one
    program, every member on the same seeds (common random numbers); one result per member, in order. The
    trainer decodes and checks each vector (`workers.trainer.parameters.decode_parameters`); a refused vector
    is a refused result."""
    if vectors.ndim != 2:
        raise ValueError(f"a population is [members, parameters], got shape {vectors.shape}")
    request = train_request(target, env, profile, seeds, [rate], list(vectors))
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, anchor)


def member_scores(results: list[EvaluationResult], anchor: Anchor, metric: Metric) -> list[float]:
    """Each member's mean normalised score over its seeds against the anchor (NaN where it has no result)."""
    return [float(np.mean(anchor.normalise(r.result.per_seed(metric), metric)[0])) if r.result is not None
            else math.nan for r in results]


def evaluate_population(settings: Settings, target: str, envs: list[str], profile: str, protocol: str,
                        plan: SeedPlan, seeds: list[int], vectors: np.ndarray, metric: Metric) -> PopulationScore:
    """Fitness as in the paper's ES-LPO, with the service's normaliser: each member's final return per seed
    normalised against the run's anchor (the warm start = 1.0), averaged over seeds, then over the meta-train
    environments. Every member trains at the warm start's rate under the run's protocol, on `seeds`."""
    started = time.monotonic()
    per_env: list[list[float]] = []
    errors: dict[int, str] = {}
    for env in envs:
        anchor = anchor_of(settings, target, env, profile, protocol, plan)
        results = train_population(settings, target, env, profile, seeds, anchor.best_lr, vectors, anchor)
        for member, result in enumerate(results):
            if result.result is None:
                errors.setdefault(member, f"{env}: {result.outcome}: {result.error or 'no result'}")
        per_env.append(member_scores(results, anchor, metric))
    fitness = np.mean(np.asarray(per_env, dtype=np.float64), axis=0)  # NaN wherever a member failed anywhere
    steps = sum(get_config(env, profile).env_steps for env in envs) * len(seeds) * len(vectors)
    return PopulationScore(fitness=[float(f) for f in fitness], errors=errors, env_steps=steps,
                           trainer_seconds=time.monotonic() - started)
