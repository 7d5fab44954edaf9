"""The trainer process: `python -m workers.trainer.server --result-fd N [--cache-dir D]`.

Long-lived and warm (JAX imported, the GPU initialised once, compiled programs cached): it reads
`TrainRequest` frames from stdin and answers each with one `TrainResponse` frame on the result
descriptor. It runs project code only: PPO from `workers.rl`, the warm starts, and candidate
modules that `verify` accepted and `audit` found to compute what their source computed, plugged in
by `lanes`. It never loads candidate source. Raw arrays go back; the worker computes returns and
scores from them.

A request may carry parameter vectors of a target's network instead of artifacts (ES members, network
candidates): each is decoded through the gate of `workers.trainer.parameters` (a refused vector is reported in
`refused`, like a refused artifact, and never trained), and the population trains member-major on the lane axis,
each lane's vector a lane input of one program (`train_network_lanes`), compiled once per network and shape and
kept for the process's later generations.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import export

from workers.artifact import Artifact
from workers.rl.envs import get_config
from workers.rl.plugins import Plugins, warm_start_plugins
from workers.rl.ppo import lane_inputs, make_lanes_train
from workers.rl.random_policy import random_policy_returns
from workers.targets import Target, get_target
from workers.targets.base import SERVICE_TRAINING, Training
from workers.trainer.audit import audit_artifact, training_sizes
from workers.trainer.lanes import candidate_plugin, network_lane_plugins
from workers.trainer.parameters import DEFAULT_BOUND, decode_parameters
from workers.trainer.protocol import EncodedArray, TrainRequest, TrainResponse, read_frame, write_frame
from workers.trainer.verify import ArtifactRefused, verify_artifact


def configure_compile_cache(cache_dir: Path | None) -> None:
    """Use JAX's persistent compilation cache for every compile, however short."""
    if cache_dir is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def platform() -> str:
    return jax.default_backend()


def device() -> str:
    """The device the trainer's programs run on, as JAX names it ("TFRT_CPU_0", "cuda:0")."""
    return str(jax.devices()[0])


class LaneArrays(NamedTuple):
    return_sum: np.ndarray  # [candidate, lr, seed, update]
    episodes: np.ndarray  # [candidate, lr, seed, update]
    finite: np.ndarray  # [candidate, lr, seed]
    diagnostics: np.ndarray  # [candidate, lr, seed, update, part]
    compile_seconds: float
    train_seconds: float  # the fastest of `repeats`


def _run_lanes(compiled: Callable[..., Any], inputs: tuple[Any, ...], shape: tuple[int, int, int],
               compile_seconds: float, repeats: int) -> LaneArrays:
    """Run a compiled lane program (the fastest of `repeats`) and shape its outputs [candidate, lr, seed, ...]."""
    train_seconds = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*inputs))
        train_seconds = min(train_seconds, time.perf_counter() - t)
    ret_sum, ret_n, finite, diagnostics = (np.asarray(x) for x in out)
    return LaneArrays(ret_sum.reshape(*shape, -1).astype(np.float32), ret_n.reshape(*shape, -1).astype(np.float32),
                      finite.reshape(shape), diagnostics.reshape(*shape, *diagnostics.shape[1:]).astype(np.float32),
                      compile_seconds, train_seconds)


def train_lanes(env: str, profile: str, seeds: list[int], learning_rates: list[float], plugins: Plugins,
                candidates: int = 1, repeats: int = 1, training: Training = SERVICE_TRAINING) -> LaneArrays:
    """Train every candidate × learning rate × seed in one program (under the target's `training` protocol)."""
    config = get_config(env, profile, training)
    inputs = lane_inputs(env, config, candidates, learning_rates, seeds)
    t0 = time.perf_counter()
    compiled = make_lanes_train(env, config, plugins).lower(*inputs).compile()
    return _run_lanes(compiled, inputs, (candidates, len(learning_rates), len(seeds)), time.perf_counter() - t0,
                      repeats)


NETWORK_PROGRAMS = 8  # compiled population programs kept per process (one per target, environment, profile, lanes)


@lru_cache(maxsize=NETWORK_PROGRAMS)
def network_program(target_name: str, network_name: str, env: str, profile: str, lanes: int
                    ) -> tuple[Callable[..., Any], float]:
    """The compiled lane program of the target's network (or its variant `network_name`, a student's width) for
    `lanes` lanes, and how long it took to compile: the vectors, keys and rates are its inputs, so every generation
    of a run reuses it."""
    target = get_target(target_name)
    config = get_config(env, profile, target.training)
    network = target.network.resolve(network_name) if target.network is not None else None
    assert network is not None
    params, keys, lrs = lane_inputs(env, config, lanes, [0.0], [0])
    vectors = jax.ShapeDtypeStruct((lanes, network.parameter_count), np.float32)
    t0 = time.perf_counter()
    program = make_lanes_train(env, config, warm_start_plugins(), network_lane_plugins(target, network))
    compiled = program.lower(params, keys, lrs, vectors).compile()
    return compiled, time.perf_counter() - t0


def train_network_lanes(env: str, profile: str, seeds: list[int], learning_rates: list[float], target: Target,
                        vectors: np.ndarray, repeats: int = 1, network_name: str | None = None) -> LaneArrays:
    """Train a population of the target's network (`vectors`: [members, parameters], float32, already through the
    gate) × learning rate × seed in one program, member-major: member k owns lanes k·n .. (k+1)·n − 1 (n = rates ×
    seeds), each with its own vector. `compile_seconds` is 0 when the program was already compiled."""
    config = get_config(env, profile, target.training)
    members, per_member = len(vectors), len(learning_rates) * len(seeds)
    params, keys, lrs = lane_inputs(env, config, members, learning_rates, seeds)
    lane_vectors = np.repeat(np.asarray(vectors, np.float32), per_member, axis=0)  # [lanes, parameters]
    fresh = network_program.cache_info().misses
    assert target.network is not None
    compiled, compile_seconds = network_program(target.name, network_name or target.network.name, env, profile,
                                                members * per_member)
    if network_program.cache_info().misses == fresh:
        compile_seconds = 0.0
    return _run_lanes(compiled, (params, keys, lrs, lane_vectors), (members, len(learning_rates), len(seeds)),
                      compile_seconds, repeats)


AUDITED_CACHE = 32  # artifacts kept verified and audited (one can hold up to 4 MB of modules): a few batches


@lru_cache(maxsize=AUDITED_CACHE)
def checked_artifact(encoded: str, target_name: str, platform: str, sizes: tuple[tuple[str, int], ...],
                     check_rules: bool) -> dict[str, export.Exported]:
    """Verify the artifact (what it is), then audit it (what it computes); raises ArtifactRefused. An artifact
    that passed is not audited again for the same sizes."""
    target = get_target(target_name)
    data = base64.b64decode(encoded, validate=True)
    modules = verify_artifact(data, target, platform)
    audit_artifact(target, modules, Artifact.from_bytes(data).probe_outputs(), dict(sizes), check_rules)
    return modules


def _verified_plugins(request: TrainRequest, target: Target, response: TrainResponse) -> tuple[list[int], Plugins]:
    """The artifacts that passed verification and audit (the others go to `response.refused`), and their plug-in."""
    assert request.artifacts is not None
    verified = {}
    sizes = tuple(sorted(training_sizes(get_config(request.env, request.profile)).items()))
    for index, encoded in enumerate(request.artifacts):
        try:
            verified[index] = checked_artifact(encoded, target.name, response.platform, sizes, request.check_rules)
        except (ArtifactRefused, ValueError) as exc:
            response.refused[index] = str(exc)
    trained = sorted(verified)
    if not trained:
        return trained, warm_start_plugins()
    lanes = len(request.seeds) * len(request.learning_rates)
    plugin = candidate_plugin(target, [verified[i] for i in trained], lanes)
    return trained, warm_start_plugins()._replace(**{target.plugin_field: plugin})


def _decoded_vectors(request: TrainRequest, target: Target, response: TrainResponse) -> dict[int, np.ndarray]:
    """The parameter vectors that passed the gate (the others go to `response.refused`, never to JAX)."""
    assert request.parameters is not None
    network = target.network.resolve(request.network or "") if target.network is not None else None
    if network is None:
        raise ValueError(f"target {target.name!r} has no network {request.network!r}")
    vectors = {}
    for index, encoded in enumerate(request.parameters):
        try:
            vectors[index] = decode_parameters(encoded, network.parameter_count, DEFAULT_BOUND)
        except ValueError as exc:
            response.refused[index] = str(exc)
    return vectors


def _train(request: TrainRequest, target: Target, response: TrainResponse) -> tuple[list[int], LaneArrays | None]:
    """The indices trained (in the order of the leading axis) and their arrays; None when every one was refused."""
    if request.parameters is not None:
        vectors = _decoded_vectors(request, target, response)
        trained = sorted(vectors)
        if not trained:
            return trained, None
        return trained, train_network_lanes(request.env, request.profile, request.seeds, request.learning_rates,
                                            target, np.stack([vectors[i] for i in trained]),
                                            network_name=request.network)
    if request.artifacts is None:
        trained, plugins = [0], warm_start_plugins()
    else:
        trained, plugins = _verified_plugins(request, target, response)
        if not trained:
            return trained, None
    return trained, train_lanes(request.env, request.profile, request.seeds, request.learning_rates, plugins,
                                candidates=len(trained), training=target.training)


def handle(request: TrainRequest) -> TrainResponse:
    target = get_target(request.target)
    response = TrainResponse(platform=platform(), device=device())
    trained, arrays = _train(request, target, response)
    if arrays is None:
        return response
    response.trained = trained
    response.return_sum, response.episodes = EncodedArray.of(arrays.return_sum), EncodedArray.of(arrays.episodes)
    response.finite, response.diagnostics = EncodedArray.of(arrays.finite), EncodedArray.of(arrays.diagnostics)
    response.compile_seconds, response.train_seconds = arrays.compile_seconds, arrays.train_seconds
    if request.with_random_baseline:
        response.random_returns = random_policy_returns(request.env, get_config(request.env, request.profile),
                                                        request.seeds)
    return response


def serve(result_fd: int) -> None:
    """Answer requests until stdin closes; a bad request gets an error response, never a crash."""
    stdin = sys.stdin.buffer.fileno()
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        try:
            response = handle(TrainRequest.model_validate_json(frame))
        except Exception as exc:  # noqa: BLE001 - reported to the worker, which decides
            response = TrainResponse(error=f"{type(exc).__name__}: {str(exc)[:2000]}")
        write_frame(result_fd, response.model_dump_json().encode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seccomp-fd", type=int, default=None, help="load this seccomp filter first (no bwrap)")
    args = parser.parse_args(argv)
    if args.seccomp_fd is not None:
        from workers.sandbox.seccomp import install_from_fd

        install_from_fd(args.seccomp_fd)
    configure_compile_cache(args.cache_dir)
    os.set_inheritable(args.result_fd, False)
    write_frame(args.result_fd, TrainResponse(platform=platform(), device=device()).model_dump_json().encode())  # ready
    serve(args.result_fd)


if __name__ == "__main__":
    main()
