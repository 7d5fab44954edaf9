"""The evaluation boundary: what is asked of an evaluation and what comes back.

These pydantic models travel as JSON between the service, the sandbox parent and the tracer child
(`TraceRequest`, `TraceResult`), and from the worker to the service (`EnvResult`, `EvaluationResult`),
which stores them. `Outcome` is the one enumeration of how an evaluation ended.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.trainer.protocol import EncodedArray
from workers.vocabulary import Metric, Outcome, Verdict

# PPO's loss parts, in the order of the trainer's diagnostics array (`workers.rl.ppo` computes them).
DIAGNOSTICS = ("actor_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


class Comparison(BaseModel):
    """A score with its uncertainty against the anchor (`workers.statistics.compare`)."""

    score: float  # mean over environments of the mean over seeds of the normalised score (warm start: 1.0)
    ci: tuple[float, float]  # two-sided interval for `score`, the anchor's own uncertainty included
    confidence: float  # of the whole race (each of `looks` looks had a share of the error rate)
    looks: int = 1
    method: str  # "bootstrap" (stratified over seeds and environments) or "normal, anchor noise" (few seeds)
    verdict: Verdict
    p_improvement: float  # P(a seed of the candidate beats a seed of the anchor), averaged over environments
    iqm: float  # interquartile mean of every per-seed score across environments
    seeds: int  # seeds per environment behind it (the fewest of any environment)


VERDICT_WORDS = {Verdict.better: "better than the warm start", Verdict.worse: "worse than the warm start",
                 Verdict.inconclusive: "not distinguishable from the warm start"}


def score_text(score: float | None, comparison: dict | None) -> str:
    """A score as every face prints it: `1.0630 (95% CI 0.55-1.57, not distinguishable from the warm start, 2 seeds)`.

    `comparison` is a stored Comparison (a dict); without one, the score stands alone (it has no interval)."""
    if score is None:
        return "not scored"
    if not comparison:
        return f"{score:.4f}"
    low, high = comparison["ci"]
    return (f"{score:.4f} ({comparison['confidence']:.0%} CI {low:.2f}-{high:.2f}, "
            f"{VERDICT_WORDS[Verdict(comparison['verdict'])]}, {comparison['seeds']} "
            f"seed{'s' if comparison['seeds'] != 1 else ''})")


# Distillation (`workers.distill`, `workers.targets.kernels.lpo_distill`): the grid, a fit, and how it went.
MAX_GRID = 1024  # samples per axis: the paper's 1024 x 1024 map is 4 MiB of float32 (the tracer's result cap is 8)
DEFAULT_STEPS = 100  # Adam steps of a fit: on 256 x 256, width 128, ~11 s on one CPU core (docs/meta_learners.md)


class GridSpec(BaseModel):
    """The distillation grid: `advantages` values of A in [-8, 8) by `ratios` values of log r in [-2, 2)."""

    advantages: int = Field(256, ge=2, le=MAX_GRID)
    ratios: int = Field(256, ge=2, le=MAX_GRID)

    @property
    def size(self) -> int:
        return self.advantages * self.ratios


class FitSpec(BaseModel):
    """Fit a student of `width` to one teacher, given as numbers: its map on `grid` or its network's vector."""

    width: int = Field(ge=1, le=MAX_GRID)
    steps: int = Field(DEFAULT_STEPS, ge=1, le=100_000)
    learning_rate: float = Field(1e-4, gt=0.0, le=0.1)
    final_learning_rate: float = Field(1e-5, gt=0.0, le=0.1)
    seed: int = Field(0, ge=0, lt=2**31)
    grid: GridSpec = Field(default_factory=GridSpec)
    teacher_map: EncodedArray | None = None  # float32 [grid.size]
    teacher_parameters: EncodedArray | None = None  # float32 [(8 + 1) * teacher_width]
    teacher_width: int | None = Field(None, ge=1, le=MAX_GRID)

    @model_validator(mode="after")
    def _one_teacher(self) -> FitSpec:
        if (self.teacher_map is None) == (self.teacher_parameters is None):
            raise ValueError("a fit has one teacher: its map or its network's parameters")
        if (self.teacher_parameters is None) != (self.teacher_width is None):
            raise ValueError("a network teacher's parameters need its width, and only they do")
        return self


class FitReport(BaseModel):
    """How a fit went, in plain numbers (MSE of the student's map against the teacher's on the whole grid)."""

    steps: int
    initial_mse: float  # the student at its start (PPO's clip)
    final_mse: float
    max_abs_error: float
    teacher_mean_square: float  # mean(teacher^2): the scale an MSE is small against
    seconds: float


class TraceRequest(BaseModel):
    """One candidate (source text) to load, probe and export for the given platforms. With `grid`, evaluate its
    gradient map on that distillation grid instead of exporting it; with `fit` (and no code), fit a student network
    to the numbers it carries: project code only (`workers.distill`)."""

    target: str
    code: str
    platforms: list[str] = Field(default_factory=lambda: ["cpu"])
    check_rules: bool = False  # also check the target's rules (a proposal, before it costs a training run)
    grid: GridSpec | None = None
    fit: FitSpec | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> TraceRequest:
        if self.grid is not None and self.fit is not None:
            raise ValueError("a request evaluates a grid or fits a student, not both")
        if self.fit is not None and self.code:
            raise ValueError("a fit runs no candidate code")
        return self


class TraceResult(BaseModel):
    """What the tracer child reports: a verdict and, when it is ok, the artifact. Untrusted data."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    error: str | None = None
    artifact: str | None = None  # base64 of `Artifact.to_bytes()`
    # `behaviour_fingerprint` of the probe's outputs. Like all of this, the candidate's own process wrote it:
    # it may only keep the candidate from being trained (as a duplicate), never give anything a score.
    fingerprint: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    # A grid request's map, or a fit's student vector (float32); the parent keeps them only through its own checks.
    values: EncodedArray | None = None
    fit_report: FitReport | None = None


class SeedPlan(BaseModel):
    """The seeds of one evaluation: `score` are the seeds whose returns are scored; `choose`, under the
    `grid` protocol, the other seeds on which the learning rate is chosen (None: nothing to choose)."""

    score: list[int]
    choose: list[int] | None = None


class LearningRateChoice(BaseModel):
    """How the `grid` protocol chose a learning rate: mean final return per rate on seeds that are not scored."""

    seeds: list[int]
    learning_rates: list[float]
    mean_returns: list[float]
    chosen: float


class EnvResult(BaseModel):
    """What training produced on one environment."""

    env: str
    profile: str
    seeds: list[int]
    learning_rates: list[float]
    returns: list[list[float]]  # [learning rate][seed]: mean return over the last part of training
    auc_returns: list[list[float]] | None = None  # [learning rate][seed]: mean return over all of training
    curves: list[list[float]]  # [learning rate][update]: mean return across seeds per logged update
    seed_curves: list[list[float]] | None = None  # [seed][point] at the best learning rate: bands in the UI
    # At the best learning rate, per logged point: PPO's loss parts (actor and value loss, entropy,
    # approximate KL, clip fraction), the mean over seeds: how the candidate changes the update.
    diagnostics: dict[str, list[float]] = Field(default_factory=dict)
    best_lr: float
    final_return: float  # mean over seeds at the best learning rate
    env_steps: int  # environment steps per seed and learning rate
    compile_seconds: float
    train_seconds: float
    random_returns: list[float] | None = None  # set for the warm start: the random policy on the same seeds
    artifact_sha256: str | None = None  # the artifact that was trained (None: the project's own warm start)
    lr_choice: LearningRateChoice | None = None  # set when the rate was chosen on other seeds (`grid`)
    # Where the trainer ran: JAX's platform ("cpu", "cuda") and device ("TFRT_CPU_0", "cuda:0"); None: not reported.
    platform: str | None = None
    device: str | None = None


    def per_seed(self, metric: Metric = Metric.final) -> list[float]:
        """Per-seed returns at the best learning rate, by `metric`."""
        table = self.auc_returns if metric == Metric.auc and self.auc_returns is not None else self.returns
        return table[self.learning_rates.index(self.best_lr)]


class EvaluationResult(BaseModel):
    """How one candidate's evaluation on one environment ended, computed by the worker."""

    outcome: Outcome
    error: str | None = None
    result: EnvResult | None = None
    seconds: float = 0.0
    # What training it cost: environment steps (seeds x learning rates x the profile's steps per lane, over every
    # request it took part in) and its share of the trainer's compile and train seconds (a program trained with
    # other candidates is split between them). 0: not trained (a failed trace, a refusal, a crashed batch).
    env_steps: int = 0
    trainer_seconds: float = 0.0
