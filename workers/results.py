"""The evaluation boundary: what is asked of an evaluation and what comes back.

These pydantic models travel as JSON between the service, the sandbox parent and the sandbox child,
and are what the database stores. `Outcome` is the one enumeration of how an evaluation ended.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Outcome(StrEnum):
    ok = "ok"
    invalid = "invalid"  # rejected by the static check or the probe on random inputs
    error = "error"  # an exception while tracing or running
    nan = "nan"  # NaN or Inf in the returns or parameters
    timeout = "timeout"  # wall-clock limit reached
    memory = "memory"  # memory limit reached
    killed = "killed"  # the child died from a signal or without a result


class EvaluationRequest(BaseModel):
    """One candidate (source text) on one environment with one training profile."""

    target: str
    code: str
    env: str
    profile: str = "smoke"
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    learning_rates: list[float] | None = None  # None: the profile's grid for this environment
    trusted: bool = False  # project code (warm starts, baselines): may write the compile cache
    with_random_baseline: bool = False  # also measure a uniformly random policy on the same seeds


class EnvResult(BaseModel):
    """What training produced on one environment."""

    env: str
    profile: str
    seeds: list[int]
    learning_rates: list[float]
    returns: list[list[float]]  # [learning rate][seed]: mean return over the last part of training
    curves: list[list[float]]  # [learning rate][update]: mean return across seeds per logged update
    best_lr: float
    final_return: float  # mean over seeds at the best learning rate
    env_steps: int  # environment steps per seed and learning rate
    compile_seconds: float
    train_seconds: float
    random_return: float | None = None  # set when the request asked for the random baseline


class EvaluationResult(BaseModel):
    outcome: Outcome
    error: str | None = None
    result: EnvResult | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
