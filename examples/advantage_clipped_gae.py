"""An example candidate for the `advantage` target: GAE with a shorter horizon and clipped TD errors.

    discovery evaluate --target advantage --code examples/advantage_clipped_gae.py --env CartPole-v1 --profile smoke
"""

import jax
import jax.numpy as jnp


def advantages(rewards, values, dones, last_value, gamma, lam):
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    not_done = 1.0 - dones
    deltas = jnp.clip(rewards + gamma * next_values * not_done - values, -10.0, 10.0)
    trace = 0.8

    def backward(gae, step):
        delta, nd = step
        gae = delta + gamma * trace * nd * gae
        return gae, gae

    _, adv = jax.lax.scan(backward, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
    return adv
