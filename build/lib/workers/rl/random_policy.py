"""A uniformly random policy: the score's zero point, and the ceiling of bare environment throughput."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from workers.rl.envs import PPOConfig
from workers.rl.ppo import make_env


def make_random_rollout(env_name: str, num_envs: int, num_steps: int):
    """A jitted rollout of uniformly random actions: `f(key) -> (return_sum, episode_count)`.

    Also the ceiling of environment throughput that bench/rl_throughput.py compares PPO against.
    """
    env, env_params, _ = make_env(env_name)
    space = env.action_space(env_params)

    def rollout(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key, reset_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs), env_params)

        def step(carry: tuple, _: None) -> tuple[tuple, None]:
            state, ep_ret, key, ret_sum, ret_n = carry
            key, k_act, k_step = jax.random.split(key, 3)
            actions = jax.vmap(space.sample)(jax.random.split(k_act, num_envs))
            _, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, num_envs), state, actions, env_params
            )
            done = jnp.logical_or(terminated, truncated)
            ep_ret = ep_ret + reward
            ret_sum = ret_sum + jnp.sum(jnp.where(done, ep_ret, 0.0))
            ret_n = ret_n + jnp.sum(done)
            return (state, jnp.where(done, 0.0, ep_ret), key, ret_sum, ret_n), None

        init = (state, jnp.zeros(num_envs), key, jnp.float32(0.0), jnp.int32(0))
        (_, _, _, ret_sum, ret_n), _ = jax.lax.scan(step, init, None, num_steps)
        return ret_sum, ret_n

    return jax.jit(rollout)


def random_policy_return(env_name: str, config: PPOConfig, seeds: list[int]) -> float:
    """Mean episode return of a uniformly random policy over the given seeds."""
    rollout = make_random_rollout(env_name, config.num_envs, max(config.num_steps * 8, 2048))
    ret_sum, ret_n = jax.vmap(rollout)(jnp.stack([jax.random.PRNGKey(s) for s in seeds]))
    n = int(np.sum(ret_n))
    return float(np.sum(ret_sum) / n) if n else 0.0
