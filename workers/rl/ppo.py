"""PPO in the PureJaxRL style for gymnax 1.0's six-value step API, with pluggable parts.

`make_train` returns `train(params, key, lr)`: one whole training run (rollouts, advantage estimation,
PPO epochs) as a pure function. `make_lanes_train` vmaps it over flat *lanes* and jits it: one lane per
candidate × learning rate × seed, laid out candidate-major (`lane_inputs`), so one compile serves a
whole batch of candidates on one environment. The three pluggable parts (drift, optimiser update
rule, advantage estimator) are JAX functions traced into the loop: the project's own warm starts, or
a candidate's verified exported modules (`workers.trainer.lanes`), with no Python callback.

The optimiser rule gets OPEN's inputs, computed here at every gradient step (`_apply_update`): gradient
momenta at six timescales (carried in `OptState` beside the rule's own state), the layer and batch
proportions, each neuron's dormancy on the minibatch (`layer_outputs`, `neuron_dormancy`) and standard
normal noise from the run's key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from workers.rl import networks
from workers.rl.envs import PPOConfig
from workers.targets.optimizer import MOMENTUM_BETAS, STATE_SLOTS


class Plugins(NamedTuple):
    drift: Callable[..., Any]  # lpo target
    update: Callable[..., Any]  # optimizer target
    advantages: Callable[..., Any]  # advantage target


class EnvInfo(NamedTuple):
    obs_dim: int
    action_dim: int
    continuous: bool


# The actor-critic's layers as `workers.rl.networks` names them (network + layer), input to output.
NETWORKS = ("actor", "critic")
LAYERS = ("_0", "_1", "_out")
NOISE_STREAM = 0x09E7  # folded into the run's key for the optimiser's noise; the other random streams are unchanged

class TrainOutput(NamedTuple):
    episode_return_sum: jax.Array  # [num_updates]: sum of returns of episodes finished in each update
    episode_count: jax.Array  # [num_updates]: how many episodes finished in each update
    finite: jax.Array  # scalar bool: parameters and losses stayed finite
    diagnostics: jax.Array  # [num_updates, len(results.DIAGNOSTICS)]: the loss parts, averaged over minibatches


def make_env(env_name: str) -> tuple[Any, Any, EnvInfo]:
    env, env_params = gymnax.make(env_name)
    action_space = env.action_space(env_params)
    continuous = isinstance(action_space, spaces.Box)
    action_dim = int(action_space.shape[0]) if continuous else int(action_space.n)
    obs_dim = int(np.prod(env.observation_space(env_params).shape))
    return env, env_params, EnvInfo(obs_dim, action_dim, continuous)


def init_params(env_name: str, config: PPOConfig, seeds: list[int]) -> networks.Params:
    """Parameters for every seed, stacked on a leading axis, built outside any JAX graph."""
    _, _, info = make_env(env_name)
    return networks.stack_params(
        [networks.init_params(s, info.obs_dim, info.action_dim, config.hidden, info.continuous) for s in seeds]
    )


class Learner(NamedTuple):
    """What the PPO updates carry: the network, the optimiser's state, the step count, and health."""

    params: Any
    opt_state: Any  # an OptState per parameter tensor
    iteration: jax.Array  # float: gradient steps made so far
    finite: jax.Array  # every loss so far was finite


class Rollout(NamedTuple):
    """What the environment steps carry: the vectorised environments and the random key."""

    env_state: Any
    obs: jax.Array
    ep_ret: jax.Array  # [num_envs]: the return so far of each environment's current episode
    key: jax.Array


class Transition(NamedTuple):
    """One environment step of every environment ([num_envs] leading; [num_steps, num_envs] once scanned)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array


class Batch(NamedTuple):
    """The training data of one update (flattened over steps and environments), or one minibatch of it."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # under the policy that collected the data
    value: jax.Array  # the critic's value when collected
    advantage: jax.Array
    target: jax.Array  # the value target: advantage + value


class OptState(NamedTuple):
    """What the training loop carries for one parameter tensor between optimiser steps."""

    slots: tuple[jax.Array, ...]  # the update rule's own state: STATE_SLOTS arrays shaped like the parameter
    momenta: jax.Array  # [len(MOMENTUM_BETAS), *shape]: moving averages of the gradient at OPEN's timescales


class StepInputs(NamedTuple):
    """The optimiser's inputs shared by every tensor at one gradient step."""

    iteration: jax.Array  # float: gradient steps made before this one
    progress: jax.Array  # float in [0, 1): the training proportion
    batch_proportion: jax.Array  # float in [0, 1]: position of this step within the update's epochs x minibatches
    lr: jax.Array  # the environment's learning rate, annealed
    noise_key: jax.Array  # this step's key for the rule's noise


def init_opt_state(params: Any) -> Any:
    """Zeros for the rule's state slots and the momenta, per parameter tensor."""
    return jax.tree.map(lambda p: OptState(tuple(jnp.zeros_like(p) for _ in range(STATE_SLOTS)),
                                           jnp.zeros((len(MOMENTUM_BETAS), *p.shape), p.dtype)), params)


def layer_outputs(params: Any, obs: jax.Array, activation: str) -> dict[str, jax.Array]:
    """Every dense layer's output on `obs` (`[batch, obs_dim]`), computed as `networks.apply` computes them: after
    the activation for the hidden layers, the raw output (logits or mean, value) for the output layers."""
    act = jnp.tanh if activation == "tanh" else jax.nn.relu
    outputs = {}
    for network in NETWORKS:
        x = obs
        for i, layer in enumerate(LAYERS):
            name = network + layer
            x = x @ params[name]["w"] + params[name]["b"]
            if i < len(LAYERS) - 1:
                x = act(x)
            outputs[name] = x
    return outputs


def neuron_dormancy(outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """ReDo's dormancy score per neuron: mean |activation| over the batch divided by the layer's mean of that.

    Non-negative, 1 on average over a layer's neurons, at most the layer's width; 0 for a dead neuron.
    """
    scores = {}
    for name, h in outputs.items():
        mean_abs = jnp.mean(jnp.abs(h), axis=0)
        scores[name] = mean_abs / (jnp.mean(mean_abs) + 1e-8)
    return scores


def layer_proportion(name: str) -> float:
    """How deep a parameter's layer is in its network: 0 first layer, 1 output layer (log_std is an output)."""
    for network in NETWORKS:
        for i, layer in enumerate(LAYERS):
            if name == network + layer:
                return i / (len(LAYERS) - 1)
    return 1.0


def clip_by_global_norm(grads: Any, max_norm: float) -> Any:
    """Scale every gradient so that their global norm is at most `max_norm` (optax's `clip_by_global_norm`)."""
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, grads)


def batch_proportion(epoch: jax.Array, minibatch: jax.Array, epochs: int, minibatches: int) -> jax.Array:
    """Position of a gradient step within one update's epochs x minibatches: 0 at the first, 1 at the last."""
    steps = epochs * minibatches
    return (epoch * minibatches + minibatch).astype(jnp.float32) / max(1, steps - 1)


def _apply_update(update: Callable[..., Any], params: Any, grads: Any, opt_state: Any,
                  dormancy: dict[str, jax.Array], step: StepInputs) -> tuple[Any, Any]:
    """One optimiser step: update the momenta, then call the rule on every tensor with OPEN's inputs."""
    betas = jnp.asarray(MOMENTUM_BETAS, jnp.float32)
    p_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    g_leaves = treedef.flatten_up_to(grads)
    s_leaves = treedef.flatten_up_to(opt_state)
    new_p, new_s = [], []
    for index, ((path, p), g, s) in enumerate(zip(p_leaves, g_leaves, s_leaves, strict=True)):
        layer = path[0].key
        b = betas.reshape((-1,) + (1,) * p.ndim)
        momenta = b * s.momenta + (1.0 - b) * g
        neuron = dormancy.get(layer, jnp.ones(p.shape[-1:], p.dtype))  # log_std feeds no neuron: 1, the mean
        noise = jax.random.normal(jax.random.fold_in(step.noise_key, index), p.shape, p.dtype)
        delta, slots = update(g, p, tuple(s.slots), momenta, step.iteration, step.progress,
                              jnp.float32(layer_proportion(layer)), step.batch_proportion,
                              jnp.broadcast_to(neuron, p.shape), noise, step.lr)
        new_p.append(p + jnp.asarray(delta, p.dtype))
        new_s.append(OptState(tuple(jnp.broadcast_to(jnp.asarray(x, p.dtype), p.shape) for x in slots), momenta))
    return jax.tree.unflatten(treedef, new_p), jax.tree.unflatten(treedef, new_s)


def _tree_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train(env_name: str, config: PPOConfig, plugins: Plugins) -> Callable[..., TrainOutput]:
    env, env_params, info = make_env(env_name)
    if info.continuous:
        space = env.action_space(env_params)
        action_low, action_high = jnp.asarray(space.low), jnp.asarray(space.high)
    n_envs, n_steps, n_mb = config.num_envs, config.num_steps, config.num_minibatches
    batch_size = n_envs * n_steps
    mb_size = batch_size // n_mb
    num_updates = config.num_updates
    log_2pi = math.log(2.0 * math.pi)

    def policy(params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return networks.apply(params, obs, config.activation)

    def log_prob_entropy(params: Any, out: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        if info.continuous:
            log_std = params["log_std"]["v"]
            z = (action - out) / jnp.exp(log_std)
            log_prob = jnp.sum(-0.5 * z * z - log_std - 0.5 * log_2pi, axis=-1)
            entropy = jnp.sum(0.5 + 0.5 * log_2pi + log_std) * jnp.ones(out.shape[:-1])
            return log_prob, entropy
        logp = jax.nn.log_softmax(out)
        log_prob = jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
        return log_prob, entropy

    def sample(params: Any, out: jax.Array, key: jax.Array) -> jax.Array:
        if info.continuous:
            return out + jnp.exp(params["log_std"]["v"]) * jax.random.normal(key, out.shape)
        return jax.random.categorical(key, out)

    def loss_fn(params: Any, mb: Batch) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        out, value = policy(params, mb.obs)
        log_prob, entropy = log_prob_entropy(params, out, mb.action)
        ratio = jnp.exp(log_prob - mb.log_prob)
        adv = (mb.advantage - mb.advantage.mean()) / (mb.advantage.std() + 1e-8)
        drift = plugins.drift(ratio, adv, config.clip_eps)
        actor_loss = -jnp.mean(ratio * adv - jax.nn.relu(drift))
        value_clipped = mb.value + jnp.clip(value - mb.value, -config.clip_eps, config.clip_eps)
        value_loss = 0.5 * jnp.mean(jnp.maximum((value - mb.target) ** 2, (value_clipped - mb.target) ** 2))
        total = actor_loss + config.vf_coef * value_loss - config.ent_coef * jnp.mean(entropy)
        approx_kl = jnp.mean((ratio - 1.0) - (log_prob - mb.log_prob))  # the k3 estimator of KL(old || new)
        clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > config.clip_eps).astype(jnp.float32))
        parts = jnp.stack([actor_loss, value_loss, jnp.mean(entropy), approx_kl, clip_fraction])
        return total, (total, jax.lax.stop_gradient(parts))

    def train(params: Any, key: jax.Array, lr: jax.Array) -> TrainOutput:
        noise_root = jax.random.fold_in(key, NOISE_STREAM)
        key, reset_key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, n_envs), env_params)
        learner = Learner(params, init_opt_state(params), jnp.float32(0.0), jnp.bool_(True))
        rollout = Rollout(env_state, obs, jnp.zeros(n_envs), key)

        def update_step(carry: tuple[Learner, Rollout], update_idx: jax.Array) -> tuple[tuple, tuple]:
            learner, rollout = carry
            params = learner.params

            def env_step(rollout: Rollout, _: None) -> tuple[Rollout, tuple]:
                key, k_act, k_step = jax.random.split(rollout.key, 3)
                flat_obs = rollout.obs.reshape(n_envs, -1).astype(jnp.float32)
                out, value = policy(params, flat_obs)
                action = sample(params, out, k_act)
                log_prob, _ = log_prob_entropy(params, out, action)
                env_action = jnp.clip(action, action_low, action_high) if info.continuous else action
                obs, env_state, reward, terminated, truncated, _ = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None)
                )(jax.random.split(k_step, n_envs), rollout.env_state, env_action, env_params)
                done = jnp.logical_or(terminated, truncated)
                reward = reward.astype(jnp.float32)
                ep_ret = rollout.ep_ret + reward
                finished_sum = jnp.sum(jnp.where(done, ep_ret, 0.0))
                finished_n = jnp.sum(done)
                step = Transition(flat_obs, action, log_prob, value, reward, done.astype(jnp.float32))
                return Rollout(env_state, obs, jnp.where(done, 0.0, ep_ret), key), (step, finished_sum, finished_n)

            rollout, (traj, f_sum, f_n) = jax.lax.scan(env_step, rollout, None, n_steps)
            _, last_value = policy(params, rollout.obs.reshape(n_envs, -1).astype(jnp.float32))
            adv = plugins.advantages(traj.reward, traj.value, traj.done, last_value, config.gamma, config.gae_lambda)
            progress = update_idx.astype(jnp.float32) / num_updates
            lr_now = lr * (1.0 - progress) if config.anneal_lr else lr
            batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                                 Batch(traj.obs, traj.action, traj.log_prob, traj.value, adv, adv + traj.value))

            def epoch(carry: tuple[Learner, jax.Array], epoch_idx: jax.Array) -> tuple[tuple, jax.Array]:
                learner, key = carry
                key, k_perm = jax.random.split(key)
                perm = jax.random.permutation(k_perm, batch_size)
                minibatches = jax.tree.map(lambda x: x[perm].reshape((n_mb, mb_size) + x.shape[1:]), batch)

                def minibatch(learner: Learner, xs: tuple[Batch, jax.Array]) -> tuple[Learner, jax.Array]:
                    mb, mb_idx = xs
                    grads, (loss, parts) = jax.grad(loss_fn, has_aux=True)(learner.params, mb)
                    grads = clip_by_global_norm(grads, config.max_grad_norm)
                    dormancy = neuron_dormancy(layer_outputs(learner.params, mb.obs, config.activation))
                    step = StepInputs(
                        learner.iteration, progress,
                        batch_proportion(epoch_idx, mb_idx, config.update_epochs, n_mb), lr_now,
                        jax.random.fold_in(noise_root, learner.iteration.astype(jnp.int32)),
                    )
                    params, opt_state = _apply_update(plugins.update, learner.params, grads, learner.opt_state,
                                                      dormancy, step)
                    return Learner(params, opt_state, learner.iteration + 1.0,
                                   learner.finite & jnp.isfinite(loss)), parts

                learner, parts = jax.lax.scan(minibatch, learner, (minibatches, jnp.arange(n_mb)))
                return (learner, key), parts

            (learner, key), parts = jax.lax.scan(epoch, (learner, rollout.key), jnp.arange(config.update_epochs))
            return (learner, rollout._replace(key=key)), (jnp.sum(f_sum), jnp.sum(f_n), jnp.mean(parts, axis=(0, 1)))

        (learner, _), (ret_sum, ret_n, parts) = jax.lax.scan(update_step, (learner, rollout), jnp.arange(num_updates))
        finite = learner.finite & _tree_finite(learner.params) & jnp.all(jnp.isfinite(ret_sum))
        return TrainOutput(ret_sum, ret_n.astype(jnp.float32), finite, parts)

    return train


def make_lanes_train(env_name: str, config: PPOConfig, plugins: Plugins) -> Callable[..., TrainOutput]:
    """`f(params[lane], keys[lane], lrs[lane]) -> TrainOutput` with a leading lane axis, jitted."""
    return jax.jit(jax.vmap(make_train(env_name, config, plugins)))


def lane_inputs(env_name: str, config: PPOConfig, candidates: int, learning_rates: list[float], seeds: list[int]
                ) -> tuple[networks.Params, jax.Array, jax.Array]:
    """Parameters, keys and learning rates per lane, candidate-major: (candidate, learning rate, seed)."""
    per_seed = init_params(env_name, config, seeds)
    repeats = candidates * len(learning_rates)
    params = jax.tree.map(lambda x: jnp.tile(x, (repeats,) + (1,) * (x.ndim - 1)), per_seed)
    keys = jnp.tile(jnp.stack([jax.random.PRNGKey(s) for s in seeds]), (repeats, 1))
    lrs = jnp.tile(jnp.repeat(jnp.asarray(learning_rates, jnp.float32), len(seeds)), candidates)
    return params, keys, lrs
