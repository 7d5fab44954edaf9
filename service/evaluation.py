"""The service's one door to evaluation: settings into sandbox and trainer limits, and the calls that
trace candidates, measure baselines and train batches on this process's warm trainers, under a run's
learning-rate protocol (`fixed`: the published rate; `grid`: chosen on some seeds, scored on others)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from service.settings import Settings
from workers.baselines import Baseline, BaselineError, get_baseline
from workers.evaluate import trace, train_batch
from workers.results import EnvResult, EvaluationResult, LearningRateChoice, Outcome, ScoreBasis, SeedPlan, TraceResult
from workers.rl.envs import get_config, get_env_spec
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
    score_basis: ScoreBasis


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


def learning_rates(env: str, profile: str, protocol: str) -> list[float]:
    """`fixed`: the environment's published rate alone; `grid`: the profile's grid around it."""
    if protocol == "fixed":
        return [get_env_spec(env).lr]
    return get_config(env, profile).learning_rates()


def train_warm_start(settings: Settings, target: str, env: str, profile: str, seeds: list[int],
                     rates: list[float]) -> EvaluationResult:
    """The project's own warm start (no artifact), with the random policy on the same seeds."""
    request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds, learning_rates=rates,
                           with_random_baseline=True)
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, None)[0]


def baseline_for(settings: Settings, target: str, env: str, profile: str, seeds: list[int], rates: list[float],
                 measured: EvaluationResult | None = None) -> Baseline:
    """The cached baseline, or `measured` (a warm-start result), or a fresh warm-start training."""
    return get_baseline(env, profile, seeds, rates, settings.cache_dir,
                        lambda: measured or train_warm_start(settings, target, env, profile, seeds, rates))


def train_artifacts(settings: Settings, target: str, env: str, profile: str, seeds: list[int], rates: list[float],
                    artifacts: list[str], baseline: Baseline) -> list[EvaluationResult]:
    """Train a batch of artifacts in one program; one result per artifact, in order."""
    request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds, learning_rates=rates,
                           artifacts=artifacts)
    with POOL.acquire(trainer_config(settings)) as trainer:
        return train_batch(trainer, request, baseline)


def _warm_rate(settings: Settings, target: str, env: str, profile: str, plan: SeedPlan, grid: list[float]) -> float:
    """The warm start's learning rate: the only one, or the best of the grid on the choosing seeds."""
    if plan.choose is None or len(grid) == 1:
        return grid[0]
    return baseline_for(settings, target, env, profile, plan.choose, grid).best_lr


def evaluate_warm_start(settings: Settings, target: str, env: str, profile: str, protocol: str,
                        plan: SeedPlan) -> tuple[EvaluationResult, Baseline]:
    """Train the warm start on the scored seeds at its learning rate; the result and the baseline it sets."""
    grid = learning_rates(env, profile, protocol)
    rate = _warm_rate(settings, target, env, profile, plan, grid)
    result = train_warm_start(settings, target, env, profile, plan.score, [rate])
    if result.outcome is not Outcome.ok or result.result is None:
        raise BaselineError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    if plan.choose is not None and len(grid) > 1:
        chooser = baseline_for(settings, target, env, profile, plan.choose, grid)
        result.result.lr_choice = LearningRateChoice(seeds=plan.choose, learning_rates=grid,
                                                     mean_returns=chooser.mean_returns, chosen=rate)
    return result, baseline_for(settings, target, env, profile, plan.score, [rate], measured=result)


def evaluate_artifacts(settings: Settings, target: str, env: str, profile: str, protocol: str, plan: SeedPlan,
                       artifacts: list[str], chosen: list[float | None]) -> tuple[list[EvaluationResult], Baseline]:
    """Train candidates on one environment under the learning-rate protocol; one result per artifact.

    A candidate's rate is `chosen[i]` when an earlier phase chose it, else the only rate, else the best of
    the grid on `plan.choose`; its score is then measured on `plan.score` (never the seeds that chose it).
    """
    grid = learning_rates(env, profile, protocol)
    baseline = baseline_for(settings, target, env, profile, plan.score,
                            [_warm_rate(settings, target, env, profile, plan, grid)])
    rates: list[float | None] = [rate if rate is not None else grid[0] if len(grid) == 1 else None
                                 for rate in chosen]
    results: list[EvaluationResult | None] = [None] * len(artifacts)
    choices: dict[int, LearningRateChoice] = {}
    to_choose = [i for i, rate in enumerate(rates) if rate is None]
    if to_choose:
        if plan.choose is None:
            raise ValueError("a learning rate must be chosen, and the plan has no seeds to choose it on")
        chooser = baseline_for(settings, target, env, profile, plan.choose, grid)
        trained = train_artifacts(settings, target, env, profile, plan.choose, grid,
                                  [artifacts[i] for i in to_choose], chooser)
        for i, result in zip(to_choose, trained, strict=True):
            if result.result is None:
                results[i] = result
                continue
            rates[i] = result.result.best_lr
            choices[i] = LearningRateChoice(seeds=plan.choose, learning_rates=grid,
                                            mean_returns=[sum(row) / len(row) for row in result.result.returns],
                                            chosen=result.result.best_lr)
    for rate in dict.fromkeys(r for i, r in enumerate(rates) if r is not None and results[i] is None):
        group = [i for i, r in enumerate(rates) if r == rate and results[i] is None]
        for i, result in zip(group, train_artifacts(settings, target, env, profile, plan.score, [rate],
                                                    [artifacts[i] for i in group], baseline), strict=True):
            if result.result is not None and i in choices:
                result.result.lr_choice = choices[i]
            results[i] = result
    assert all(r is not None for r in results)
    return results, baseline  # type: ignore[return-value]


def score(result: EnvResult, baseline: Baseline) -> tuple[float, ScoreBasis]:
    return normalised_score(result.final_return, baseline.warm_returns, baseline.random_returns,
                            baseline.return_floor)


def evaluate_code(settings: Settings, target: str, code: str, env: str, profile: str, seeds: list[int],
                  protocol: str = "fixed") -> ScoredResult:
    """Trace and train `code` on one environment and score it; raise EvaluationFailed if it failed.

    Under `grid` the rate is chosen on `seeds` and the score measured on as many fresh seeds after them.
    """
    traced = trace_code(settings, target, code)
    if traced.outcome is not Outcome.ok or traced.artifact is None:
        raise EvaluationFailed(traced.outcome.value, (traced.error or "no artifact").splitlines()[0])
    plan = SeedPlan(score=seeds) if protocol == "fixed" else SeedPlan(
        choose=seeds, score=[max(seeds) + 1 + i for i in range(len(seeds))])
    [evaluation], baseline = evaluate_artifacts(settings, target, env, profile, protocol, plan, [traced.artifact],
                                                [None])
    if evaluation.result is None:
        raise EvaluationFailed(evaluation.outcome.value, (evaluation.error or "no result").splitlines()[0])
    value, basis = score(evaluation.result, baseline)
    return ScoredResult(result=evaluation.result, baseline=baseline, score=value, score_basis=basis)
