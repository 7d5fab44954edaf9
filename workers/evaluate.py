"""Evaluate a batch of candidates on one environment, end to end, on the worker.

The path: each candidate's source is traced in its own sandboxed child (`trace`), which yields an
artifact or a verdict; the artifacts of a batch go to a warm trainer in one request (`train_batch`),
which verifies them and trains every candidate × learning rate × seed in one program; the raw arrays
come back here, where returns, curves, the best learning rate and range checks are computed
(`env_result`). A batch that times out or kills the trainer is split in halves and retried, so a
hostile candidate ends up failing alone. Never raises because of what a candidate does.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time

import numpy as np

from workers.anchor import Anchor
from workers.results import DIAGNOSTICS, EnvResult, EvaluationResult, TraceRequest, TraceResult
from workers.rl.envs import get_config, get_env_spec
from workers.rl.scoring import (
    ImpossibleResult,
    check_returns,
    diagnostic_curves,
    final_returns,
    learning_curve,
    mean_returns,
)
from workers.sandbox.host import SandboxLimits
from workers.sandbox.isolate import trace_candidate
from workers.targets import get_target
from workers.trainer.client import TrainerFailed, TrainerProcess
from workers.trainer.parameters import parameters_sha256
from workers.trainer.protocol import TrainRequest, TrainResponse
from workers.vocabulary import Outcome

EXPORT_PLATFORMS = ["cpu", "cuda"]  # one artifact serves CPU and GPU trainers alike
# The warm start's own deadline per profile (it sets the scale for every candidate's deadline).
BASELINE_TIMEOUT_SECONDS = {"smoke": 240.0, "quick": 1800.0, "full": 6 * 3600.0}
DEADLINE_SLACK_SECONDS = 30.0  # on top of what the warm start needed
DEADLINE_FACTOR = 10.0  # a candidate may train this many times slower per lane than the warm start


def trace(code: str, target: str, limits: SandboxLimits, check_rules: bool = False) -> TraceResult:
    """Static check, then the sandboxed tracer (with the target's rules, for a proposal); raises only
    IsolationUnavailable."""
    request = TraceRequest(target=target, code=code, platforms=EXPORT_PLATFORMS, check_rules=check_rules)
    return trace_candidate(request, limits)


def artifact_sha256(artifact: str) -> str:
    return hashlib.sha256(base64.b64decode(artifact)).hexdigest()


def candidate_timeout(profile: str, anchor: Anchor | None, lanes: int) -> float:
    """How long a batch of `lanes` may train: a multiple of the warm start's measured time per lane."""
    if anchor is None:
        return BASELINE_TIMEOUT_SECONDS[profile]
    per_lane = anchor.train_seconds / max(1, anchor.lanes)
    return DEADLINE_SLACK_SECONDS + 2.0 * anchor.compile_seconds + DEADLINE_FACTOR * per_lane * lanes


def env_result(env: str, profile: str, seeds: list[int], learning_rates: list[float], return_sum: np.ndarray,
               episodes: np.ndarray, diagnostics: np.ndarray, response: TrainResponse, sha256: str | None
               ) -> EnvResult:
    """One candidate's raw arrays ([lr, seed, update(, part)]) as returns and curves; ImpossibleResult if
    implausible."""
    config, spec = get_config(env, profile), get_env_spec(env)
    check_returns(return_sum, episodes, spec.return_range, config.num_envs * config.num_steps)
    returns = final_returns(return_sum, episodes)  # [lr, seed]
    best = int(np.argmax(returns.mean(axis=1)))
    return EnvResult(
        env=env, profile=profile, seeds=list(seeds), learning_rates=[float(x) for x in learning_rates],
        returns=returns.tolist(), auc_returns=mean_returns(return_sum, episodes).tolist(),
        seed_curves=[learning_curve(return_sum[best][s:s + 1], episodes[best][s:s + 1], config.log_points)
                     for s in range(len(seeds))],
        curves=[learning_curve(return_sum[i], episodes[i], config.log_points) for i in range(len(learning_rates))],
        diagnostics=diagnostic_curves(diagnostics[best], DIAGNOSTICS, config.log_points),
        best_lr=float(learning_rates[best]), final_return=float(returns[best].mean()), env_steps=config.env_steps,
        compile_seconds=response.compile_seconds, train_seconds=response.train_seconds,
        random_returns=response.random_returns, artifact_sha256=sha256,
        platform=response.platform or None, device=response.device or None,
    )


def _trained_sha256(request: TrainRequest, index: int) -> str | None:
    """What candidate `index` trained: its artifact's or its parameter vector's SHA-256 (None: the warm start)."""
    if request.parameters is not None:
        return parameters_sha256(request.parameters[index])
    return None if request.artifacts is None else artifact_sha256(request.artifacts[index])


def _results(request: TrainRequest, response: TrainResponse, seconds: float) -> list[EvaluationResult]:
    count = request.candidates
    if response.error is not None:
        return [EvaluationResult(outcome=Outcome.error, error=f"the trainer failed: {response.error}", seconds=seconds)
                for _ in range(count)]
    out: list[EvaluationResult] = []
    position = {index: k for k, index in enumerate(response.trained)}
    arrays = None
    if response.trained:
        assert response.return_sum and response.episodes and response.finite and response.diagnostics
        arrays = (response.return_sum.decode(), response.episodes.decode(), response.finite.decode(),
                  response.diagnostics.decode())
    # What each trained candidate cost: its lanes' environment steps, its share of the one program's seconds.
    steps = len(request.seeds) * len(request.learning_rates) * get_config(request.env, request.profile).env_steps
    share = (response.compile_seconds + response.train_seconds) / max(1, len(response.trained))
    for index in range(count):
        if index in response.refused:
            what = "parameter vector" if request.parameters is not None else "artifact"
            out.append(EvaluationResult(outcome=Outcome.refused, error=f"the trainer refused the {what}: "
                                        f"{response.refused[index]}", seconds=seconds))
        elif index not in position or arrays is None:
            out.append(EvaluationResult(outcome=Outcome.error, error="the trainer returned nothing for it",
                                        seconds=seconds))
        else:
            result = _trained(request, response, tuple(a[position[index]] for a in arrays), index, seconds)
            out.append(result.model_copy(update={"env_steps": steps, "trainer_seconds": share}))
    return out


def _trained(request: TrainRequest, response: TrainResponse, arrays: tuple[np.ndarray, ...], index: int,
             seconds: float) -> EvaluationResult:
    """One trained candidate's raw arrays as its result: returns and curves, or why they cannot be scored."""
    return_sum, episodes, finite, diagnostics = arrays
    if not bool(np.all(finite)):
        return EvaluationResult(outcome=Outcome.nan, seconds=seconds,
                                error="training produced NaN or Inf (in the loss, the parameters or the returns)")
    try:
        result = env_result(request.env, request.profile, request.seeds, request.learning_rates, return_sum,
                            episodes, diagnostics, response, _trained_sha256(request, index))
    except ImpossibleResult as exc:
        return EvaluationResult(outcome=Outcome.error, error=f"impossible training result: {exc}", seconds=seconds)
    return EvaluationResult(outcome=Outcome.ok, result=result, seconds=seconds)


def train_batch(trainer: TrainerProcess, request: TrainRequest, anchor: Anchor | None) -> list[EvaluationResult]:
    """Train the request's artifacts or parameter vectors (or, with neither, the warm start) as one batch; split
    and retry on failure.

    One result per artifact or vector, in order. A batch that times out, exhausts memory, kills the trainer or makes
    it fail (a verified module that XLA cannot run) is split in halves, each retried (on a fresh trainer
    after a crash), down to single candidates, which then fail alone.
    """
    started = time.monotonic()
    count = request.candidates
    lanes = count * len(request.seeds) * len(request.learning_rates)
    try:
        response = trainer.train(request, candidate_timeout(request.profile, anchor, lanes))
    except TrainerFailed as exc:
        if count == 1:
            return [EvaluationResult(outcome=exc.outcome, error=exc.message, seconds=time.monotonic() - started)]
        return _split(trainer, request, anchor)
    if response.error is not None and count > 1:
        return _split(trainer, request, anchor)
    return _results(request, response, time.monotonic() - started)


def _split(trainer: TrainerProcess, request: TrainRequest, anchor: Anchor | None) -> list[EvaluationResult]:
    half = math.ceil(request.candidates / 2)
    return (train_batch(trainer, request.subset(0, half), anchor)
            + train_batch(trainer, request.subset(half, request.candidates), anchor))


def evaluate_in_process(target: str, codes: list[str], env: str, profile: str, seeds: list[int],
                        with_random_baseline: bool = False) -> list[EvaluationResult]:
    """Trace and train `codes` as one batch in this very process, with no sandbox and no trainer process,
    at the environment's published learning rate (or the target's own there, as OPEN's).

    For project code, tests and benchmarks only: candidate code runs here unisolated.
    """
    from workers.sandbox.tracer import trace as trace_here
    from workers.trainer.server import handle

    traced = [trace_here(TraceRequest(target=target, code=code)) for code in codes]
    ok = [t.artifact for t in traced if t.outcome is Outcome.ok and t.artifact]
    request = TrainRequest(target=target, env=env, profile=profile, seeds=seeds,
                           learning_rates=[get_config(env, profile, get_target(target).training).lr], artifacts=ok,
                           with_random_baseline=with_random_baseline)
    trained = iter(_results(request, handle(request), 0.0) if ok else [])
    return [next(trained) if t.outcome is Outcome.ok and t.artifact
            else EvaluationResult(outcome=t.outcome, error=t.error, seconds=t.seconds) for t in traced]
