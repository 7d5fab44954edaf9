"""The REST API's own models: problem details, pages, health, targets. What it shows of runs and candidates is
service.runs.views (shared with the web UI and the client); the request model of a run is service.runs.spec.RunSpec."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="validation errors: field and message")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class TargetInputOut(BaseModel):
    name: str
    description: str


class ReferenceOut(BaseModel):
    name: str
    description: str
    code: str


class TrainingOut(BaseModel):
    """How PPO trains around the target's plug-in (`workers/targets/base.Training`)."""

    learning_rates: dict[str, float] = Field(description="the rate each environment trains this target at under "
                                             "`learning_rate: fixed` (a grid is around it): the environment's tuned "
                                             "rate, or the target's own (OPEN's)")
    optimizer_noise: str = Field(description="which tensors the update rule's noise reaches: `all`, or `actor` "
                                 "(the critic's get zeros)")
    batch_proportion: str = Field(description="`step`: the gradient step's position in the update's epochs x "
                                  "minibatches; `epoch`: the epoch's position")
    gradient_clipping: str = Field(description="`global`: one global norm; `per_network`: the actor's and the "
                                   "critic's gradients each clipped on their own")


class TargetOut(BaseModel):
    name: str
    signature: str
    summary: str
    inputs: list[TargetInputOut]
    returns: str
    rules: list[str]
    warm_start: str
    default_train_envs: list[str]
    default_test_envs: list[str]
    references: list[ReferenceOut] = Field(description="known algorithms meta-tested beside the warm start")
    training: TrainingOut


class EnvironmentOut(BaseModel):
    name: str
    family: str
    description: str
    learning_rate: float
    profiles: dict[str, dict[str, Any]]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
