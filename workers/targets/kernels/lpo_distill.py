"""Distilling an lpo drift into a student network (issue 25, item 2): the grid, a teacher's gradient map, the fit.

**The map.** What the training loop takes from a drift is the gradient of PPO's policy loss with respect to the
ratio, `d/dr -(r A - relu(drift(r, A, eps)))` per sample, which is `g(r, A) - A` with

    g(r, A) = d/dr relu(drift(r, A, 0.2))

The `- A` is the same for every drift, so fitting the loss gradient by MSE is fitting `g` (the paper's
`lpo_distil.py` fits the loss gradient of a mean over the grid: the same up to a constant factor 1/N²). `g` is
the map a teacher is distilled from and the map a student is judged by.

**The grid** (the paper's, at any size): A in [-8, 8) in steps of 16 / advantages, log r in [-2, 2) in steps of
4 / ratios (r = 1 exactly on the grid), advantage-major: sample i is (A[i // ratios], r[i % ratios]). The paper
uses 1024 x 1024; 256 x 256 fits in seconds on a CPU.

**The student** is `workers.targets.kernels.lpo_network` at a chosen width: relu(net(x) - 1e-4 + relu(PPO's
clip)), W1 [8, width] and W2 [width], no biases (width 128: ES's network itself). W1 starts from LeCun's normal
(std 1/sqrt(8), flax's default), W2 from zero, so a fit starts at PPO's own map (the residual's zero) and moves
only where the teacher differs from it. Adam on the full grid (a random minibatch of at most `MAX_BATCH` samples
per step on a larger one), its learning rate linear from `learning_rate` to `final_learning_rate` (the paper's
1e-4 -> 1e-5) over `steps`, the whole loop one compiled program.

Project code on numbers only: a code teacher's map is computed by the sandboxed tracer child (`gradient_map`,
the only function here that calls candidate code), a network teacher's from its vector (`network_map`); the fit
(`fit`) sees only the map. Run inside the tracer child (`workers.sandbox.tracer`), never in the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import CandidateError
from workers.targets.kernels import lpo_network

EPSILON = 0.2  # PPO's clip range, as the trainer hands it to a drift
ADVANTAGE_SPAN, LOG_RATIO_SPAN = 16.0, 4.0  # A in [-8, 8), log r in [-2, 2)
CHUNK = 65536  # samples per call of a code teacher (its memory stays bounded on a 1024 x 1024 grid)
MAX_BATCH = 65536  # samples per Adam step (the full grid up to 256 x 256)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def grid(advantages: int, ratios: int) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, advantage), each [advantages * ratios] float32, advantage-major."""
    advantage = (np.arange(advantages) - advantages // 2) * (ADVANTAGE_SPAN / advantages)
    log_ratio = (np.arange(ratios) - ratios // 2) * (LOG_RATIO_SPAN / ratios)
    return (np.tile(np.exp(log_ratio), advantages).astype(np.float32),
            np.repeat(advantage, ratios).astype(np.float32))


def _map_of(drift: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """g = d/dr relu(drift(r, A)) per sample (the gradient of the sum: per sample for a per-sample drift)."""
    def g(ratio: jax.Array, advantage: jax.Array) -> jax.Array:
        return jax.grad(lambda r: jnp.sum(jax.nn.relu(drift(r, advantage))))(ratio)

    return g


def _chunked(step: Callable[[np.ndarray, np.ndarray], Any], ratio: np.ndarray, advantage: np.ndarray
             ) -> np.ndarray:
    """`step` over the grid in chunks of at most `CHUNK` samples (one shape, so one compiled program)."""
    size = ratio.size
    chunk = min(CHUNK, size)
    padded = -(-size // chunk) * chunk
    r = np.concatenate([ratio, np.ones(padded - size, np.float32)])
    a = np.concatenate([advantage, np.zeros(padded - size, np.float32)])
    parts = [np.asarray(step(r[i:i + chunk], a[i:i + chunk])) for i in range(0, padded, chunk)]
    return np.concatenate(parts)[:size].astype(np.float32)


def gradient_map(fn: Callable[..., Any], ratio: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """A code teacher's map on the grid: run in the tracer child, on the candidate's function. Raises
    CandidateError when it fails or is not finite."""
    def drift(r: jax.Array, a: jax.Array) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(fn(r, a, jnp.float32(EPSILON)), jnp.float32), r.shape)

    try:
        values = _chunked(jax.jit(_map_of(drift)), ratio, advantage)
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"the drift's gradient could not be computed on the grid: {type(exc).__name__}") \
            from exc
    if not np.isfinite(values).all():
        raise CandidateError("the drift's gradient is not finite everywhere on the distillation grid")
    return values


def network_map(vector: np.ndarray, width: int, ratio: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """A network teacher's (or a student's) map on the grid, from its parameter vector."""
    weights = jnp.asarray(vector, jnp.float32)

    def drift(r: jax.Array, a: jax.Array) -> jax.Array:
        return lpo_network.network_drift(weights, r, a, jnp.float32(EPSILON), width)

    return _chunked(jax.jit(_map_of(drift)), ratio, advantage)


class Fitted(NamedTuple):
    vector: np.ndarray  # float32 [(8 + 1) * width]
    initial_mse: float  # on the whole grid, before the first step (the student at PPO)
    final_mse: float  # on the whole grid, after the last
    max_abs_error: float  # the largest |student - teacher| on the grid, after the last step
    teacher_mean_square: float  # mean(teacher^2): what an MSE is small against
    seconds: float


def initial_vector(width: int, seed: int) -> np.ndarray:
    """W1 ~ N(0, 1/8) (LeCun's normal, flax's default), W2 = 0: the student starts as PPO's clip."""
    hidden = jax.random.normal(jax.random.PRNGKey(seed), (lpo_network.FEATURES, width)) / np.sqrt(
        lpo_network.FEATURES)
    return np.concatenate([np.asarray(hidden, np.float32).ravel(), np.zeros(width, np.float32)])


def _train(width: int, steps: int, learning_rate: float, final_learning_rate: float, batch: int
           ) -> Callable[..., jax.Array]:
    """The whole fit as one jitted function of (vector, ratio, advantage, teacher, key)."""
    def loss(vector: jax.Array, r: jax.Array, a: jax.Array, t: jax.Array) -> jax.Array:
        student = _map_of(lambda rr, aa: lpo_network.network_drift(vector, rr, aa, jnp.float32(EPSILON), width))
        return jnp.mean(jnp.square(student(r, a) - t))

    grad = jax.grad(loss)

    def run(vector: jax.Array, ratio: jax.Array, advantage: jax.Array, teacher: jax.Array, key: jax.Array
            ) -> jax.Array:
        def body(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
            v, m, s = carry
            if batch < ratio.shape[0]:
                index = jax.random.randint(jax.random.fold_in(key, i), (batch,), 0, ratio.shape[0])
                g = grad(v, ratio[index], advantage[index], teacher[index])
            else:
                g = grad(v, ratio, advantage, teacher)
            m = ADAM_BETAS[0] * m + (1 - ADAM_BETAS[0]) * g
            s = ADAM_BETAS[1] * s + (1 - ADAM_BETAS[1]) * g * g
            t = (i + 1).astype(jnp.float32)
            fraction = i.astype(jnp.float32) / max(steps - 1, 1)
            lr = learning_rate + (final_learning_rate - learning_rate) * fraction
            update = (m / (1 - ADAM_BETAS[0] ** t)) / (jnp.sqrt(s / (1 - ADAM_BETAS[1] ** t)) + ADAM_EPS)
            return v - lr * update, m, s

        zeros = jnp.zeros_like(vector)
        return jax.lax.fori_loop(0, steps, body, (vector, zeros, zeros))[0]

    return jax.jit(run)


def fit(teacher: np.ndarray, ratio: np.ndarray, advantage: np.ndarray, width: int, steps: int,
        learning_rate: float, final_learning_rate: float, seed: int) -> Fitted:
    """Fit a student of `width` to the teacher's map on the grid by MSE (the module's docstring says how)."""
    started = time.monotonic()
    start = initial_vector(width, seed)
    before = network_map(start, width, ratio, advantage)
    train = _train(width, steps, learning_rate, final_learning_rate, min(MAX_BATCH, ratio.size))
    fitted = train(jnp.asarray(start), jnp.asarray(ratio), jnp.asarray(advantage), jnp.asarray(teacher),
                      jax.random.PRNGKey(seed + 1))
    vector = np.asarray(fitted, dtype=np.float32)
    after = network_map(vector, width, ratio, advantage)
    teacher64 = teacher.astype(np.float64)
    return Fitted(vector=vector, initial_mse=float(np.mean(np.square(before - teacher64))),
                  final_mse=float(np.mean(np.square(after - teacher64))),
                  max_abs_error=float(np.max(np.abs(after - teacher64))),
                  teacher_mean_square=float(np.mean(np.square(teacher64))), seconds=time.monotonic() - started)
