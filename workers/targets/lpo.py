"""LPO: a learned drift function that replaces PPO's clip (Lu et al. 2022).

The actor objective is `mean(ratio * A - relu(drift(ratio, A, epsilon)))`. PPO's clipped objective is
exactly the drift `relu((ratio - clip(ratio, 1 - eps, 1 + eps)) * A)`, which is the warm start. This is
the target's card (JAX-free); its probe, rules and modules are in `workers.targets.kernels.lpo`.
"""

from __future__ import annotations

from workers.targets.base import Network, Reference, Target, TargetInput

WARM_START = '''import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    """PPO's clipped objective written as a drift: the part of ratio * advantage that clipping removes."""
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jax.nn.relu((ratio - clipped) * advantage)
'''


DPO = '''import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    """Discovered Policy Optimisation (Lu et al. 2022): a smooth drift, asymmetric in the advantage's sign."""
    alpha, beta = 2.0, 0.6
    positive = (ratio - 1.0) * advantage
    negative = jnp.log(ratio) * advantage
    return jnp.where(
        advantage >= 0.0,
        jax.nn.relu(positive - alpha * jnp.tanh(positive / alpha)),
        jax.nn.relu(negative - beta * jnp.tanh(negative / beta)),
    )
'''


NETWORK_SOURCE = '''import jax
import jax.numpy as jnp

FEATURES, OFFSET = 8, 1e-4  # (8 + 1) * width parameters: W1 [8, width] row-major, then W2 [width]


def drift(ratio, advantage, epsilon):
    """ES-LPO's drift: relu(net(x) - 1e-4 + relu(PPO's clip drift)), the network's weights in PARAMETERS."""
    weights = jnp.asarray(PARAMETERS, jnp.float32)
    units = len(PARAMETERS) // (FEATURES + 1)  # 128 for ES's network; a distilled student has a width of its own
    hidden, output = weights[: FEATURES * units].reshape(FEATURES, units), weights[FEATURES * units:]
    ratio, advantage = jnp.asarray(ratio, jnp.float32), jnp.asarray(advantage, jnp.float32)
    shifted, log_ratio = ratio - 1.0, jnp.log(ratio)
    base = jnp.stack([shifted, shifted * shifted, log_ratio, log_ratio * log_ratio], axis=-1)
    x = jnp.concatenate([base, base * advantage[..., None]], axis=-1)
    net = jnp.tanh(x @ hidden) @ output
    ppo = jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)) * advantage)
    return jax.nn.relu(net - OFFSET + ppo)
'''


TARGET = Target(
    name="lpo",
    component="drift function for Learned Policy Optimisation (it replaces PPO's clipping)",
    function_name="drift",
    parameters=("ratio", "advantage", "epsilon"),
    scalar_inputs=frozenset({"epsilon"}),
    summary=(
        "A drift function for Learned Policy Optimisation. PPO's actor loss becomes "
        "-(ratio * advantage - relu(drift(ratio, advantage, epsilon))).mean(): the drift is a penalty "
        "that keeps the new policy near the policy that collected the data."
    ),
    inputs=(
        TargetInput("ratio", "pi_new(a|s) / pi_old(a|s) per sample, an array of positive floats near 1."),
        TargetInput(
            "advantage",
            "GAE advantage per sample, same shape as ratio, normalised per minibatch (mean 0, std 1).",
        ),
        TargetInput("epsilon", "a float, PPO's clip range (0.2); use it or ignore it."),
    ),
    returns="an array with the shape of ratio: the penalty per sample",
    rules=(
        "the drift should be non-negative (the loss applies relu to it anyway)",
        "the drift should be zero at ratio = 1",
        "the gradient of the drift with respect to ratio should be zero at ratio = 1",
        "use only jax, jax.numpy, jax.nn, jax.lax, math and functools; the function is traced by JAX",
    ),
    warm_start=WARM_START,
    default_train_envs=("CartPole-v1",),
    default_test_envs=("Acrobot-v1",),
    kernel="workers.targets.kernels.lpo",
    plugin_field="drift",
    references=(
        Reference("DPO", "Discovered Policy Optimisation (Lu et al. 2022): for A >= 0, relu((r-1)A - "
                  "alpha tanh((r-1)A/alpha)); for A < 0, relu(log(r)A - beta tanh(log(r)A/beta)); alpha 2, beta 0.6",
                  DPO),
    ),
    network=Network(
        name="lpo_network", kernel="workers.targets.kernels.lpo_network", parameter_count=1152,
        description="the paper's MetaDrift (ES-LPO): Dense(128, no bias), tanh, Dense(1, no bias) on [r-1, (r-1)^2, "
                    "log r, (log r)^2 and each times A], a residual on PPO's clip: relu(net - 1e-4 + relu(ppo))",
        source=NETWORK_SOURCE, hidden=128, distill_kernel="workers.targets.kernels.lpo_distill"),
)
