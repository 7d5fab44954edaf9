"""The shape of a discovery run request, shared by the REST API and the CLI, validated at the boundary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from workers.rl.envs import ENVIRONMENTS
from workers.targets import TARGETS

EnvName = Literal[tuple(ENVIRONMENTS)]  # type: ignore[valid-type]
TargetName = Literal[tuple(TARGETS)]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Environments(Strict):
    train: list[EnvName] = Field(default_factory=list, json_schema_extra={"uniqueItems": True},
                                 description="meta-train environments (default: the target's)")
    test: list[EnvName] = Field(default_factory=list, json_schema_extra={"uniqueItems": True},
                                description="held-out meta-test environments")

    @field_validator("train", "test")
    @classmethod
    def listed_once(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("an environment is listed twice")
        return names


class EvolutionProposerSpec(Strict):
    kind: Literal["evolution"] = "evolution"


class LLMProposerSpec(Strict):
    kind: Literal["llm"]
    model: str = Field(min_length=1, max_length=200, description="model name at the endpoint")
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0)
    send_temperature: bool = Field(default=True, description="false for models that reject it (reasoning models)")
    json_mode: bool = True
    max_tokens: int | None = Field(default=4096, ge=16, le=200_000)
    base_url: HttpUrl | None = Field(default=None, description="OpenAI-compatible endpoint; default from settings")
    price_per_1k_prompt_tokens: float | None = Field(default=None, ge=0)
    price_per_1k_completion_tokens: float | None = Field(default=None, ge=0)


ProposerSpec = Annotated[EvolutionProposerSpec | LLMProposerSpec, Field(discriminator="kind")]


class Budget(Strict):
    candidates: int = Field(default=12, ge=1, le=1000, description="proposals to evaluate, the warm start aside")
    tokens: int | None = Field(default=None, ge=1, description="LLM tokens (prompt + completion)")
    cost_usd: float | None = Field(default=None, gt=0)
    wall_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class WebhookSpec(Strict):
    url: HttpUrl
    events: list[Literal["run.completed", "run.failed", "run.cancelled", "candidate.new_best"]] = Field(
        default_factory=lambda: ["run.completed", "run.failed", "run.cancelled"]
    )


class RunSpec(Strict):
    target: TargetName = "lpo"
    environments: Environments = Field(default_factory=Environments)
    profile: Literal["full", "quick", "smoke"] = "quick"
    proposer: ProposerSpec = Field(default_factory=EvolutionProposerSpec)
    budget: Budget = Field(default_factory=Budget)
    concurrency: int = Field(default=2, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    seeds_per_eval: int = Field(default=2, ge=1, le=64)
    webhook: WebhookSpec | None = None

    @model_validator(mode="after")
    def default_environments(self) -> RunSpec:
        if not self.environments.train:
            self.environments.train = list(TARGETS[self.target].default_train_envs)
        return self
