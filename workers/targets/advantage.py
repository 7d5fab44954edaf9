"""Advantage: a learned advantage estimator that replaces GAE in PPO.

Called once per rollout on time-major arrays; the value targets are advantages + values. This is the
target's card (JAX-free); its probe, checks and module are in `workers.targets.kernels.advantage`.
"""

from __future__ import annotations

from workers.targets.base import Target, TargetInput

WARM_START = '''import jax
import jax.numpy as jnp


def advantages(rewards, values, dones, last_value, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016)."""
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    not_done = 1.0 - dones
    deltas = rewards + gamma * next_values * not_done - values

    def backward(gae, step):
        delta, nd = step
        gae = delta + gamma * lam * nd * gae
        return gae, gae

    _, adv = jax.lax.scan(backward, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
    return adv
'''


TARGET = Target(
    name="advantage",
    component="advantage estimator for reinforcement learning (it replaces GAE in PPO)",
    function_name="advantages",
    parameters=("rewards", "values", "dones", "last_value", "gamma", "lam"),
    scalar_inputs=frozenset({"gamma", "lam"}),
    summary=(
        "An advantage estimator used instead of GAE in PPO. It turns one rollout of rewards and value "
        "estimates into an advantage per step; the critic's targets are advantages + values."
    ),
    inputs=(
        TargetInput("rewards", "float array [T, N]: reward after step t in each of N parallel environments."),
        TargetInput("values", "float array [T, N]: the critic's value estimate of the state at step t."),
        TargetInput("dones", "float array [T, N]: 1.0 where the episode ended after step t, else 0.0."),
        TargetInput("last_value", "float array [N]: the value estimate of the state after the last step."),
        TargetInput("gamma", "a float, the discount factor (0.99)."),
        TargetInput("lam", "a float, GAE's lambda (0.95); use it or ignore it."),
    ),
    returns="a float array [T, N]: the advantage of each step",
    rules=(
        "do not bootstrap across an episode boundary (where dones is 1)",
        "the result must have shape [T, N] and be finite",
        "use only jax, jax.numpy, jax.nn, jax.lax, math and functools; the function is traced by JAX",
    ),
    warm_start=WARM_START,
    default_train_envs=("CartPole-v1",),
    default_test_envs=("Acrobot-v1",),
    kernel="workers.targets.kernels.advantage",
    plugin_field="advantages",
)
