"""The trainer process: `python -m workers.trainer.server --result-fd N [--cache-dir D]`.

Long-lived and warm (JAX imported, the GPU initialised once, compiled programs cached): it reads
`TrainRequest` frames from stdin and answers each with one `TrainResponse` frame on the result
descriptor. It runs project code only: PPO from `workers.rl`, the warm starts, and candidate
modules that `verify` accepted and `audit` found to compute what their source computed, plugged in
by `lanes`. It never loads candidate source. Raw arrays go back; the worker computes returns and
scores from them.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from jax import export

from workers.artifact import Artifact
from workers.rl.envs import get_config
from workers.rl.plugins import Plugins, warm_start_plugins
from workers.rl.ppo import lane_inputs, make_lanes_train
from workers.rl.random_policy import random_policy_returns
from workers.targets import get_target
from workers.trainer.audit import audit_artifact, training_sizes
from workers.trainer.lanes import candidate_plugin
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


def train_lanes(env: str, profile: str, seeds: list[int], learning_rates: list[float], plugins: Plugins,
                candidates: int = 1, repeats: int = 1) -> LaneArrays:
    """Train every candidate × learning rate × seed in one program."""
    config = get_config(env, profile)
    params, keys, lrs = lane_inputs(env, config, candidates, learning_rates, seeds)
    t0 = time.perf_counter()
    compiled = make_lanes_train(env, config, plugins).lower(params, keys, lrs).compile()
    compile_seconds = time.perf_counter() - t0
    train_seconds = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(params, keys, lrs))
        train_seconds = min(train_seconds, time.perf_counter() - t)
    shape = (candidates, len(learning_rates), len(seeds))
    ret_sum, ret_n, finite, diagnostics = (np.asarray(x) for x in out)
    return LaneArrays(ret_sum.reshape(*shape, -1).astype(np.float32), ret_n.reshape(*shape, -1).astype(np.float32),
                      finite.reshape(shape), diagnostics.reshape(*shape, *diagnostics.shape[1:]).astype(np.float32),
                      compile_seconds, train_seconds)


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


def handle(request: TrainRequest) -> TrainResponse:
    target = get_target(request.target)
    response = TrainResponse(platform=platform(), device=device())
    if request.artifacts is None:
        plugins, trained = warm_start_plugins(), [0]
    else:
        verified = {}
        sizes = tuple(sorted(training_sizes(get_config(request.env, request.profile)).items()))
        for index, encoded in enumerate(request.artifacts):
            try:
                verified[index] = checked_artifact(encoded, target.name, response.platform, sizes,
                                                   request.check_rules)
            except (ArtifactRefused, ValueError) as exc:
                response.refused[index] = str(exc)
        trained = sorted(verified)
        if not trained:
            return response
        lanes = len(request.seeds) * len(request.learning_rates)
        plugin = candidate_plugin(target, [verified[i] for i in trained], lanes)
        plugins = warm_start_plugins()._replace(**{target.plugin_field: plugin})
    arrays = train_lanes(request.env, request.profile, request.seeds, request.learning_rates, plugins,
                         candidates=len(trained))
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
