"""A uniformly random policy: the score's zero point, and the ceiling of bare environment throughput."""

from __future__ import annotations

from collections.abc import Callable

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


def make_random_episodes(env_name: str, num_envs: int) -> Callable[[jax.Array], jax.Array]:
    """A jitted function `f(key) -> mean return` of one whole episode per environment, acting at random.

    Every environment plays exactly its first episode to the end (up to the environment's step limit),
    so long episodes count as much as short ones (a rollout of fixed length would only see the episodes
    that end inside it: none of Freeway's 2,500 steps, mostly the short ones of CartPole).
    """
    env, env_params, _ = make_env(env_name)
    space = env.action_space(env_params)
    limit = int(env_params.max_steps_in_episode)

    def episodes(key: jax.Array) -> jax.Array:
        key, reset_key = jax.random.split(key)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs), env_params)

        def unfinished(carry: tuple) -> jax.Array:
            t, _, _, _, finished = carry
            return jnp.logical_and(t < limit + 1, jnp.logical_not(jnp.all(finished)))

        def step(carry: tuple) -> tuple:
            t, state, key, ep_ret, finished = carry
            key, k_act, k_step = jax.random.split(key, 3)
            actions = jax.vmap(space.sample)(jax.random.split(k_act, num_envs))
            _, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, num_envs), state, actions, env_params
            )
            ep_ret = ep_ret + jnp.where(finished, 0.0, reward)
            finished = jnp.logical_or(finished, jnp.logical_or(terminated, truncated))
            return t + 1, state, key, ep_ret, finished

        init = (jnp.int32(0), state, key, jnp.zeros(num_envs), jnp.zeros(num_envs, bool))
        *_, ep_ret, _ = jax.lax.while_loop(unfinished, step, init)
        return jnp.mean(ep_ret)

    return jax.jit(episodes)


def random_policy_returns(env_name: str, config: PPOConfig, seeds: list[int]) -> list[float]:
    """Per seed, the mean return of whole episodes of a uniformly random policy (one per environment)."""
    episodes = make_random_episodes(env_name, max(config.num_envs, 16))
    means = jax.vmap(episodes)(jnp.stack([jax.random.PRNGKey(s) for s in seeds]))
    return [float(x) for x in np.asarray(means)]
