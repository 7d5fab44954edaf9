"""Environment steps per second: a random-action rollout (the ceiling) against our PPO.

(a) random actions, vmapped over the same envs and seeds in one jit: the ceiling of env throughput;
(b) PPO with the warm start written as a native Python function in this file;
(c) PPO with a candidate as the trainer runs it: traced, exported, verified and plugged in through the
    lane-batched module calls (the warm start's source, then a DPO-style drift).
Prints a table with the ratios (b)/(a) and (c)/(b), and compile against train time.
Run: .venv/bin/python bench/rl_throughput.py [--env CartPole-v1] [--profile quick] [--seeds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import time

import jax
import jax.numpy as jnp

from workers.results import TraceRequest
from workers.rl.envs import get_config
from workers.rl.plugins import warm_start_plugins
from workers.rl.random_policy import make_random_rollout
from workers.sandbox.tracer import trace
from workers.targets import TARGETS
from workers.trainer.lanes import candidate_plugin
from workers.trainer.server import train_lanes
from workers.trainer.verify import verify_artifact

DPO_DRIFT = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    alpha, beta = 2.0, 0.6
    pos = jax.nn.relu((ratio - 1.0) * advantage - alpha * jnp.tanh((ratio - 1.0) * advantage / alpha))
    log_r = jnp.log(ratio)
    neg = jax.nn.relu(log_r * advantage - beta * jnp.tanh(log_r * advantage / beta))
    return jnp.where(advantage >= 0.0, pos, neg)
"""


def native_clip_drift(ratio, advantage, epsilon):
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)) * advantage)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the fastest counts")
    args = parser.parse_args()
    config = get_config(args.env, args.profile)
    seeds = list(range(args.seeds))
    lanes = len(seeds) * len(config.learning_rates())

    rollout = jax.jit(jax.vmap(make_random_rollout(args.env, config.num_envs, config.num_steps * config.num_updates)))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(lanes)])
    t0 = time.perf_counter()
    compiled = rollout.lower(keys).compile()
    t1 = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    random_s = time.perf_counter() - t1
    for _ in range(args.repeats - 1):
        t = time.perf_counter()
        jax.block_until_ready(compiled(keys))
        random_s = min(random_s, time.perf_counter() - t)
    rows = [("(a) random actions", t1 - t0, random_s)]

    base = warm_start_plugins()
    lpo = TARGETS["lpo"]

    def exported(code: str):  # noqa: ANN202
        artifact = trace(TraceRequest(target="lpo", code=code)).artifact
        modules = verify_artifact(base64.b64decode(artifact), lpo, jax.default_backend())
        return base._replace(drift=candidate_plugin(lpo, [modules], lanes))

    variants = [
        ("(b) PPO, native warm start", base._replace(drift=native_clip_drift)),
        ("(c) PPO, warm start exported", exported(lpo.warm_start)),
        ("(c') PPO, DPO drift exported", exported(DPO_DRIFT)),
    ]
    for label, plugins in variants:
        arrays = train_lanes(args.env, args.profile, seeds, config.learning_rates(), plugins, repeats=args.repeats)
        rows.append((label, arrays.compile_seconds, arrays.train_seconds))

    steps = config.env_steps * lanes
    print(f"{args.env}, profile {args.profile}: {lanes} lanes (seeds x learning rates) x {config.env_steps} steps "
          f"on {jax.device_count()} {jax.default_backend()} device(s)")
    print(f"{'variant':32} {'compile s':>10} {'train s':>10} {'env steps/s':>14}")
    rate = {}
    for label, compile_s, train_s in rows:
        rate[label[:3]] = steps / train_s
        print(f"{label:32} {compile_s:10.2f} {train_s:10.2f} {steps / train_s:14,.0f}")
    dpo_rate = steps / rows[3][2]
    print(f"(b)/(a) = {rate['(b)'] / rate['(a)']:.3f}   (c)/(b) = {rate['(c)'] / rate['(b)']:.3f}   "
          f"(c')/(b) = {dpo_rate / rate['(b)']:.3f}")


if __name__ == "__main__":
    main()
