"""OpenES (Salimans et al. 2017), the black-box meta-learner of "How Should We Meta-Learn RL Algorithms?".

Pure numpy, no JAX: the service runs the strategy (a few vector operations per generation) and stores its
state every generation; the trainer only evaluates the population it asks for. As in the paper's ES-LPO
(evosax's OpenES, as the paper's code configures it):

- the search distribution is N(mean, sigma^2 I) around a mean that starts at zero (a zero network is PPO);
- sampling is antithetic: member 2i is `mean + sigma * eps_i`, member 2i+1 is `mean - sigma * eps_i`
  (evosax puts the two halves one after the other; we interleave them, so a pair sits side by side);
- fitness is shaped by centered ranks in [-0.5, 0.5], summing to 0;
- the gradient estimate `1 / (N sigma) * sum_k eps_k * rank_k` is followed by Adam on the mean, climbing
  (fitness is maximised);
- after each generation sigma and the learning rate decay geometrically, each down to its floor.

Two deliberate differences from evosax: tied fitnesses share their average rank (CartPole's returns cap at
500, and a pair that both reach it says nothing about its direction, where evosax's tie-break by index would
invent a gradient), and a non-finite fitness (a diverged training) ranks below every finite one (the paper
replaces NaN by -100000, the same ordering).

Determinism: the noise of generation g comes from `numpy.random.default_rng([seed, g])`, so a generation
resumed from its stored state asks exactly the same population.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8
MIRROR_TOLERANCE = 1e-5  # how far a pair's midpoint may sit from the mean (members may come back as float32)
MAX_GENERATIONS = 100_000  # an es run's generations, extensions included


class ESSettings(BaseModel):
    """The strategy's hyper-parameters (the paper's ES-LPO values are the defaults, but for the population)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    population: int = Field(default=64, ge=2, le=4096)  # even: antithetic pairs
    generations: int = Field(default=800, ge=1, le=MAX_GENERATIONS)
    sigma_init: float = Field(default=0.03, gt=0.0)
    sigma_decay: float = Field(default=0.99, gt=0.0, le=1.0)
    sigma_limit: float = Field(default=0.01, gt=0.0)
    lr_init: float = Field(default=0.03, gt=0.0)
    lr_decay: float = Field(default=0.99, gt=0.0, le=1.0)
    lr_limit: float = Field(default=1e-3, gt=0.0)

    @field_validator("population")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"the population must be even (antithetic pairs), got {value}")
        return value


def _finite(values: list[float], name: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} holds a non-finite value")
    return values


class ESState(BaseModel):
    """Everything the strategy needs between generations; JSON-able (lists of floats) to be stored per generation.

    `generation` is the generation about to be asked (and, once its fitness is in, told); `step` counts the
    Adam updates made (the bias correction's exponent), equal to `generation` for a run told every generation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(ge=0)
    generation: int = Field(default=0, ge=0)
    step: int = Field(default=0, ge=0)
    sigma: float = Field(gt=0.0)
    lr: float = Field(gt=0.0)
    mean: list[float] = Field(min_length=1)
    m: list[float]  # Adam's first moment
    v: list[float]  # Adam's second moment

    @field_validator("mean", "m", "v")
    @classmethod
    def _all_finite(cls, values: list[float], info: ValidationInfo) -> list[float]:
        return _finite(values, info.field_name or "a vector")

    @model_validator(mode="after")
    def _same_sizes(self) -> ESState:
        if not len(self.mean) == len(self.m) == len(self.v):
            raise ValueError(f"mean, m and v differ in size ({len(self.mean)}, {len(self.m)}, {len(self.v)})")
        if any(x < 0.0 for x in self.v):
            raise ValueError("Adam's second moment v must be non-negative")
        return self

    @property
    def dim(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, object]:
        """The JSON-able form stored every generation (floats round-trip exactly through JSON)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ESState:
        return cls.model_validate(data)


def initial_state(settings: ESSettings, dim: int, seed: int, mean: np.ndarray | None = None) -> ESState:
    """Generation 0: the given mean (zeros by default: the zero network, which is PPO), no Adam history."""
    start = np.zeros(dim) if mean is None else np.asarray(mean, dtype=np.float64)
    if start.shape != (dim,):
        raise ValueError(f"the initial mean must have shape ({dim},), got {start.shape}")
    zeros = [0.0] * dim
    return ESState(seed=seed, sigma=settings.sigma_init, lr=settings.lr_init, mean=start.tolist(), m=zeros, v=zeros)


def generation_rng(seed: int, generation: int) -> np.random.Generator:
    """The noise of one generation: a function of the run's seed and the generation only."""
    return np.random.default_rng([seed, generation])


def ask(state: ESState, settings: ESSettings, rng: np.random.Generator | None = None) -> np.ndarray:
    """The population [population, dim] (float64): member 2i = mean + sigma * eps_i, 2i+1 = mean - sigma * eps_i.

    Without `rng`, the generation's own (`generation_rng(state.seed, state.generation)`), so asking again after a
    crash gives the identical population.
    """
    noise_rng = generation_rng(state.seed, state.generation) if rng is None else rng
    eps = noise_rng.standard_normal((settings.population // 2, state.dim))
    mean = np.asarray(state.mean, dtype=np.float64)
    population = np.empty((settings.population, state.dim))
    population[0::2] = mean + state.sigma * eps
    population[1::2] = mean - state.sigma * eps
    return population


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5] (lowest fitness -0.5, highest 0.5), summing to 0; ties share their average
    rank, and a non-finite fitness (NaN, -inf, +inf alike: a diverged training) ranks below every finite one."""
    values = np.asarray(fitness, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"fitness must be a vector of at least two values, got shape {values.shape}")
    values = np.where(np.isfinite(values), values, -np.inf)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    _, tie_group, tie_count = np.unique(values, return_inverse=True, return_counts=True)
    rank_sums = np.zeros(tie_count.size)
    np.add.at(rank_sums, tie_group, ranks)
    averaged = (rank_sums / tie_count)[tie_group]
    return averaged / (values.size - 1) - 0.5


def gradient_estimate(population: np.ndarray, shaped: np.ndarray, sigma: float) -> np.ndarray:
    """The ascent direction `1 / (N sigma) * sum_k eps_k * shaped_k`, with eps read off the antithetic pairs
    (`(x_2i - x_2i+1) / (2 sigma)`: exact whatever the mean, and pair members' shared terms cancel)."""
    eps = (population[0::2] - population[1::2]) / (2.0 * sigma)
    return eps.T @ (shaped[0::2] - shaped[1::2]) / (population.shape[0] * sigma)


def _check_told(state: ESState, settings: ESSettings, population: np.ndarray, fitness: np.ndarray) -> None:
    if population.shape != (settings.population, state.dim):
        raise ValueError(f"the population must have shape ({settings.population}, {state.dim}), "
                         f"got {population.shape}")
    if fitness.shape != (settings.population,):
        raise ValueError(f"fitness must have shape ({settings.population},), got {fitness.shape}")
    if not np.all(np.isfinite(population)):
        raise ValueError("the population holds a non-finite value")
    midpoints = (population[0::2] + population[1::2]) / 2.0
    if not np.allclose(midpoints, np.asarray(state.mean), rtol=0.0, atol=MIRROR_TOLERANCE):
        raise ValueError("the population is not this state's: its pairs do not mirror each other around the mean")


def tell(state: ESState, settings: ESSettings, population: np.ndarray, fitness: np.ndarray) -> ESState:
    """The next generation's state: centered ranks, the gradient estimate, one Adam step up the fitness, and
    sigma and the learning rate decayed to their floors."""
    population = np.asarray(population, dtype=np.float64)
    fitness = np.asarray(fitness, dtype=np.float64)
    _check_told(state, settings, population, fitness)
    grad = gradient_estimate(population, centered_ranks(fitness), state.sigma)
    step = state.step + 1
    m = ADAM_BETA1 * np.asarray(state.m) + (1.0 - ADAM_BETA1) * grad
    v = ADAM_BETA2 * np.asarray(state.v) + (1.0 - ADAM_BETA2) * grad**2
    m_hat = m / (1.0 - ADAM_BETA1**step)
    v_hat = v / (1.0 - ADAM_BETA2**step)
    mean = np.asarray(state.mean) + state.lr * m_hat / (np.sqrt(v_hat) + ADAM_EPSILON)
    return ESState(
        seed=state.seed,
        generation=state.generation + 1,
        step=step,
        mean=mean.tolist(),
        m=m.tolist(),
        v=v.tolist(),
        sigma=max(state.sigma * settings.sigma_decay, settings.sigma_limit),
        lr=max(state.lr * settings.lr_decay, settings.lr_limit),
    )
