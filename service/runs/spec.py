"""The shape of a discovery run request, shared by the REST API and the CLI, validated at the boundary.

A request may name a preset (`service/runs/presets.py`): the preset's fields are the defaults and
every field the request gives wins over them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from service.db.models import Run
from service.proposers.base import MutationName
from service.proposers.es import MAX_GENERATIONS, ESSettings
from service.runs.presets import PRESETS, with_preset
from workers.rl.envs import ENVIRONMENTS
from workers.targets import TARGETS

EnvName = Literal[tuple(ENVIRONMENTS)]  # type: ignore[valid-type]
TargetName = Literal[tuple(TARGETS)]  # type: ignore[valid-type]


class Strict(BaseModel):
    # No unknown fields; no Infinity or NaN (JSON parsers accept them, and no budget or rate can be infinite).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Environments(Strict):
    train: list[EnvName] = Field(default_factory=list, json_schema_extra={"uniqueItems": True},
                                 description="meta-train environments (default: the target's)")
    test: list[EnvName] = Field(default_factory=list, json_schema_extra={"uniqueItems": True},
                                description="held-out meta-test environments (default: the target's)")

    @field_validator("train", "test")
    @classmethod
    def listed_once(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("an environment is listed twice")
        return names


class EvolutionProposerSpec(Strict):
    kind: Literal["evolution"] = "evolution"
    mutation_weights: dict[MutationName, Annotated[float, Field(ge=0.0)]] | None = Field(
        default=None, description="relative weight of each mutation (constant, swap, function, wrap, duplicate, "
        "delete); null: small changes first, deletions last")
    crossover_probability: float | None = Field(default=None, ge=0.0, le=1.0,
                                                description="chance that a child grafts a piece of a second parent; "
                                                "null: 0.05")

    @field_validator("mutation_weights")
    @classmethod
    def _some_mutation(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is not None and not any(w > 0 for w in weights.values()):
            raise ValueError("give at least one mutation a positive weight")
        return weights


class LLMProposerSpec(Strict):
    kind: Literal["llm"]
    model: str | None = Field(default=None, min_length=1, max_length=200,
                              description="model name at the endpoint (with `models`: the first of them)")
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=8, json_schema_extra={"uniqueItems": True},
        description="an ensemble: each proposal picks one of these models by a bandit on how often its "
                    "proposals beat their parent (default: `model` alone)")
    bandit: Literal["thompson", "ucb"] = Field(
        default="thompson", description="how an ensemble picks: Thompson sampling or UCB1 on improvement")
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0,
                                      description="null: not sent (reasoning models reject it)")
    send_temperature: bool = Field(default=True, description="false: temperature not sent (same as null)")
    json_mode: bool = True
    max_tokens: int | None = Field(default=4096, ge=16, le=200_000,
                                   description="sent as max_tokens; null: no limit sent")
    max_completion_tokens: int | None = Field(
        default=None, ge=16, le=200_000,
        description="sent instead of max_tokens (reasoning models; counts their reasoning tokens too)")
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        default=None, description="sent only when set (reasoning models)")
    history: Literal["bounded", "conversation", "none"] = Field(
        default="bounded",
        description="bounded: best and recent candidates in one prompt; conversation: the paper's multi-turn "
                    "chat of every earlier reply and its fitness; none: the warm start only (best-of-N)")
    history_max_turns: int = Field(default=30, ge=1, le=1000,
                                   description="conversation: earlier proposals kept (the oldest are dropped)")
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1,
        description="sent with every chat completion as `seed`, plus the proposal's index (so a run's requests "
                    "repeat while its proposals differ); best-effort determinism at endpoints that honour it. "
                    "null: not sent")
    base_url: HttpUrl | None = Field(default=None, description="OpenAI-compatible endpoint; default from settings")
    price_per_1k_prompt_tokens: float | None = Field(default=None, ge=0)
    price_per_1k_completion_tokens: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def one_ensemble(self) -> LLMProposerSpec:
        """`model` and `models` name one ensemble: after validation both are set, `model` first in `models`."""
        if len(set(self.models)) != len(self.models):
            raise ValueError("a model is listed twice in models")
        if self.model is None and not self.models:
            raise ValueError("give the model (or an ensemble: models)")
        if self.model is not None and self.models and self.model not in self.models:
            raise ValueError(f"model {self.model!r} is not one of models")
        if not self.models:
            self.models = [self.model]
        elif self.model is not None:
            self.models = [self.model, *(m for m in self.models if m != self.model)]
        self.model = self.models[0]
        return self

    @model_validator(mode="after")
    def one_token_limit(self) -> LLMProposerSpec:
        """max_completion_tokens replaces max_tokens: giving both is a mistake, not a choice we make for you."""
        if self.max_completion_tokens is not None:
            if "max_tokens" in self.model_fields_set and self.max_tokens is not None:
                raise ValueError("max_tokens and max_completion_tokens are mutually exclusive: set "
                                 "max_completion_tokens for reasoning models (and leave max_tokens out or null), "
                                 "max_tokens for the others")
            self.max_tokens = None
        return self


class ESProposerSpec(Strict):
    """The paper's black-box meta-learner: OpenES over the parameters of the target's network
    (`docs/meta_learners.md`). Its budget is `es.generations`, one generation at a time (`budget.candidates` is
    not used); the mean becomes a network candidate every `every_k` generations and at the end."""

    kind: Literal["es"]
    es: ESSettings = Field(default_factory=ESSettings,
                           description="population (even: antithetic pairs), generations, sigma and learning-rate "
                                       "schedules (default: the paper's ES-LPO values)")
    every_k: int = Field(default=50, ge=1, le=100_000,
                         description="generations between network candidates (the ES mean, evaluated, raced and "
                                     "meta-tested like a code candidate); the last generation always makes one")
    seeds_per_member: int = Field(default=1, ge=1, le=64,
                                  description="training seeds per member per generation, shared by the whole "
                                              "population (common random numbers), fresh each generation")


ProposerSpec = Annotated[EvolutionProposerSpec | LLMProposerSpec | ESProposerSpec, Field(discriminator="kind")]


class Budget(Strict):
    candidates: int = Field(default=12, ge=1, le=1000, description="proposals to evaluate, the warm start aside")
    tokens: int | None = Field(default=None, ge=1, description="LLM tokens (prompt + completion)")
    cost_usd: float | None = Field(default=None, gt=0)
    wall_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)




class Extension(Strict):
    """More budget for a completed run: it continues from its history (POST /v1/runs/{id}/extend). An es run's
    budget is its generations (`generations`), any other run's its proposals (`candidates`): give the one the run
    has."""

    candidates: int | None = Field(default=None, ge=1, le=1000,
                                   description="proposals to add (a run of the llm or evolution proposer)")
    generations: int | None = Field(default=None, ge=1, le=MAX_GENERATIONS,
                                    description="ES generations to add (an es run), asked from the state its last "
                                                "generation told")
    tokens: int | None = Field(default=None, ge=1,
                               description="LLM tokens to add to the token budget (for a run with one)")
    cost_usd: float | None = Field(default=None, gt=0, description="USD to add to the cost budget (for a run with one)")
    wall_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600,
                                       description="more wall time, counted from now (for a run with a wall-time "
                                                   "budget)")

    @model_validator(mode="after")
    def one_budget(self) -> Extension:
        if (self.candidates is None) == (self.generations is None):
            raise ValueError("give candidates (proposals to add) or, for an es run, generations: one of them")
        return self


class EarlyStoppingSpec(Strict):
    margin: float = Field(default=0.5, gt=0.0, le=100.0,
                          description="a candidate scoring more than this below the run's median on the first "
                          "meta-train environment is not trained on the others (normalised units: the warm start "
                          "scores 1, the random policy 0)")
    min_evaluated: int = Field(default=4, ge=1, le=1000,
                               description="candidates scored on the first environment before any is stopped")


class SearchSpec(Strict):
    islands: int = Field(default=1, ge=1, le=16,
                         description="sub-populations with their own history and best; proposal i goes to "
                                     "island (i - 1) mod islands")
    migration_interval: int = Field(default=4, ge=1, le=1000,
                                    description="proposals per island between migrations: after each, every "
                                    "island also sees the other islands' bests")
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="stop training a clearly hopeless candidate after the first environment "
        "(never the warm start, a re-evaluation or the meta-test); null: off")


class WebhookSpec(Strict):
    url: HttpUrl
    events: list[Literal["run.completed", "run.failed", "run.cancelled", "candidate.new_best"]] = Field(
        default_factory=lambda: ["run.completed", "run.failed", "run.cancelled"]
    )


PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]


class RunSpec(Strict):
    preset: PresetName | None = Field(default=None, description="a named protocol whose fields are the defaults "
                                      "(`paper`, `paper-open`, `quick`, `es-lpo`); every field given here wins over "
                                      "the preset's")
    target: TargetName = "lpo"
    environments: Environments = Field(default_factory=Environments)
    profile: Literal["full", "quick", "smoke"] = "quick"
    proposer: ProposerSpec = Field(default_factory=EvolutionProposerSpec)
    budget: Budget = Field(default_factory=Budget)
    search: SearchSpec = Field(default_factory=SearchSpec)
    concurrency: int = Field(default=2, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    seeds_per_eval: int = Field(default=2, ge=1, le=64, description="search seeds per evaluation")
    metatest_seeds: int = Field(default=4, ge=1, le=64, description="fresh seeds per meta-test evaluation")
    verification_seeds: int = Field(
        default=16, ge=1, le=96, description="fresh seeds a contender (a candidate whose search score beats the warm "
        "start) may get to decide its verdict, raced in rounds (2, then 8, ..., then this many) that stop as soon as "
        "the verdict is decided; the search seeds never enter it")
    metric: Literal["final", "auc"] = Field(
        default="final", description="the per-seed return a score is made of: `final`, the mean return of the episodes "
        "that ended in the last tenth of training; `auc`, of every episode of training (the area under the "
        "learning curve: less noisy, but it dilutes an improvement in where training ends). Both are stored with "
        "every evaluation")
    confidence: float = Field(default=0.95, ge=0.5, le=0.999,
                              description="of every interval and verdict: `better` only when the whole interval of "
                                          "the candidate's verified score lies above the warm start's")
    learning_rate: Literal["fixed", "grid"] = Field(
        default="fixed", description="`fixed`: each environment's published learning rate; `grid`: the best of the "
        "profile's grid, chosen on the search seeds and scored on fresh seeds")
    webhook: WebhookSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return with_preset(data["preset"], data)
        return data

    @model_validator(mode="after")
    def default_environments(self) -> RunSpec:
        if not self.environments.train:
            self.environments.train = list(TARGETS[self.target].default_train_envs)
        if not self.environments.test:
            self.environments.test = list(TARGETS[self.target].default_test_envs)
        return self

    @model_validator(mode="after")
    def es_needs_a_network(self) -> RunSpec:
        """ES searches the parameters of a network of the target's: a target without one cannot run it."""
        if self.proposer.kind == "es" and TARGETS[self.target].network is None:
            having = sorted(name for name, target in TARGETS.items() if target.network is not None)
            raise ValueError(f"the es proposer searches a network's parameters, and target {self.target!r} has no "
                             f"network: use a target that has one ({', '.join(having)})")
        return self


def spec_of(run: Run) -> RunSpec:
    """A stored run's spec, validated. Its columns are the truth (an extension changes `budget`); the preset and the
    webhook come from the spec stored at creation.

    Every reader of a run's settings goes through this, so no reader restates a default of the spec.
    """
    columns = {
        "target": run.target, "profile": run.profile, "proposer": run.proposer,
        "environments": {"train": run.train_envs or [], "test": run.test_envs or []}, "budget": run.budget,
        "search": run.search, "concurrency": run.concurrency, "seed": run.seed, "seeds_per_eval": run.seeds_per_eval,
        "metatest_seeds": run.metatest_seeds, "verification_seeds": run.verification_seeds,
        "confidence": run.confidence, "metric": run.metric, "learning_rate": run.lr_protocol,
    }
    # A column not yet set (a run built in memory, before its first flush) takes the spec's default.
    stored = (run.config or {}).get("spec", {})
    return RunSpec.model_validate({**stored, **{key: value for key, value in columns.items() if value is not None}})
