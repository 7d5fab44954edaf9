"""Evaluate one candidate on one environment, end to end, in this process.

Loads the candidate's source into a function, checks it on random inputs, plugs it into PPO with the
warm starts of the other targets, trains every seed and learning rate in one compiled program and
returns an `EvaluationResult`. Runs inside the sandbox child for untrusted code; never raises because
of what the candidate does.
"""

from __future__ import annotations

import time
import traceback
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from workers.results import EnvResult, EvaluationRequest, EvaluationResult, Outcome
from workers.rl.envs import get_config
from workers.rl.ppo import Plugins, final_returns, init_params, learning_curve, make_batched_train
from workers.rl.scoring import random_policy_return
from workers.targets import CandidateError, advantage, get_target, load_function, lpo, optimizer

_PLUGIN_FIELD = {"lpo": "drift", "optimizer": "update", "advantage": "advantages"}


def configure_compile_cache(cache_dir: Path | None) -> None:
    """Use JAX's persistent compilation cache for every compile, however short."""
    if cache_dir is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir) / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@cache
def warm_start_plugins() -> Plugins:
    """The hand-made algorithms: PPO's clip, Adam and GAE."""
    return Plugins(
        drift=load_function(lpo.WARM_START, lpo.TARGET),
        update=load_function(optimizer.WARM_START, optimizer.TARGET),
        advantages=load_function(advantage.WARM_START, advantage.TARGET),
    )


def train_plugins(env: str, profile: str, seeds: list[int], learning_rates: list[float] | None,
                  plugins: Plugins, repeats: int = 1) -> EnvResult:
    """Train PPO with the given plugins for every seed and learning rate; raise FloatingPointError on NaN.

    `repeats` > 1 runs the compiled program again and reports the fastest run (for benchmarks).
    """
    config = get_config(env, profile)
    lrs = learning_rates or config.learning_rates()
    params = init_params(env, config, seeds)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    lr_array = jnp.asarray(lrs, jnp.float32)
    t0 = time.perf_counter()
    compiled = make_batched_train(env, config, plugins).lower(params, keys, lr_array).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(params, keys, lr_array))
    train_seconds = time.perf_counter() - t1
    for _ in range(repeats - 1):
        t = time.perf_counter()
        jax.block_until_ready(compiled(params, keys, lr_array))
        train_seconds = min(train_seconds, time.perf_counter() - t)
    ret_sum, ret_n, finite = (np.asarray(x) for x in out)
    if not bool(np.all(finite)):
        raise FloatingPointError("training produced NaN or Inf (in the loss, the parameters or the returns)")
    returns = final_returns(ret_sum, ret_n)  # [lr, seed]
    best = int(np.argmax(returns.mean(axis=1)))
    return EnvResult(
        env=env,
        profile=profile,
        seeds=list(seeds),
        learning_rates=[float(x) for x in lrs],
        returns=returns.tolist(),
        curves=[learning_curve(ret_sum[i], ret_n[i], config.log_points) for i in range(len(lrs))],
        best_lr=float(lrs[best]),
        final_return=float(returns[best].mean()),
        env_steps=config.env_steps,
        compile_seconds=t1 - t0,
        train_seconds=train_seconds,
    )


def _last_lines(text: str, n: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def evaluate_in_process(request: EvaluationRequest, cache_dir: Path | None = None) -> EvaluationResult:
    started = time.perf_counter()
    configure_compile_cache(cache_dir)

    def done(outcome: Outcome, error: str | None = None, result: EnvResult | None = None) -> EvaluationResult:
        return EvaluationResult(outcome=outcome, error=error, result=result, seconds=time.perf_counter() - started)

    try:
        target = get_target(request.target)
        get_config(request.env, request.profile)
    except KeyError as exc:
        return done(Outcome.invalid, str(exc.args[0]))
    try:
        fn = load_function(request.code, target)
        target.probe(fn)
    except CandidateError as exc:
        return done(Outcome.invalid, str(exc))
    except Exception as exc:  # noqa: BLE001 - executing the module itself raised
        return done(Outcome.error, f"{type(exc).__name__}: {exc}\n{_last_lines(traceback.format_exc())}")
    plugins = warm_start_plugins()._replace(**{_PLUGIN_FIELD[target.name]: fn})
    try:
        result = train_plugins(request.env, request.profile, request.seeds, request.learning_rates, plugins)
    except FloatingPointError as exc:
        return done(Outcome.nan, str(exc))
    except MemoryError:
        return done(Outcome.memory, "out of memory while training")
    except Exception as exc:  # noqa: BLE001 - tracing or running the candidate failed
        return done(Outcome.error, f"{type(exc).__name__}: {exc}\n{_last_lines(traceback.format_exc())}")
    if request.with_random_baseline:
        config = get_config(request.env, request.profile)
        result.random_return = random_policy_return(request.env, config, request.seeds)
    return done(Outcome.ok, result=result)
