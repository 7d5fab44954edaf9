"""An example candidate for the `lpo` target: a smooth, symmetric trust region instead of PPO's clip.

The penalty grows with a softplus once the squared distance of the ratio from 1 passes epsilon², scaled
by |advantage|, and is shifted so that it is zero, with a zero gradient, at ratio = 1 (the target's rules).

    discovery evaluate --target lpo --code examples/lpo_smooth_drift.py --env CartPole-v1 --profile smoke
"""

import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    sharpness = 200.0
    distance = jnp.square(ratio - 1.0)
    threshold = epsilon * epsilon
    penalty = jax.nn.softplus(sharpness * (distance - threshold)) - jax.nn.softplus(-sharpness * threshold)
    return jnp.abs(advantage) * penalty / sharpness
