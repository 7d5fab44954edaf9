"""The service's one door to evaluation: settings into sandbox and trainer limits, and the calls that
trace candidates, measure baselines and train batches on this process's warm trainers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from service.settings import Settings
from workers.baselines import Baseline, get_baseline
from workers.evaluate import trace, train_batch
from workers.results import EnvResult, EvaluationResult, Outcome, TraceResult
from workers.rl.envs import get_config
from workers.rl.scoring import normalised_score
from workers.sandbox.isolate import SandboxLimits, require_isolation
from workers.trainer.client import POOL, TrainerConfig
from workers.trainer.protocol import TrainRequest


class EvaluationFailed(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome = outcome


class ScoredResult(BaseModel):
    result: EnvResult
    baseline: Baseline
    score: float


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


def trace_code(settings: Settings, target: str, code: str) -> TraceResult:
    """Static check and the sandboxed tracer: an artifact, or the verdict; raises only IsolationUnavailable."""
    return trace(code, target, tracer_limits(settings))


def trace_many(settings: Settings, target: str, codes: list[str]) -> list[TraceResult]:
    """Trace several candidates, each in its own sandboxed child, as many at once as there are cores."""
    if len(codes) <= 1:
        return [trace_code(settings, target, code) for code in codes]
    with ThreadPoolExecutor(max_workers=min(len(codes), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda code: trace_code(settings, target, code), codes))


def learning_rates(env: str, profile: str) -> list[float]:
    return get_config(env, profile).learning_rates()


def train_warm_start(settings: Settings, target: str, env: str, profile: str, seeds: list[int]) -> EvaluationResult:
    """The project's own warm start (no artifact), with the random policy on the same seeds."""
    request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds,
                           learning_rates=learning_rates(env, profile), with_random_baseline=True)
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, None)[0]


def baseline_for(settings: Settings, target: str, env: str, profile: str, seeds: list[int],
                 measured: EvaluationResult | None = None) -> Baseline:
    """The cached baseline, or `measured` (a warm-start result), or a fresh warm-start training."""
    return get_baseline(env, profile, seeds, settings.cache_dir,
                        lambda: measured or train_warm_start(settings, target, env, profile, seeds))


def train_artifacts(settings: Settings, target: str, env: str, profile: str, seeds: list[int],
                    artifacts: list[str], baseline: Baseline) -> list[EvaluationResult]:
    """Train a batch of artifacts in one program; one result per artifact, in order."""
    request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds,
                           learning_rates=learning_rates(env, profile), artifacts=artifacts)
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, baseline)


def score(result: EnvResult, baseline: Baseline) -> float:
    return normalised_score(result.final_return, baseline.random_return, baseline.warm_return)


def evaluate_code(settings: Settings, target: str, code: str, env: str, profile: str,
                  seeds: list[int]) -> ScoredResult:
    """Trace and train `code` on one environment and score it; raise EvaluationFailed if it failed."""
    traced = trace_code(settings, target, code)
    if traced.outcome is not Outcome.ok or traced.artifact is None:
        raise EvaluationFailed(traced.outcome.value, (traced.error or "no artifact").splitlines()[0])
    baseline = baseline_for(settings, target, env, profile, seeds)
    evaluation = train_artifacts(settings, target, env, profile, seeds, [traced.artifact], baseline)[0]
    if evaluation.result is None:
        raise EvaluationFailed(evaluation.outcome.value, (evaluation.error or "no result").splitlines()[0])
    return ScoredResult(result=evaluation.result, baseline=baseline, score=score(evaluation.result, baseline))
