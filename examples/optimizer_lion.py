"""An example candidate for the `optimizer` target: Lion (Chen et al. 2023), the sign of an interpolated momentum.

Its first state slot keeps the momentum; the other three are passed on unused. Lion's steps are larger
than Adam's, so its step is a tenth of the tuned learning rate.

    discovery evaluate --target optimizer --code examples/optimizer_lion.py --env CartPole-v1 --profile smoke
"""

import jax.numpy as jnp


def update(grad, param, state, momenta, iteration, progress, layer_proportion, batch_proportion, dormancy, noise,
           lr):
    m, slot1, slot2, slot3 = state
    b1, b2 = 0.9, 0.99
    direction = jnp.sign(b1 * m + (1.0 - b1) * grad)
    m = b2 * m + (1.0 - b2) * grad
    return -0.1 * lr * direction, (m, slot1, slot2, slot3)
