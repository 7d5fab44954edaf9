"""The LPO drift as a small network (the paper's MetaDrift, ES-LPO): a residual on PPO's clip.

    x     = [r - 1, (r - 1)^2, log r, (log r)^2,  and the same four times A]       (8 features)
    net   = tanh(x @ W1) @ W2           W1: [8, 128], W2: [128, 1], no biases      (1,152 parameters)
    drift = relu(net(x) - 1e-4 + relu(ppo_clip_drift(r, A, epsilon)))

`A` is the advantage as PPO's loss hands it to a drift (normalised per minibatch) and `ppo_clip_drift` is the
lpo target's warm start itself (`workers.targets.lpo.WARM_START`, loaded as the trainer loads it), so a zero
network is PPO's drift shifted down by the offset: `relu(ppo - 1e-4)`, which differs from PPO's by at most 1e-4
and has PPO's gradient wherever PPO's drift exceeds 1e-4.

Why the 1e-4 offset: with no biases the network is exactly 0 at r = 1 (every feature is 0 there), but its slope
in r is not (the r - 1 and log r features are linear in r), so `relu(net)` alone would be a drift with a
gradient at r = 1, breaking the target's rule. The offset is a dead zone: wherever the network's output (plus
PPO's drift) is below 1e-4, in particular at and around r = 1, the drift is exactly 0 and so is its gradient.

The parameters are one flat float32 vector in the paper's layout (W1 row-major, then W2, as
`jax.flatten_util.ravel_pytree` lays out the paper's flax parameters), validated before they reach JAX
(`workers.trainer.parameters.validate_parameters`). This is project code: nothing untrusted runs here, only
numbers come in.

The hidden width is 128 (ES's network) unless a caller names another: a distilled student
(`workers.targets.kernels.lpo_distill`) is the same layout at a width of its own, (8 + 1) * width parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp

from workers.targets import load_function, lpo

FEATURES = 8
HIDDEN = 128
PARAMETER_COUNT = FEATURES * HIDDEN + HIDDEN  # 1,152
OFFSET = 1e-4  # the dead zone: a drift below it is 0, with a zero gradient (see the module's docstring)


@cache
def ppo_clip_drift() -> Callable[..., Any]:
    """PPO's clip as a drift: the lpo target's warm start, from the project's own source."""
    return load_function(lpo.WARM_START, lpo.TARGET)


def parameter_count(width: int = HIDDEN) -> int:
    """How many parameters the network has at this hidden width: W1 [8, width] and W2 [width]."""
    return (FEATURES + 1) * width


def unflatten(vector: jax.Array, width: int = HIDDEN) -> tuple[jax.Array, jax.Array]:
    """(W1 [8, width], W2 [width]) from the flat vector of exactly (8 + 1) * width values (1,152 at 128)."""
    count = parameter_count(width)
    if jnp.shape(vector) != (count,):
        raise ValueError(f"the network takes a flat vector of {count} parameters, got shape {jnp.shape(vector)}")
    flat = jnp.asarray(vector, jnp.float32)
    return flat[: FEATURES * width].reshape(FEATURES, width), flat[FEATURES * width:]


def features(ratio: jax.Array, advantage: jax.Array) -> jax.Array:
    """[..., 8]: r - 1, (r - 1)^2, log r, (log r)^2, then each of them times the advantage."""
    shifted, log_ratio = ratio - 1.0, jnp.log(ratio)
    base = jnp.stack([shifted, shifted * shifted, log_ratio, log_ratio * log_ratio], axis=-1)
    return jnp.concatenate([base, base * advantage[..., None]], axis=-1)


def network(vector: jax.Array, ratio: jax.Array, advantage: jax.Array, width: int = HIDDEN) -> jax.Array:
    """The network's output per sample (the shape of ratio): tanh(x @ W1) @ W2."""
    hidden_kernel, output_kernel = unflatten(vector, width)
    x = features(jnp.asarray(ratio, jnp.float32), jnp.asarray(advantage, jnp.float32))
    return jnp.tanh(x @ hidden_kernel) @ output_kernel


def network_drift(vector: jax.Array, ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array,
                  width: int = HIDDEN) -> jax.Array:
    """relu(net(x) - 1e-4 + relu(ppo_clip_drift(ratio, advantage, epsilon))), per sample."""
    ppo = jax.nn.relu(ppo_clip_drift()(ratio, advantage, epsilon))
    return jax.nn.relu(network(vector, ratio, advantage, width) - OFFSET + ppo)


def make_drift(vector: jax.Array, width: int = HIDDEN) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """The drift with these parameters, with the lpo target's signature drift(ratio, advantage, epsilon): what
    PPO's `Plugins.drift` takes. (For a population on the lane axis, vmap `network_drift` over the vectors.)"""
    unflatten(vector, width)  # the shape is checked once, here, not at the first trace inside the training program

    def drift(ratio: jax.Array, advantage: jax.Array, epsilon: jax.Array) -> jax.Array:
        return network_drift(vector, ratio, advantage, epsilon, width)

    return drift


make_plugin = make_drift  # what the trainer calls for one lane's vector (`workers.trainer.lanes.network_lane_plugins`)
