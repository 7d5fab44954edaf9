"""What the API, the web UI and the Python client show of runs, candidates and webhook deliveries.

Read models on a `from_attributes` base: a candidate row or object validates straight into `CandidateSummary`,
its stored comparisons (`stats`) read through alias paths, so no reader copies fields by hand. The queries that
fill them are `service.runs.queries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field


class View(BaseModel):
    """A read model: validates from ORM objects and result rows by attribute."""

    # Every field is in every response (a default is what a missing stored value reads as), so the OpenAPI
    # document marks them all required.
    model_config = ConfigDict(from_attributes=True, json_schema_serialization_defaults_required=True)


def stored(name: str, *paths: tuple[str, ...]) -> AliasChoices:
    """Read a field by its own name (JSON, a dict) or else from the first stored path that exists."""
    return AliasChoices(name, *(AliasPath(*path) for path in paths))


class Progress(View):
    candidates_done: int
    candidates_budget: int = Field(description="`budget.candidates` (an es run's budget is its generations)")
    in_flight: int
    generations_done: int | None = Field(default=None, description="an es run's told generations (null for "
                                         "another proposer's run)")
    generations_budget: int | None = Field(default=None, description="an es run's generations budget, "
                                           "`proposer.es.generations` (null for another proposer's run)")


class Spent(View):
    candidates: int
    tokens: int
    cost_usd: float
    duplicates_skipped: int
    seconds: float | None


class PhaseCost(View):
    """What one phase of a run consumed, on the axis every meta-learner shares."""

    env_steps: int = Field(description="environment steps: seeds x learning rates x the profile's steps, over every "
                           "evaluation (and, for an es run's search, every generation's population)")
    trainer_seconds: float = Field(description="the trainer's compile and train seconds (a program trained with "
                                   "other candidates is split between them)")


class RunCost(View):
    """A run's cost by phase and in total (the LLM's tokens and dollars are in `spent`)."""

    search: PhaseCost = Field(description="meta-train: the search evaluations (the anchor included) and an es run's "
                              "generations")
    verification: PhaseCost = Field(description="the races on fresh verification seeds")
    meta_test: PhaseCost = Field(description="the held-out environments: the best, the warm start, the references")
    total: PhaseCost


CI_TEXT = "95% (the run's `confidence`) interval of the score, the anchor's own uncertainty included"
P_IMPROVEMENT_TEXT = "P(a seed of it beats a seed of the warm start's anchor)"
VERDICT_TEXT = "against the warm start on seeds that did not select it: `better`, `worse` or `inconclusive`"
CI = Field(default=None, description=CI_TEXT)
P_IMPROVEMENT = Field(default=None, description=P_IMPROVEMENT_TEXT)
VERDICT = Field(default=None, description=VERDICT_TEXT)


class BestCandidate(View):
    candidate_id: str
    index: int
    name: str
    score: float | None = Field(description="its score on the verification seeds (1.0 = the warm start)")
    score_ci: tuple[float, float] | None = CI
    p_improvement: float | None = P_IMPROVEMENT
    verdict: str | None = VERDICT
    seeds: int | None = Field(default=None, description="verification seeds per environment behind the verdict")
    kind: str = Field(default="code", description="`code`, or `network`: an ES mean's (or a student's) parameters")
    readable: bool = Field(default=True, description="whether the best is code a person can read (a network's "
                           "parameter vector is not)")
    made_by: str | None = Field(default=None, description="what made it: the run's proposer (`llm`, `evolution`, "
                                "`es`), `distilled` for a student network (a network that no ES generation "
                                "made), or `warm start`")


class Discovery(View):
    """Whether the run found an algorithm that beats the warm start, said plainly."""

    found: bool = Field(description="true only when the best candidate's verdict is `better`")
    verdict: str | None = Field(description="the best candidate's verdict (null: the best is the warm start)")
    confidence: float
    verification_seeds: int = Field(description="the most fresh seeds a contender could get")
    message: str


class MetaTestCell(View):
    normalised_score: float | None
    score_basis: str | None = Field(description="`normalised`, or `return_ratio` when the warm start was within "
                                    "seed noise of random (flagged: not comparable with normalised scores)")
    final_return: float | None
    outcome: str
    score_ci: tuple[float, float] | None = Field(None, description=CI_TEXT,
                                                  validation_alias=stored("score_ci", ("stats", "comparison", "ci")))
    p_improvement: float | None = Field(None, description=P_IMPROVEMENT_TEXT, validation_alias=stored(
        "p_improvement", ("stats", "comparison", "p_improvement")))
    verdict: str | None = Field(None, description=VERDICT_TEXT,
                                validation_alias=stored("verdict", ("stats", "comparison", "verdict")))
    seeds: int | None = Field(None, validation_alias=stored("seeds", ("stats", "comparison", "seeds")))


class MetaTestRow(View):
    env: str
    best: MetaTestCell | None
    warm_start: MetaTestCell | None
    references: dict[str, MetaTestCell | None] = Field(description="the target's reference algorithms, by name")


class WebhookOut(View):
    url: str
    events: list[str]
    secret: str | None = Field(default=None, description="whsec_...: shown once, in the response that created it")


class OperatorStats(View):
    """What one evolution operator did in a run: its children, what became of them, and how they scored."""

    operator: str
    tried: int = Field(description="children made (each proposal's operator is its first change)")
    broke_a_rule: int = Field(description="turned down by the probe: they broke a rule of the target")
    behavioural_duplicates: int = Field(description="turned down by the probe: they compute a known function")
    proposed: int = Field(description="children that became candidates (these add up to the proposals)")
    trained_ok: int
    within_20_percent: int = Field(description="scored at least 0.8 (within 20% of the warm start)")
    above_warm_start: int = Field(description="scored above 1.0")
    success_rate: float | None = Field(description="within_20_percent / proposed")


class ModelStats(View):
    """What one model of a run's ensemble did: the bandit's pulls, their cost and their best."""

    model: str
    proposals: int = Field(description="candidates it proposed")
    evaluated: int = Field(description="of those, trained with outcome ok")
    improved: int = Field(description="of those, scored above their parent (the warm start when they had none): "
                          "the bandit's reward")
    tokens: int = Field(description="prompt + completion tokens of its calls")
    cost_usd: float
    best_score: float | None = Field(description="its best candidate's score (verified when it was raced)")


class IslandStats(View):
    """One island of a run: its proposals and its best so far."""

    island: int
    proposals: int
    best_candidate_id: str | None
    best_score: float | None = Field(description="its best candidate's score (verified when it was raced)")


class TrainedOn(View):
    """A platform and device the trainer ran a run's evaluations on."""

    platform: str = Field(description='JAX\'s backend: "cpu", "cuda"')
    device: str | None = Field(description='the device: "TFRT_CPU_0", "cuda:0"')
    evaluations: int


class RunOut(View):
    id: str
    status: str
    target: str
    environments: dict[str, list[str]]
    profile: str
    proposer: dict[str, Any]
    budget: dict[str, Any]
    concurrency: int
    seed: int
    preset: str | None
    seeds_per_eval: int
    metatest_seeds: int
    learning_rate: str = Field(description="`fixed`: published rates; `grid`: chosen on search seeds, scored on "
                               "fresh seeds")
    verification_seeds: int
    confidence: float
    metric: str = Field(description="the per-seed return scores are made of: `final` (last tenth of training) or "
                        "`auc` (all of training)")
    progress: Progress
    spent: Spent
    best: BestCandidate | None
    discovery: Discovery
    meta_test: list[MetaTestRow]
    cost: RunCost = Field(description="environment steps and trainer seconds per phase and in total")
    operators: list[OperatorStats] = Field(description="evolution: each operator's children and their scores")
    search: dict[str, Any] = Field(description="islands, migration_interval, early_stopping")
    models: list[ModelStats] = Field(description="llm: each model of the ensemble, the bandit's view of it")
    islands: list[IslandStats] = Field(description="with more than one island: each island's best")
    error: str | None
    provenance: dict[str, str | None] | None = Field(
        default=None, description="what made the run: package version and git commit, jax/jaxlib/gymnax versions, "
        "Python, OS and host, recorded when it was created")
    trained_on: list[TrainedOn] = Field(
        default_factory=list, description="where the trainer ran the run's evaluations: JAX's platform and device, "
        "most evaluations first (empty until one is trained)")
    webhook: WebhookOut | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class RunListItem(View):
    id: str
    status: str
    target: str
    proposer: str
    profile: str
    candidates_budget: int
    best_score: float | None
    best_verdict: str | None
    created_at: datetime
    finished_at: datetime | None


class CandidateSummary(View):
    id: str
    run_id: str
    index: int
    name: str
    is_warm_start: bool
    reference: str | None = Field(description="set for a reference algorithm of the target (meta-tested only)")
    status: str
    outcome: str | None
    score: float | None = Field(description="search score: nominates, never decides (1.0 = the warm start)")
    score_ci: tuple[float, float] | None = Field(None, description="interval of the search score",
                                                  validation_alias=stored("score_ci", ("stats", "search", "ci")))
    verified_score: float | None = Field(description="score on the fresh verification seeds only")
    verified_ci: tuple[float, float] | None = Field(
        None, description="interval of the verified score",
        validation_alias=stored("verified_ci", ("stats", "verification", "ci")))
    p_improvement: float | None = Field(None, description=P_IMPROVEMENT_TEXT, validation_alias=stored(
        "p_improvement", ("stats", "verification", "p_improvement"), ("stats", "search", "p_improvement")))
    verdict: str | None = VERDICT
    seeds: int | None = Field(None, description="verification seeds per environment behind the verdict",
                              validation_alias=stored("seeds", ("stats", "verification", "seeds")))
    parent_ids: list[str]
    error: str | None
    duplicate_of: str | None = Field(description="the earlier candidate that computes the same function on every "
                                     "probe input (this one was not trained)")
    operator: str | None = Field(description="evolution: the operator that made it")
    model: str | None = Field(description="llm: the model of the ensemble that made it")
    island: int | None = Field(description="the island it belongs to (none: the warm start, shared by all)")
    stopped_early: bool = Field(description="not trained past the first environment: it scored far below the "
                                "run's median there (its score covers the environments it was trained on)")
    kind: str = Field(default="code", description="`code`, or `network`: a parameter vector, not readable code")
    env_steps: int = Field(default=0, description="environment steps its evaluations trained, every phase")
    trainer_seconds: float = Field(default=0.0, description="its share of the trainer's seconds, every phase")
    created_at: datetime
    evaluated_at: datetime | None


class EvaluationOut(View):
    env: str
    phase: str
    round: int = Field(description="a verification race's round (0 outside verification)")
    seeds: list[int]
    learning_rates: list[float]
    returns: list[list[float]] | None
    curves: dict[str, Any] | None
    best_lr: float | None
    final_return: float | None
    normalised_score: float | None
    score_basis: str | None
    scores: list[float] | None = Field(None, description="normalised score per seed",
                                       validation_alias=stored("scores", ("stats", "scores")))
    score_ci: tuple[float, float] | None = Field(None, description=CI_TEXT,
                                                  validation_alias=stored("score_ci", ("stats", "comparison", "ci")))
    p_improvement: float | None = Field(None, description=P_IMPROVEMENT_TEXT, validation_alias=stored(
        "p_improvement", ("stats", "comparison", "p_improvement")))
    verdict: str | None = Field(None, description="this environment's comparison with the anchor (a search row's "
                                "verdict decides nothing: its seeds chose the candidate)",
                                validation_alias=stored("verdict", ("stats", "comparison", "verdict")))
    outcome: str
    error: str | None
    compile_seconds: float | None
    train_seconds: float | None
    env_steps: int | None = Field(None, description="environment steps this evaluation trained (null: recorded "
                                  "before they were)")
    trainer_seconds: float | None = Field(None, description="its share of the trainer's compile and train seconds")
    platform: str | None = None  # where the trainer ran it ("cpu", "cuda"); None: not trained or not recorded
    device: str | None = None  # "TFRT_CPU_0", "cuda:0"


class LlmCallOut(View):
    id: str
    model: str
    messages: list[dict[str, Any]]
    reply: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    cost_usd: float | None
    error: str | None


class CandidateDetail(CandidateSummary):
    code: str
    thought: str
    ast_hash: str
    diff: str | None = Field(description="unified diff against the first parent")
    children: list[str]
    evaluations: list[EvaluationOut]
    llm_call: LlmCallOut | None


class WebhookAttemptOut(View):
    attempted_at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None


class WebhookDeliveryOut(View):
    id: str
    event_id: int
    event_type: str
    message_id: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    attempt_log: list[WebhookAttemptOut]


class GenerationOut(View):
    """One told generation of an es run: its population's fitness, the strategy after it, and what it cost."""

    generation: int = Field(description="0 is the first; the network candidate 'after N generations' is the mean "
                            "told by generation N - 1")
    members: int = Field(description="the population")
    diverged: int = Field(description="members whose training diverged or failed (no finite fitness; ranked last)")
    fitness: list[float | None] = Field(description="each member's fitness (its final return normalised against "
                                        "the run's anchor, over its seeds and the meta-train environments; 1.0 = "
                                        "the warm start), member 2i and 2i + 1 an antithetic pair; null: diverged")
    fitness_mean: float | None = Field(description="the mean over the members with a finite fitness")
    fitness_ci: tuple[float, float] | None = Field(
        description="95% interval of the population's expected fitness (Student's t over the antithetic pairs' "
                    "means, the pairs whose members both trained; null with fewer than two such pairs)")
    fitness_std: float | None = Field(description="the members' spread (sample standard deviation)")
    fitness_min: float | None
    fitness_max: float | None
    sigma: float = Field(description="the strategy's noise scale after this generation (the next one asks with it)")
    learning_rate: float = Field(description="the strategy's Adam learning rate after this generation")
    seeds: list[int] = Field(description="the training seeds every member shared")
    env_steps: int = Field(description="environment steps the population trained")
    trainer_seconds: float
    created_at: datetime


class StudentOut(CandidateSummary):
    """A distilled student (`POST /v1/runs/{id}/distill`): a candidate of the run whose parent is its teacher."""

    kind: str = Field(description="`network`: a parameter vector of `network`, not readable code")
    network: str | None = Field(description="the network it parameterises: `lpo_network` (128 hidden units) or "
                                "`lpo_network-<width>`")
    distillation: dict[str, Any] | None = Field(
        None, description="the request (teacher, width, steps, learning rates, grid, seed) and, once fitted, the "
        "fit's report (MSE of the gradient map before and after, largest error, seconds)",
        validation_alias=stored("distillation", ("stats", "distillation")))
