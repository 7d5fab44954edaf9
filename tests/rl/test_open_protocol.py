"""The `open` target is the optimizer rule trained as the paper's OPEN: its own learning rate per environment,
noise on the actor's tensors only, the batch proportion per epoch and the actor's and critic's gradients clipped
apart (the clipping itself is checked against optax in `test_warm_start_matches_optax.py`). The card the model
reads says so, the trainer applies it to every candidate of the target, and the `paper-open` preset selects it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from service.proposers.prompts import system_prompt
from service.runs.protocol import learning_rates
from service.runs.spec import RunSpec
from workers.anchor import _key as anchor_key
from workers.evaluate import evaluate_in_process
from workers.rl import networks
from workers.rl.envs import get_config
from workers.rl.optimizer_inputs import StepInputs, apply_update, init_opt_state
from workers.rl.plugins import warm_start_plugins
from workers.rl.ppo import lane_inputs, make_lanes_train
from workers.targets import TARGETS, load_function
from workers.vocabulary import Outcome

OPEN, OPTIMIZER = TARGETS["open"], TARGETS["optimizer"]


def test_open_is_the_optimizer_rule_with_a_card_that_describes_the_papers_protocol() -> None:
    assert (OPEN.signature, OPEN.warm_start, OPEN.kernel, OPEN.plugin_field) == (
        OPTIMIZER.signature, OPTIMIZER.warm_start, OPTIMIZER.kernel, OPTIMIZER.plugin_field)
    prompt, theirs = system_prompt(OPEN), system_prompt(OPTIMIZER)
    for promise in ("zeros for the critic's", "by epoch", "clipped to global norm 0.5 on their own",
                    "Breakout 7e-3"):
        assert promise in prompt and promise not in theirs


@pytest.mark.parametrize(("env", "open_rate", "optimizer_rate"), [
    ("Breakout-MinAtar", 7e-3, 1e-2), ("SpaceInvaders-MinAtar", 3e-3, 7e-3), ("Asterix-MinAtar", 3e-3, 3e-3),
    ("CartPole-v1", 1e-3, 1e-3), ("Acrobot-v1", 1e-3, 1e-3),  # Acrobot: the paper tunes none, the env's own
])
def test_open_trains_at_the_papers_learning_rate_for_each_environment(env: str, open_rate: float,
                                                                      optimizer_rate: float) -> None:
    assert learning_rates("open", env, "full", "fixed") == [open_rate]
    assert learning_rates("optimizer", env, "full", "fixed") == [optimizer_rate]
    multipliers = get_config(env, "full").lr_multipliers
    assert learning_rates("open", env, "full", "grid") == [open_rate * m for m in multipliers]


def test_the_loop_hands_an_open_rule_what_its_card_promises() -> None:
    """A project-side spy (native, not exported) runs Adam and records the batch proportion and the noise."""
    adam = load_function(OPEN.warm_start, OPEN)
    seen: list[dict[str, np.ndarray]] = []

    def spy(grad, param, state, momenta, iteration, progress, layer_p, batch_p, dormancy, noise, lr):  # noqa: ANN001, ANN202
        jax.debug.callback(lambda **v: seen.append({k: np.asarray(x) for k, x in v.items()}), iteration=iteration,
                           batch=batch_p, noise_abs=jnp.max(jnp.abs(noise)))
        return adam(grad, param, state, momenta, iteration, progress, layer_p, batch_p, dormancy, noise, lr)

    env = "CartPole-v1"
    config = get_config(env, "smoke", OPEN.training).model_copy(update={"total_timesteps": 2 * 4 * 64})  # 2 updates
    params, keys, lrs = lane_inputs(env, config, 1, [config.lr], [0])
    out = make_lanes_train(env, config, warm_start_plugins()._replace(update=spy))(params, keys, lrs)
    jax.block_until_ready(out)
    assert bool(np.all(out.finite))
    tensors, steps_per_epoch = 12, config.num_minibatches  # w and b of six layers
    by_iteration: dict[float, list[dict[str, np.ndarray]]] = {}
    for value in seen:
        by_iteration.setdefault(float(value["iteration"]), []).append(value)
    assert len(by_iteration) == config.num_updates * config.update_epochs * steps_per_epoch
    for iteration, calls in by_iteration.items():
        assert len(calls) == tensors
        epoch = int(iteration) // steps_per_epoch % config.update_epochs
        assert {float(c["batch"]) for c in calls} == {float(np.float32(epoch / (config.update_epochs - 1)))}
        silent = [c for c in calls if float(c["noise_abs"]) == 0.0]
        assert len(silent) == tensors // 2  # the critic's six tensors


def test_noise_reaches_the_actors_tensors_only_under_open() -> None:
    """A rule that steps by its noise moves every tensor under the service's protocol, the actor's only under
    OPEN's."""
    def step_by_noise(grad, param, state, momenta, iteration, progress, layer_p, batch_p, dormancy, noise, lr):  # noqa: ANN001, ANN202
        return noise, state

    params = jax.tree.map(jnp.asarray, networks.init_params(0, obs_dim=3, action_dim=1, hidden=8, continuous=True))
    grads = jax.tree.map(jnp.zeros_like, params)
    step = StepInputs(jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.float32(1e-3), jax.random.PRNGKey(0))
    dormancy: dict[str, jax.Array] = {}

    def moved(training: Any) -> dict[str, bool]:
        new, _ = apply_update(step_by_noise, params, grads, init_opt_state(params), dormancy, step, training)
        return {name: not np.array_equal(np.asarray(jax.tree.leaves(new[name])[0]),
                                         np.asarray(jax.tree.leaves(params[name])[0])) for name in params}

    assert all(moved(OPTIMIZER.training).values())
    under_open = moved(OPEN.training)
    assert under_open.pop("log_std") and all(under_open[n] for n in under_open if n.startswith("actor"))
    assert not any(under_open[n] for n in under_open if n.startswith("critic"))


def test_the_trainer_trains_each_target_under_its_own_protocol() -> None:
    """The same Adam at the same rate trains differently as `open` (clipped apart) than as `optimizer`, and both
    learn; each target's warm start has anchors of its own."""
    results = [evaluate_in_process(name, [OPEN.warm_start], "CartPole-v1", "smoke", [0, 1])[0]
               for name in ("optimizer", "open")]
    assert all(r.outcome is Outcome.ok and r.result is not None for r in results), [r.error for r in results]
    plain, as_open = (r.result for r in results)
    assert plain is not None and as_open is not None
    assert plain.learning_rates == as_open.learning_rates == [1e-3]
    assert not np.allclose(plain.returns, as_open.returns)
    assert min(plain.final_return, as_open.final_return) > 60.0  # a random CartPole policy lasts about 22 steps
    same = ("CartPole-v1", "smoke", [0, 1], [1e-3], "sha")
    assert anchor_key("open", *same) != anchor_key("optimizer", *same)


def test_the_paper_open_preset_is_the_paper_protocol_on_the_open_target() -> None:
    spec = RunSpec.model_validate({"preset": "paper-open"})
    paper = RunSpec.model_validate({"preset": "paper"})
    assert spec.target == "open"
    assert spec.model_dump(exclude={"preset", "target"}) == paper.model_dump(exclude={"preset", "target"})
    assert learning_rates(spec.target, spec.environments.train[0], spec.profile, spec.learning_rate) == [7e-3]
