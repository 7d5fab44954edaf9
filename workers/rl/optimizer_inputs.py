"""The optimizer target's inputs: what PPO hands the update rule at every gradient step (OPEN's inputs).

The training loop (`workers.rl.ppo`) calls `optimizer_step` once per minibatch, after `clip_gradients`.
Here the rule's inputs are computed per parameter tensor: gradient momenta at six timescales (carried in
`OptState` beside the rule's own state), the layer and batch proportions, each neuron's dormancy on the
minibatch (`layer_outputs`, `neuron_dormancy`) and standard normal noise from the run's key; then the
rule is called on every tensor. A target's `Training` protocol (`workers.targets.base`) chooses the
paper's variants: the batch proportion per epoch, noise on the actor's tensors only, and the actor's and
critic's gradients clipped separately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from workers.targets.base import SERVICE_TRAINING, Training
from workers.targets.optimizer import MOMENTUM_BETAS, STATE_SLOTS

# The actor-critic's layers as `workers.rl.networks` names them (network + layer), input to output.
NETWORKS = ("actor", "critic")
LAYERS = ("_0", "_1", "_out")
NOISE_STREAM = 0x09E7  # folded into the run's key for the optimiser's noise; the other random streams are unchanged


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


def batch_proportion(epoch: jax.Array, minibatch: jax.Array, epochs: int, minibatches: int,
                     training: Training = SERVICE_TRAINING) -> jax.Array:
    """Position of a gradient step within one update: by default within its epochs x minibatches, 0 at the first
    step and 1 at the last; under `training.batch_proportion == "epoch"` (OPEN's), the epoch's position alone, 0 in
    the first epoch and 1 in the last."""
    if training.batch_proportion == "epoch":
        return epoch.astype(jnp.float32) / max(1, epochs - 1)
    steps = epochs * minibatches
    return (epoch * minibatches + minibatch).astype(jnp.float32) / max(1, steps - 1)


def network_of(layer: str) -> str:
    """Which network a parameter tensor's layer belongs to: `"critic"` for the critic's layers, else `"actor"`
    (a Gaussian policy's log_std is the actor's)."""
    return "critic" if layer.startswith("critic") else "actor"


def clip_gradients(grads: Any, max_norm: float, training: Training = SERVICE_TRAINING) -> Any:
    """Scale the gradients so that their global norm is at most `max_norm` (optax's `clip_by_global_norm`); under
    `training.gradient_clipping == "per_network"` (OPEN's), the actor's and the critic's each on their own."""
    if training.gradient_clipping == "global":
        return _clip_by_global_norm(grads, max_norm)
    parts = {network: {layer: g for layer, g in grads.items() if network_of(layer) == network} for network in NETWORKS}
    clipped = {network: _clip_by_global_norm(part, max_norm) for network, part in parts.items()}
    return {layer: clipped[network_of(layer)][layer] for layer in grads}


def _clip_by_global_norm(grads: Any, max_norm: float) -> Any:
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, grads)


def step_noise_key(noise_root: jax.Array, iteration: jax.Array) -> jax.Array:
    """The key of one gradient step's noise: the run's noise stream (`NOISE_STREAM`) folded with the step."""
    return jax.random.fold_in(noise_root, iteration.astype(jnp.int32))


def apply_update(update: Callable[..., Any], params: Any, grads: Any, opt_state: Any,
                 dormancy: dict[str, jax.Array], step: StepInputs, training: Training = SERVICE_TRAINING
                 ) -> tuple[Any, Any]:
    """One optimiser step: update the momenta, then call the rule on every tensor with OPEN's inputs (under
    `training.optimizer_noise == "actor"`, the critic's tensors get zeros for noise)."""
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
        if training.optimizer_noise == "actor" and network_of(layer) == "critic":
            noise = jnp.zeros_like(noise)
        delta, slots = update(g, p, tuple(s.slots), momenta, step.iteration, step.progress,
                              jnp.float32(layer_proportion(layer)), step.batch_proportion,
                              jnp.broadcast_to(neuron, p.shape), noise, step.lr)
        new_p.append(p + jnp.asarray(delta, p.dtype))
        new_s.append(OptState(tuple(jnp.broadcast_to(jnp.asarray(x, p.dtype), p.shape) for x in slots), momenta))
    return jax.tree.unflatten(treedef, new_p), jax.tree.unflatten(treedef, new_s)


def optimizer_step(update: Callable[..., Any], params: Any, grads: Any, opt_state: Any, obs: jax.Array,
                   activation: str, step: StepInputs, training: Training = SERVICE_TRAINING) -> tuple[Any, Any]:
    """The rule's step on a minibatch's (clipped) gradients: the neurons' dormancy on `obs`, then `apply_update`."""
    dormancy = neuron_dormancy(layer_outputs(params, obs, activation))
    return apply_update(update, params, grads, opt_state, dormancy, step, training)
