"""The LPO kernel: the drift's probe, its rules, the checks the trainer runs on an artifact, and the modules
the tracer exports (the drift and its VJP with respect to the ratio) with how the trainer plugs them into PPO.
Imported only by the tracer and the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import ArgSpec, CandidateError, ModuleSpec

RULE_TOLERANCE = 1e-4  # per unit of |advantage|: what "zero" means for the drift and its gradient at ratio 1


def _drift_and_grad(fn: Callable[..., Any], ratio: np.ndarray, advantage: np.ndarray,
                    cotangent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The drift and the gradient of sum(cotangent * drift) with respect to ratio (the cotangent: ones), traced and
    compiled once as the trainer would (for an artifact, the gradient is its exported VJP)."""
    weights = np.ones_like(ratio) if cotangent is None else cotangent

    def drift_and_grad(r: jax.Array, a: jax.Array, e: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.asarray(fn(r, a, e)), jax.grad(lambda r: jnp.sum(w * fn(r, a, e)))(r)

    try:
        out, grad = (np.asarray(x) for x in jax.jit(drift_and_grad)(ratio, advantage, np.float32(0.2), weights))
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"calling drift on random inputs failed: {type(exc).__name__}: {exc}") from exc
    if out.shape != ratio.shape:
        raise CandidateError(f"drift must return the shape of ratio {ratio.shape}, got {out.shape}")
    return out, grad


def _probe_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    grid_ratio, grid_advantage = np.meshgrid(np.linspace(0.5, 1.5, 20), np.linspace(-3.0, 3.0, 13))
    ratio = np.concatenate([1.0 + 0.1 * rng.standard_normal(64), grid_ratio.ravel()]).astype(np.float32)
    advantage = np.concatenate([rng.standard_normal(64), grid_advantage.ravel()]).astype(np.float32)
    return ratio, advantage


def probe(fn: Callable[..., Any]) -> list[np.ndarray]:
    """Call the drift and its gradient on random inputs (ratio ~ N(1, 0.1), A ~ N(0, 1)) and on a grid (ratio
    0.5..1.5 by advantage -3..3, never exactly 1); returns the values and gradients: its behaviour."""
    ratio, advantage = _probe_inputs()
    out, grad = _drift_and_grad(fn, ratio, advantage)
    if not bool(np.all(np.isfinite(out))) or not bool(np.all(np.isfinite(grad))):
        raise CandidateError("drift returned NaN or Inf (or a NaN gradient) on ratio ~ N(1, 0.1), A ~ N(0, 1)")
    return [out, grad]


def check_rules(fn: Callable[..., Any]) -> None:
    """The rules the target states, on a grid and at ratio = 1: the drift is non-negative, and zero with a zero
    gradient at ratio = 1. The error names the rule and where it broke (the proposer is told)."""
    grid_ratio, grid_advantage = np.meshgrid(np.linspace(0.5, 1.5, 21), np.linspace(-3.0, 3.0, 13))
    ratio, advantage = grid_ratio.ravel().astype(np.float32), grid_advantage.ravel().astype(np.float32)
    out, grad = _drift_and_grad(fn, ratio, advantage)
    tolerance = RULE_TOLERANCE * np.maximum(1.0, np.abs(advantage))
    at_one = ratio == 1.0
    broken = [
        ("the drift should be non-negative", out < -tolerance, out),
        ("the drift should be zero at ratio = 1", at_one & ~(np.abs(out) <= tolerance), out),
        ("the gradient of the drift with respect to ratio should be zero at ratio = 1",
         at_one & ~(np.abs(grad) <= tolerance), grad),
    ]
    for rule, where, values in broken:
        if where.any():
            i = int(np.argmax(where))
            raise CandidateError(f"the drift breaks a rule of the target: {rule} (at ratio {ratio[i]:.3g}, "
                                 f"advantage {advantage[i]:.3g} it gives {values[i]:.4g})")


def check_invariance(fn: Callable[..., Any], sizes: dict[str, int]) -> None:
    """Per element: the drift (and its gradient) of a sample is the same whether it is called with the probe's
    samples (what the fingerprint is hashed from) or in a training minibatch (`sizes["m"]` of them, drawn with
    repeats, in any order)."""
    rng = np.random.default_rng(1)
    ratio, advantage = _probe_inputs()
    pool = ratio.size
    cotangent = rng.standard_normal(pool).astype(np.float32)
    index = rng.integers(0, pool, size=sizes["m"])
    small = _drift_and_grad(fn, ratio, advantage, cotangent)
    large = _drift_and_grad(fn, ratio[index], advantage[index], cotangent[index])
    for what, few, many in zip(("drift", "gradient of the drift"), small, large, strict=True):
        expected = few[index]
        scale = 1e-5 * max(1.0, float(np.max(np.abs(few))))
        if many.shape != expected.shape or not np.allclose(many, expected, rtol=1e-4, atol=scale):
            raise CandidateError(
                f"the {what} of a sample depends on the other samples in the call (called with {pool} samples "
                f"and with {sizes['m']}, the training minibatch, it differs); compute it per sample")


GRADIENT_AGREEMENT = 0.95  # the share of samples where the gradient must match finite differences (kinks aside)


def check_gradient(fn: Callable[..., Any]) -> None:
    """The gradient the training loop uses is the derivative of the drift: it matches central finite differences
    of the drift itself at most samples (a few may sit on a kink)."""
    rng = np.random.default_rng(2)
    ratio = np.exp(0.2 * rng.standard_normal(256)).astype(np.float32)
    advantage, cotangent = (rng.standard_normal(256).astype(np.float32) for _ in range(2))
    step = np.float32(1e-3)
    _, vjp = _drift_and_grad(fn, ratio, advantage, cotangent)
    up, _ = _drift_and_grad(fn, ratio + step, advantage, cotangent)
    down, _ = _drift_and_grad(fn, ratio - step, advantage, cotangent)
    expected = cotangent * (up.astype(np.float64) - down) / (2.0 * step)
    tolerance = 0.02 * np.abs(expected) + 2e-3 * np.abs(cotangent) * (1.0 + np.abs(advantage))
    agree = np.abs(vjp - expected) <= tolerance
    if agree.mean() < GRADIENT_AGREEMENT:
        i = int(np.argmin(agree))
        raise CandidateError(
            f"the gradient of the drift is not the derivative of the drift (at ratio {ratio[i]:.3g}, advantage "
            f"{advantage[i]:.3g} it is {vjp[i] / cotangent[i]:.4g}; finite differences give "
            f"{expected[i] / cotangent[i]:.4g}, at {1 - agree.mean():.0%} of the samples)")


def _lanes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """drift over a leading lane axis: ratio, advantage [lanes, m], epsilon shared."""
    def one(ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(fn(ratio, advantage, epsilon), jnp.float32), ratio.shape)

    return lambda ratio, advantage, epsilon: (jax.vmap(one, in_axes=(0, 0, None))(ratio, advantage, epsilon),)


def _lanes_vjp(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The gradient of the drift with respect to ratio, pulled back from `cotangent` (what PPO's grad needs)."""
    def one(ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array, cotangent: jax.Array) -> jax.Array:
        def drift_of_ratio(r: jax.Array) -> jax.Array:
            return jnp.broadcast_to(jnp.asarray(fn(r, advantage, epsilon), jnp.float32), r.shape)

        return jax.vjp(drift_of_ratio, ratio)[1](cotangent)[0]

    return lambda r, a, e, g: (jax.vmap(one, in_axes=(0, 0, None, 0))(r, a, e, g),)


def assemble(calls: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The drift for PPO's loss: the exported primal, differentiated through the exported VJP."""
    @jax.custom_vjp
    def drift(ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array) -> jax.Array:
        return calls["drift"](ratio, advantage, jnp.asarray(epsilon, jnp.float32))[0]

    def forward(ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array) -> tuple[jax.Array, tuple]:
        return drift(ratio, advantage, epsilon), (ratio, advantage, epsilon)

    def backward(saved: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        ratio, advantage, epsilon = saved
        grad_ratio = calls["drift_vjp"](ratio, advantage, jnp.asarray(epsilon, jnp.float32), cotangent)[0]
        return grad_ratio, jnp.zeros_like(advantage), jnp.zeros_like(epsilon)

    drift.defvjp(forward, backward)
    return drift


_M = ArgSpec(("m",))
_SHARED = ArgSpec((), lane=False)

MODULES = (
    ModuleSpec("drift", args=(_M, _M, _SHARED), results=(_M,), build=_lanes),
    ModuleSpec("drift_vjp", args=(_M, _M, _SHARED, _M), results=(_M,), build=_lanes_vjp),
)
