"""An example candidate for the `open` target: Adam whose step shrinks over each update's epochs, plus a little
exploration noise that, under OPEN's protocol, reaches the actor's tensors only.

It reads the inputs as the `open` card defines them: `batch_proportion` is the epoch's position (0 in the first
epoch, 1 in the last) and `noise` is zero on the critic's tensors, so the critic steps as plain Adam.

    discovery evaluate --target open --code examples/open_noisy_adam.py --env CartPole-v1 --profile smoke
"""

import jax.numpy as jnp


def update(grad, param, state, momenta, iteration, progress, layer_proportion, batch_proportion, dormancy, noise,
           lr):
    m, v, slot2, slot3 = state
    b1, b2, eps = 0.9, 0.999, 1e-5
    m = b1 * m + (1.0 - b1) * grad
    v = b2 * v + (1.0 - b2) * grad * grad
    t = iteration + 1.0
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    later_epochs_smaller = 1.0 - 0.3 * batch_proportion
    exploration = 0.01 * lr * (1.0 - progress) * noise
    return -lr * later_epochs_smaller * m_hat / (jnp.sqrt(v_hat) + eps) + exploration, (m, v, slot2, slot3)
