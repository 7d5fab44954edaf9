"""Evaluate candidate code and score it against the baselines: the service's one door to the sandbox."""

from __future__ import annotations

from pydantic import BaseModel

from service.settings import Settings
from workers.baselines import Baseline, get_baseline
from workers.results import EnvResult, EvaluationRequest, EvaluationResult
from workers.rl.scoring import normalised_score
from workers.sandbox.isolate import SandboxLimits, evaluate_candidate, require_isolation


class EvaluationFailed(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(f"{outcome}: {message}")
        self.outcome = outcome


class ScoredResult(BaseModel):
    result: EnvResult
    baseline: Baseline
    score: float


def sandbox_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        timeout_seconds=settings.sandbox_timeout_seconds,
        memory_mb=settings.sandbox_memory_mb,
        cpu_seconds=settings.sandbox_cpu_seconds,
        max_output_bytes=settings.sandbox_max_output_bytes,
        isolation=settings.sandbox_isolation,
        cache_dir=settings.cache_dir,
    )


def check_isolation(settings: Settings) -> str:
    """The isolation this host gets (logged); raises IsolationUnavailable when settings require more."""
    return require_isolation(sandbox_limits(settings)).summary()


def run_evaluation(settings: Settings, request: EvaluationRequest) -> EvaluationResult:
    """Static check, then a fresh isolated child; raises only IsolationUnavailable."""
    return evaluate_candidate(request, sandbox_limits(settings))


def evaluate_code(settings: Settings, target: str, code: str, env: str, profile: str,
                  seeds: list[int]) -> ScoredResult:
    """Evaluate `code` on one environment and normalise its return; raise EvaluationFailed if it failed."""
    request = EvaluationRequest(target=target, code=code, env=env, profile=profile, seeds=seeds)
    evaluation = run_evaluation(settings, request)
    if evaluation.result is None:
        raise EvaluationFailed(evaluation.outcome.value, (evaluation.error or "no result").splitlines()[0])
    baseline = get_baseline(target, env, profile, seeds, settings.cache_dir,
                            lambda req: run_evaluation(settings, req))
    score = normalised_score(evaluation.result.final_return, baseline.random_return, baseline.warm_return)
    return ScoredResult(result=evaluation.result, baseline=baseline, score=score)
