"""Candidate modules as calls inside the trainer's lane-vmapped training program.

`jax.export`'s calls have no batching rule, so each module was exported batched over a leading lane
axis, and here every call gets a custom batching rule (`jax.custom_batching.custom_vmap`): under
the trainer's one `vmap` over all lanes, candidate k's module receives exactly its own rows
(lanes are laid out candidate-major) in one call. Lanes never see another candidate's values, so a
NaN or garbage from one candidate stays in that candidate's lanes.

A network candidate (an ES member) needs none of this: its code is the project's (the target's network kernel)
and only its parameter vector differs from lane to lane, so `network_lane_plugins` fills the slot inside the lane
vmap from each lane's own vector (`workers.rl.ppo.make_lanes_train`'s `per_lane`); vmap batches the network over
the lanes, and a lane reads its own vector only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import export
from jax.custom_batching import custom_vmap

from workers.rl.plugins import Plugins
from workers.rl.ppo import LanePlugins
from workers.targets import Target
from workers.targets.base import ModuleSpec, Network


def _lane_call(spec: ModuleSpec, modules: list[export.Exported], lanes_per_candidate: int) -> Callable[..., Any]:
    total = lanes_per_candidate * len(modules)

    @custom_vmap
    def call(*args: jax.Array) -> tuple[jax.Array, ...]:
        # One lane, as JAX traces it for the result's shape; the training program always calls it
        # under its lane vmap, so what runs is `by_candidate` below.
        lifted = [a[None] if s.lane else a for a, s in zip(args, spec.args, strict=True)]
        return tuple(out[0] for out in modules[0].call(*lifted))

    @call.def_vmap
    def by_candidate(axis_size: int, in_batched: list[bool], *args: jax.Array) -> tuple[tuple, tuple]:
        if axis_size != total:
            raise ValueError(f"{spec.name}: {axis_size} lanes, expected {total}")
        full = []
        for value, batched, arg in zip(args, in_batched, spec.args, strict=True):
            if arg.lane:
                full.append(value if batched else jnp.broadcast_to(value, (axis_size, *jnp.shape(value))))
            elif batched:
                raise ValueError(f"{spec.name}: an argument shared by all lanes varies across lanes")
            else:
                full.append(value)
        per_candidate = []
        for k, module in enumerate(modules):
            rows = slice(k * lanes_per_candidate, (k + 1) * lanes_per_candidate)
            per_candidate.append(module.call(*(v[rows] if a.lane else v for v, a in zip(full, spec.args,
                                                                                         strict=True))))
        outs = tuple(jnp.concatenate([outs[i] for outs in per_candidate]) for i in range(len(spec.results)))
        return outs, tuple(True for _ in outs)

    return call


def candidate_plugin(target: Target, modules: list[dict[str, export.Exported]], lanes_per_candidate: int
                     ) -> Callable[..., Any]:
    """The PPO plug-in for a batch of candidates (candidate k owns lanes k*n .. (k+1)*n - 1)."""
    calls = {spec.name: _lane_call(spec, [m[spec.name] for m in modules], lanes_per_candidate)
             for spec in target.modules}
    return target.assemble(calls)


def network_lane_plugins(target: Target, network: Network) -> LanePlugins:
    """`per_lane(plugins, vector)`: the target's slot filled with `network` (the target's, or a sized variant of it:
    a distilled student) at this lane's parameter vector (the kernel's `make_plugin`, e.g. `lpo_network.make_drift`:
    `network_drift(vector, r, A, eps, width)`)."""
    make_plugin = importlib.import_module(network.kernel).make_plugin
    width = {"width": network.hidden} if network.hidden else {}

    def per_lane(plugins: Plugins, vector: jax.Array) -> Plugins:
        return plugins._replace(**{target.plugin_field: make_plugin(vector, **width)})

    return per_lane
