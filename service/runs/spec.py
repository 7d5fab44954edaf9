"""The shape of a discovery run request, shared by the REST API and the CLI, validated at the boundary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator

from workers.rl.envs import ENVIRONMENTS
from workers.targets import TARGETS


class Environments(BaseModel):
    train: list[str] = Field(default_factory=list, description="meta-train environments (default: the target's)")
    test: list[str] = Field(default_factory=list, description="held-out meta-test environments")

    @field_validator("train", "test")
    @classmethod
    def known_environments(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in ENVIRONMENTS:
                raise ValueError(f"unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}")
        if len(set(names)) != len(names):
            raise ValueError("an environment is listed twice")
        return names


class ProposerSpec(BaseModel):
    kind: Literal["evolution", "llm"] = "evolution"
    model: str | None = Field(default=None, description="LLM model name (llm only)")
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0)
    send_temperature: bool = Field(default=True, description="false for models that reject it (reasoning models)")
    json_mode: bool = True
    max_tokens: int | None = Field(default=4096, ge=16, le=200_000)
    base_url: HttpUrl | None = Field(default=None, description="OpenAI-compatible endpoint; default from settings")
    price_per_1k_prompt_tokens: float | None = Field(default=None, ge=0)
    price_per_1k_completion_tokens: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def llm_needs_model(self) -> ProposerSpec:
        if self.kind == "llm" and not self.model:
            raise ValueError("proposer.model is required for the llm proposer")
        return self


class Budget(BaseModel):
    candidates: int = Field(default=12, ge=1, le=1000, description="proposals to evaluate, the warm start aside")
    tokens: int | None = Field(default=None, ge=1, description="LLM tokens (prompt + completion)")
    cost_usd: float | None = Field(default=None, gt=0)
    wall_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class WebhookSpec(BaseModel):
    url: HttpUrl
    events: list[Literal["run.completed", "run.failed", "run.cancelled", "candidate.new_best"]] = Field(
        default_factory=lambda: ["run.completed", "run.failed", "run.cancelled"]
    )


class RunSpec(BaseModel):
    target: str = "lpo"
    environments: Environments = Field(default_factory=Environments)
    profile: Literal["full", "quick", "smoke"] = "quick"
    proposer: ProposerSpec = Field(default_factory=ProposerSpec)
    budget: Budget = Field(default_factory=Budget)
    concurrency: int = Field(default=2, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    seeds_per_eval: int = Field(default=2, ge=1, le=64)
    webhook: WebhookSpec | None = None

    @field_validator("target")
    @classmethod
    def known_target(cls, name: str) -> str:
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        return name

    @model_validator(mode="after")
    def default_environments(self) -> RunSpec:
        if not self.environments.train:
            self.environments.train = list(TARGETS[self.target].default_train_envs)
        return self
