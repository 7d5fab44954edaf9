"""PPO in the PureJaxRL style for gymnax 1.0's six-value step API, with pluggable parts.

One update of `train` reads as PPO: `rollout` collects `num_steps` steps of every environment with the
current policy, `advantage_batch` estimates advantages and value targets (the advantage plug-in) and
flattens the data, then `update_epoch` shuffles it into minibatches `update_epochs` times, and
`minibatch_step` takes one gradient step of `ppo_loss` (the drift plug-in) through the optimiser rule
(the update plug-in, fed by `workers.rl.optimizer_inputs`). Each loop's carry is a NamedTuple.

`make_train` returns `train(params, key, lr)`: one whole training run as a pure function.
`make_lanes_train` vmaps it over flat *lanes* and jits it: one lane per candidate × learning rate ×
seed, laid out candidate-major (`lane_inputs`), so one compile serves a whole batch of candidates on one
environment; with `per_lane`, a slot is filled from each lane's own data (an ES population's parameter
vectors, `workers.trainer.lanes.network_lane_plugins`), so a whole population trains in one program compiled
once. The plug-ins (`workers.rl.plugins.Plugins`, one slot per target) are JAX functions traced into the loop:
the project's own warm starts, a candidate's verified exported modules (`workers.trainer.lanes`), or a project
network at a lane's parameter vector, with no Python callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from workers.results import DIAGNOSTICS
from workers.rl import networks
from workers.rl.envs import PPOConfig
from workers.rl.optimizer_inputs import (
    NOISE_STREAM,
    StepInputs,
    batch_proportion,
    clip_gradients,
    init_opt_state,
    optimizer_step,
    step_noise_key,
)
from workers.rl.plugins import Plugins


class EnvInfo(NamedTuple):
    obs_dim: int
    action_dim: int
    continuous: bool


class TrainOutput(NamedTuple):
    episode_return_sum: jax.Array  # [num_updates]: sum of returns of episodes finished in each update
    episode_count: jax.Array  # [num_updates]: how many episodes finished in each update
    finite: jax.Array  # scalar bool: parameters and losses stayed finite
    diagnostics: jax.Array  # [num_updates, len(results.DIAGNOSTICS)]: the loss parts, averaged over minibatches


@dataclass(frozen=True)
class Setup:
    """What every step of one training run shares, fixed before tracing (never a JAX argument)."""

    env: Any
    env_params: Any
    info: EnvInfo
    config: PPOConfig
    plugins: Plugins
    action_low: jax.Array | None  # a continuous action space's bounds; None for discrete actions
    action_high: jax.Array | None


def make_env(env_name: str) -> tuple[Any, Any, EnvInfo]:
    env, env_params = gymnax.make(env_name)
    action_space = env.action_space(env_params)
    continuous = isinstance(action_space, spaces.Box)
    action_dim = int(action_space.shape[0]) if continuous else int(action_space.n)
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    return env, env_params, EnvInfo(obs_dim, action_dim, continuous)


def make_setup(env_name: str, config: PPOConfig, plugins: Plugins) -> Setup:
    env, env_params, info = make_env(env_name)
    low = high = None
    if info.continuous:
        space = env.action_space(env_params)
        low, high = jnp.asarray(space.low), jnp.asarray(space.high)
    return Setup(env, env_params, info, config, plugins, low, high)


def init_params(env_name: str, config: PPOConfig, seeds: list[int]) -> networks.Params:
    """Parameters for every seed, stacked on a leading axis, built outside any JAX graph."""
    _, _, info = make_env(env_name)
    return networks.stack_params(
        [networks.init_params(s, info.obs_dim, info.action_dim, config.hidden, info.continuous) for s in seeds]
    )


class Learner(NamedTuple):
    """What the PPO updates carry: the network, the optimiser's state, the step count, and health."""

    params: Any
    opt_state: Any  # an OptState per parameter tensor (`workers.rl.optimizer_inputs`)
    iteration: jax.Array  # float: gradient steps made so far
    finite: jax.Array  # every loss so far was finite


class Runner(NamedTuple):
    """What the environment steps carry: the vectorised environments and the random key."""

    env_state: Any
    obs: jax.Array
    ep_ret: jax.Array  # [num_envs]: the return so far of each environment's current episode
    key: jax.Array


class TrainCarry(NamedTuple):
    """What one update hands the next."""

    learner: Learner
    runner: Runner


class Transition(NamedTuple):
    """One environment step of every environment ([num_envs] leading; [num_steps, num_envs] once scanned)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array


class Finished(NamedTuple):
    """The episodes that ended at one environment step, over every environment ([num_steps] once scanned)."""

    return_sum: jax.Array
    count: jax.Array


class Trajectory(NamedTuple):
    """One rollout: its transitions, the critic's value of the last observation, the episodes that ended."""

    steps: Transition  # [num_steps, num_envs]
    last_value: jax.Array  # [num_envs]
    finished: Finished  # [num_steps]


class Batch(NamedTuple):
    """The training data of one update (flattened over steps and environments), or one minibatch of it."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # under the policy that collected the data
    value: jax.Array  # the critic's value when collected
    advantage: jax.Array
    target: jax.Array  # the value target: advantage + value


class LossParts(NamedTuple):
    """PPO's loss on a minibatch, part by part (the trainer reports all but `total`)."""

    total: jax.Array  # what the gradient step minimises: actor + vf_coef * value - ent_coef * entropy
    actor_loss: jax.Array  # -mean(ratio * A - relu(drift)): the clipped surrogate with PPO's drift
    value_loss: jax.Array  # the clipped value loss
    entropy: jax.Array  # the policy's mean entropy
    approx_kl: jax.Array  # the k3 estimator of KL(old || new)
    clip_fraction: jax.Array  # the fraction of samples whose ratio is outside 1 ± clip_eps

    def diagnostics(self) -> jax.Array:
        """The reported parts, stacked in `workers.results.DIAGNOSTICS`'s order."""
        return jnp.stack([getattr(self, name) for name in DIAGNOSTICS])


class UpdateSchedule(NamedTuple):
    """Where one update stands in training: what the optimiser's inputs read besides the minibatch."""

    progress: jax.Array  # float in [0, 1): the training proportion
    lr: jax.Array  # the learning rate, annealed
    noise_root: jax.Array  # the run's key for the optimiser's noise


class EpochCarry(NamedTuple):
    """What one epoch over the update's data hands the next."""

    learner: Learner
    key: jax.Array


class Minibatch(NamedTuple):
    batch: Batch
    index: jax.Array  # its position within the epoch


class UpdateLog(NamedTuple):
    """What one update reports ([num_updates] leading once scanned)."""

    return_sum: jax.Array  # the returns of the episodes that ended during its rollout, summed
    episodes: jax.Array  # how many ended
    diagnostics: jax.Array  # the loss parts, averaged over its minibatches


def ppo_loss(log_prob: jax.Array, entropy: jax.Array, value: jax.Array, batch: Batch,
             drift: Callable[..., Any], config: PPOConfig) -> LossParts:
    """PPO's loss given the new policy's log-probabilities and entropies and the critic's values on `batch`.

    The advantages are normalised over the minibatch; the actor's objective is LPO's `ratio * A - relu(drift)`
    (PPO's clip when `drift` is the warm start); the value loss is clipped around the collected values.
    """
    ratio = jnp.exp(log_prob - batch.log_prob)
    adv = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    actor_loss = -jnp.mean(ratio * adv - jax.nn.relu(drift(ratio, adv, config.clip_eps)))
    value_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
    value_loss = 0.5 * jnp.mean(jnp.maximum((value - batch.target) ** 2, (value_clipped - batch.target) ** 2))
    mean_entropy = jnp.mean(entropy)
    total = actor_loss + config.vf_coef * value_loss - config.ent_coef * mean_entropy
    approx_kl = jnp.mean((ratio - 1.0) - (log_prob - batch.log_prob))
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > config.clip_eps).astype(jnp.float32))
    return LossParts(total, actor_loss, value_loss, mean_entropy, approx_kl, clip_fraction)


def loss_on_batch(setup: Setup, params: Any, batch: Batch) -> tuple[jax.Array, LossParts]:
    """`ppo_loss` as a function of the network's parameters (for `jax.grad`, with the parts as aux)."""
    out, value = networks.apply(params, batch.obs, setup.config.activation)
    log_prob, entropy = networks.log_prob_entropy(params, out, batch.action, setup.info.continuous)
    parts = ppo_loss(log_prob, entropy, value, batch, setup.plugins.drift, setup.config)
    return parts.total, parts


def env_step(setup: Setup, params: Any, runner: Runner) -> tuple[Runner, tuple[Transition, Finished]]:
    """Every environment takes one step with an action sampled from the policy."""
    n_envs = setup.config.num_envs
    key, k_act, k_step = jax.random.split(runner.key, 3)
    flat_obs = runner.obs.reshape(n_envs, -1).astype(jnp.float32)
    out, value = networks.apply(params, flat_obs, setup.config.activation)
    action = networks.sample_action(params, out, k_act, setup.info.continuous)
    log_prob, _ = networks.log_prob_entropy(params, out, action, setup.info.continuous)
    env_action = jnp.clip(action, setup.action_low, setup.action_high) if setup.info.continuous else action
    obs, env_state, reward, terminated, truncated, _ = jax.vmap(
        setup.env.step, in_axes=(0, 0, 0, None)
    )(jax.random.split(k_step, n_envs), runner.env_state, env_action, setup.env_params)
    done = jnp.logical_or(terminated, truncated)
    reward = reward.astype(jnp.float32)
    ep_ret = runner.ep_ret + reward
    finished = Finished(jnp.sum(jnp.where(done, ep_ret, 0.0)), jnp.sum(done))
    step = Transition(flat_obs, action, log_prob, value, reward, done.astype(jnp.float32))
    return Runner(env_state, obs, jnp.where(done, 0.0, ep_ret), key), (step, finished)


def rollout(setup: Setup, params: Any, runner: Runner) -> tuple[Runner, Trajectory]:
    """`num_steps` steps of every environment with the policy `params`."""
    def step(runner: Runner, _: None) -> tuple[Runner, tuple[Transition, Finished]]:
        return env_step(setup, params, runner)

    runner, (steps, finished) = jax.lax.scan(step, runner, None, setup.config.num_steps)
    last_obs = runner.obs.reshape(setup.config.num_envs, -1).astype(jnp.float32)
    _, last_value = networks.apply(params, last_obs, setup.config.activation)
    return runner, Trajectory(steps, last_value, finished)


def advantage_batch(setup: Setup, trajectory: Trajectory) -> Batch:
    """The advantages (the advantage plug-in) and value targets of a rollout, flattened into one batch."""
    config, steps = setup.config, trajectory.steps
    adv = setup.plugins.advantages(steps.reward, steps.value, steps.done, trajectory.last_value, config.gamma,
                                   config.gae_lambda)
    batch_size = config.num_envs * config.num_steps
    return jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                        Batch(steps.obs, steps.action, steps.log_prob, steps.value, adv, adv + steps.value))


def minibatch_step(setup: Setup, schedule: UpdateSchedule, epoch_idx: jax.Array, learner: Learner,
                   minibatch: Minibatch) -> tuple[Learner, jax.Array]:
    """One gradient step of `ppo_loss` through the optimiser rule; returns the minibatch's loss parts."""
    config, mb = setup.config, minibatch.batch
    grads, parts = jax.grad(lambda p: loss_on_batch(setup, p, mb), has_aux=True)(learner.params)
    grads = clip_gradients(grads, config.max_grad_norm, config.training)
    step = StepInputs(learner.iteration, schedule.progress,
                      batch_proportion(epoch_idx, minibatch.index, config.update_epochs, config.num_minibatches,
                                       config.training),
                      schedule.lr, step_noise_key(schedule.noise_root, learner.iteration))
    params, opt_state = optimizer_step(setup.plugins.update, learner.params, grads, learner.opt_state, mb.obs,
                                       config.activation, step, config.training)
    learner = Learner(params, opt_state, learner.iteration + 1.0, learner.finite & jnp.isfinite(parts.total))
    return learner, parts.diagnostics()


def update_epoch(setup: Setup, schedule: UpdateSchedule, batch: Batch, carry: EpochCarry, epoch_idx: jax.Array
                 ) -> tuple[EpochCarry, jax.Array]:
    """One pass over the update's data, shuffled into `num_minibatches` minibatches."""
    n_mb = setup.config.num_minibatches
    batch_size = setup.config.num_envs * setup.config.num_steps
    key, k_perm = jax.random.split(carry.key)
    perm = jax.random.permutation(k_perm, batch_size)
    minibatches = jax.tree.map(lambda x: x[perm].reshape((n_mb, batch_size // n_mb) + x.shape[1:]), batch)

    def step(learner: Learner, minibatch: Minibatch) -> tuple[Learner, jax.Array]:
        return minibatch_step(setup, schedule, epoch_idx, learner, minibatch)

    learner, parts = jax.lax.scan(step, carry.learner, Minibatch(minibatches, jnp.arange(n_mb)))
    return EpochCarry(learner, key), parts


def update_step(setup: Setup, lr: jax.Array, noise_root: jax.Array, carry: TrainCarry, update_idx: jax.Array
                ) -> tuple[TrainCarry, UpdateLog]:
    """One PPO update: a rollout, its advantages, then `update_epochs` epochs of minibatch steps."""
    config = setup.config
    runner, trajectory = rollout(setup, carry.learner.params, carry.runner)
    batch = advantage_batch(setup, trajectory)
    progress = update_idx.astype(jnp.float32) / config.num_updates
    schedule = UpdateSchedule(progress, lr * (1.0 - progress) if config.anneal_lr else lr, noise_root)

    def epoch(epochs: EpochCarry, epoch_idx: jax.Array) -> tuple[EpochCarry, jax.Array]:
        return update_epoch(setup, schedule, batch, epochs, epoch_idx)

    epochs, parts = jax.lax.scan(epoch, EpochCarry(carry.learner, runner.key), jnp.arange(config.update_epochs))
    log = UpdateLog(jnp.sum(trajectory.finished.return_sum), jnp.sum(trajectory.finished.count),
                    jnp.mean(parts, axis=(0, 1)))
    return TrainCarry(epochs.learner, runner._replace(key=epochs.key)), log


def train(setup: Setup, params: Any, key: jax.Array, lr: jax.Array) -> TrainOutput:
    """One whole training run from `params`, with the run's `key` and learning rate `lr`."""
    noise_root = jax.random.fold_in(key, NOISE_STREAM)
    key, reset_key = jax.random.split(key)
    n_envs = setup.config.num_envs
    obs, env_state = jax.vmap(setup.env.reset, in_axes=(0, None))(jax.random.split(reset_key, n_envs),
                                                                   setup.env_params)
    learner = Learner(params, init_opt_state(params), jnp.float32(0.0), jnp.bool_(True))
    carry = TrainCarry(learner, Runner(env_state, obs, jnp.zeros(n_envs), key))

    def update(carry: TrainCarry, update_idx: jax.Array) -> tuple[TrainCarry, UpdateLog]:
        return update_step(setup, lr, noise_root, carry, update_idx)

    carry, log = jax.lax.scan(update, carry, jnp.arange(setup.config.num_updates))
    learner = carry.learner
    finite = learner.finite & _tree_finite(learner.params) & jnp.all(jnp.isfinite(log.return_sum))
    return TrainOutput(log.return_sum, log.episodes.astype(jnp.float32), finite, log.diagnostics)


def make_train(env_name: str, config: PPOConfig, plugins: Plugins) -> Callable[..., TrainOutput]:
    """`train(params, key, lr) -> TrainOutput` for one lane on `env_name`."""
    setup = make_setup(env_name, config, plugins)

    def train_one(params: Any, key: jax.Array, lr: jax.Array) -> TrainOutput:
        return train(setup, params, key, lr)

    return train_one


# Fills slots from one lane's own data (inside the lane vmap): `per_lane(plugins, data_of_this_lane) -> Plugins`.
LanePlugins = Callable[[Plugins, jax.Array], Plugins]


def make_lanes_train(env_name: str, config: PPOConfig, plugins: Plugins, per_lane: LanePlugins | None = None
                     ) -> Callable[..., TrainOutput]:
    """`f(params[lane], keys[lane], lrs[lane]) -> TrainOutput` with a leading lane axis, jitted.

    With `per_lane`, `f(params[lane], keys[lane], lrs[lane], data[lane])`: each lane's plug-ins are
    `per_lane(plugins, data_of_this_lane)`, built inside the one vmap, so lanes that differ only in their data (an
    ES population's parameter vectors) train in one program, compiled once for every value of the data. Without
    it, the program is exactly the plain one (code candidates and the warm start are untouched)."""
    if per_lane is None:
        return jax.jit(jax.vmap(make_train(env_name, config, plugins)))
    setup = make_setup(env_name, config, plugins)

    def train_one(params: Any, key: jax.Array, lr: jax.Array, data: jax.Array) -> TrainOutput:
        return train(replace(setup, plugins=per_lane(setup.plugins, data)), params, key, lr)

    return jax.jit(jax.vmap(train_one))


def lane_inputs(env_name: str, config: PPOConfig, candidates: int, learning_rates: list[float], seeds: list[int]
                ) -> tuple[networks.Params, jax.Array, jax.Array]:
    """Parameters, keys and learning rates per lane, candidate-major: (candidate, learning rate, seed)."""
    per_seed = init_params(env_name, config, seeds)
    repeats = candidates * len(learning_rates)
    params = jax.tree.map(lambda x: jnp.tile(x, (repeats,) + (1,) * (x.ndim - 1)), per_seed)
    keys = jnp.tile(jnp.stack([jax.random.PRNGKey(s) for s in seeds]), (repeats, 1))
    lrs = jnp.tile(jnp.repeat(jnp.asarray(learning_rates, jnp.float32), len(seeds)), candidates)
    return params, keys, lrs


def _tree_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
