"""The optimizer target with OPEN's inputs: Adam written in the new signature trains exactly as before, the
new inputs reach a candidate across the trust boundary with the ranges the prompt promises, and a rule
that returns the wrong shape or state is refused with a readable reason."""

from __future__ import annotations

import base64
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.evaluate import evaluate_in_process
from workers.results import TraceRequest
from workers.rl import networks
from workers.rl.envs import get_config
from workers.rl.optimizer_inputs import (
    LAYERS,
    NETWORKS,
    batch_proportion,
    layer_outputs,
    layer_proportion,
    neuron_dormancy,
)
from workers.rl.plugins import warm_start_plugins
from workers.rl.ppo import lane_inputs, make_lanes_train
from workers.sandbox.static_check import check_source
from workers.sandbox.tracer import trace
from workers.targets import TARGETS, load_function
from workers.targets.optimizer import MOMENTUM_BETAS, STATE_SLOTS
from workers.trainer.verify import verify_artifact
from workers.vocabulary import Outcome

TARGET = TARGETS["optimizer"]
SEEDS = [0, 1]
SIGNATURE = ("def update(grad, param, state, momenta, iteration, progress, layer_proportion, batch_proportion, "
             "dormancy, noise, lr):")

# Adam again, with other names and layout, and none of OPEN's inputs: it must train bit for bit like the warm
# start. (The arithmetic keeps its order: XLA on CPU may fuse a * b + c into one rounding, so even swapping the
# terms of a sum can change the last bit, and RL amplifies that.)
ADAM_REWRITTEN = f'''
import jax.numpy as jnp


{SIGNATURE}
    first, second, unused_a, unused_b = state
    beta_one = 0.9
    beta_two = 0.999
    first = beta_one * first + (1.0 - beta_one) * grad
    second = beta_two * second + (1.0 - beta_two) * grad * grad
    steps_so_far = iteration + 1.0
    corrected_first = first / (1.0 - beta_one ** steps_so_far)
    corrected_second = second / (1.0 - beta_two ** steps_so_far)
    change = -lr * corrected_first / (jnp.sqrt(corrected_second) + 1e-5)
    return change, (first, second, unused_a, unused_b)
'''

# Uses every new input: the framework's 0.9 momentum instead of its own, a step that shrinks with depth,
# batch position and activity, and annealed noise.
OPEN_STYLE = f'''
import jax.numpy as jnp


{SIGNATURE}
    m, v, count, spare = state
    t = iteration + 1.0
    v = 0.999 * v + 0.001 * grad * grad
    m_hat = momenta[2] / (1.0 - 0.9 ** t)
    v_hat = v / (1.0 - 0.999 ** t)
    scale = 1.0 + 0.1 * (1.0 - layer_proportion) * (1.0 - batch_proportion) + 0.05 * jnp.tanh(1.0 - dormancy)
    slow = 0.01 * (momenta[0] + momenta[5])
    step = -lr * scale * (m_hat + slow) / (jnp.sqrt(v_hat) + 1e-5) + 0.01 * lr * (1.0 - progress) * noise
    return step, (m, v, count + 1.0, spare)
'''


def evaluate(*codes: str) -> list[Any]:
    results = evaluate_in_process("optimizer", list(codes), "CartPole-v1", "smoke", SEEDS)
    for result in results:
        assert result.outcome is Outcome.ok, result.error
    return [r.result for r in results]


# 1. A candidate that ignores every new input scores like Adam.

def test_adam_that_ignores_every_new_input_scores_like_the_warm_start() -> None:
    warm, rewritten = evaluate(TARGET.warm_start, ADAM_REWRITTEN)
    assert rewritten.final_return == pytest.approx(warm.final_return, rel=1e-6)
    assert np.allclose(rewritten.returns, warm.returns, rtol=1e-6)
    assert np.allclose(rewritten.curves, warm.curves, rtol=1e-6)
    assert warm.final_return > 60.0  # and both learned (a random CartPole policy lasts about 22 steps)


# 2. The new inputs cross the trust boundary and have the promised ranges.

def test_a_candidate_using_the_new_inputs_traces_verifies_and_trains() -> None:
    assert check_source(OPEN_STYLE, TARGET) == []
    traced = trace(TraceRequest(target="optimizer", code=OPEN_STYLE))
    assert traced.outcome is Outcome.ok and traced.artifact, traced.error
    modules = verify_artifact(base64.b64decode(traced.artifact), TARGET, "cpu")
    tensors = 2 + STATE_SLOTS + len(MOMENTUM_BETAS) + 2  # grad, param, state, momenta, dormancy, noise
    assert [len(m.in_avals) for m in modules.values()] == [tensors + 5, tensors + 5]
    [result] = evaluate(OPEN_STYLE)
    assert np.all(np.isfinite(result.returns)) and result.final_return > 30.0


def test_layer_and_batch_proportions_span_zero_to_one() -> None:
    names = [n + layer for n in NETWORKS for layer in LAYERS] + ["log_std"]
    assert [layer_proportion(n) for n in names] == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 1.0]
    epochs, minibatches = 4, 4
    proportions = [float(batch_proportion(jnp.int32(e), jnp.int32(j), epochs, minibatches))
                   for e in range(epochs) for j in range(minibatches)]
    assert proportions[0] == 0.0 and proportions[-1] == 1.0
    assert proportions == sorted(proportions) and len(set(proportions)) == epochs * minibatches
    assert float(batch_proportion(jnp.int32(0), jnp.int32(0), 1, 1)) == 0.0


def test_dormancy_is_redo_score_per_neuron_and_layer_outputs_match_the_network() -> None:
    params = networks.init_params(0, obs_dim=4, action_dim=2, hidden=8, continuous=False)
    params = jax.tree.map(jnp.asarray, params)
    params["actor_0"]["w"] = params["actor_0"]["w"].at[:, 3].set(0.0)  # neuron 3 of the first layer: always 0
    obs = jax.random.normal(jax.random.PRNGKey(0), (32, 4))
    outputs = layer_outputs(params, obs, "tanh")
    logits, value = networks.apply(params, obs, "tanh")
    assert np.allclose(outputs["actor_out"], logits) and np.allclose(outputs["critic_out"][:, 0], value)
    scores = neuron_dormancy(outputs)
    for name, score in scores.items():
        width = params[name]["b"].shape[0]
        assert score.shape == (width,)
        assert np.all(score >= 0.0) and np.all(score <= width + 1e-4)
        assert float(jnp.mean(score)) == pytest.approx(1.0, rel=1e-4)
    assert float(scores["actor_0"][3]) == 0.0
    assert float(scores["critic_out"][0]) == pytest.approx(1.0)


def test_the_training_loop_hands_the_rule_what_the_prompt_promises() -> None:
    """A project-side spy (native, not exported) runs Adam and records every input it is given."""
    adam = load_function(TARGET.warm_start, TARGET)
    seen: list[dict[str, np.ndarray]] = []

    def record(**values: np.ndarray) -> None:
        seen.append({k: np.asarray(v) for k, v in values.items()})

    def spy(grad, param, state, momenta, iteration, progress, layer_p, batch_p, dormancy, noise, lr):  # noqa: ANN001, ANN202
        delta, new_state = adam(grad, param, state, momenta, iteration, progress, layer_p, batch_p, dormancy,
                                noise, lr)
        first_step_m0 = (1.0 - MOMENTUM_BETAS[0]) * grad
        jax.debug.callback(lambda **v: record(**v), ndim=jnp.float32(param.ndim), iteration=iteration,
                           progress=progress, layer=layer_p, batch=batch_p, lr=lr,
                           dormancy_min=jnp.min(dormancy), dormancy_mean=jnp.mean(dormancy),
                           noise=noise.reshape(-1), momentum_gap=jnp.max(jnp.abs(momenta[2] - new_state[0])),
                           first_m0_gap=jnp.max(jnp.abs(momenta[0] - first_step_m0)),
                           shapes_ok=jnp.float32(momenta.shape == (len(MOMENTUM_BETAS), *param.shape)
                                                 and dormancy.shape == param.shape and noise.shape == param.shape))
        return delta, new_state

    env = "CartPole-v1"
    config = get_config(env, "smoke").model_copy(update={"total_timesteps": 3 * 4 * 64})  # 3 updates
    params, keys, lrs = lane_inputs(env, config, 1, [1e-3], [0])
    out = make_lanes_train(env, config, warm_start_plugins()._replace(update=spy))(params, keys, lrs)
    jax.block_until_ready(out)
    assert bool(np.all(out.finite))

    def values(key: str) -> np.ndarray:
        return np.concatenate([np.ravel(v[key]) for v in seen])

    steps = config.num_updates * config.update_epochs * config.num_minibatches
    tensors = 12  # w and b of six layers
    assert len(seen) == steps * tensors
    assert np.all(values("shapes_ok") == 1.0)
    assert set(values("layer")) == {0.0, 0.5, 1.0}
    batch = values("batch")
    assert batch.min() == 0.0 and batch.max() == 1.0
    assert len(set(batch)) == config.update_epochs * config.num_minibatches
    assert np.all((values("progress") >= 0.0) & (values("progress") < 1.0))
    assert sorted(set(values("iteration"))) == list(range(steps))
    assert np.all(values("dormancy_min") >= 0.0)
    assert np.allclose(values("dormancy_mean"), 1.0, atol=1e-3)  # a neuron's score repeats along its inputs
    assert np.max(values("momentum_gap")) < 1e-6  # the 0.9 momentum is Adam's first moment
    first_step = [v for v in seen if float(v["iteration"]) == 0.0]
    assert len(first_step) == tensors and max(float(v["first_m0_gap"]) for v in first_step) < 1e-7
    noise = values("noise")
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1.0) < 0.02
    assert len({float(v["noise"].ravel()[0]) for v in seen}) == len(seen)  # fresh for every tensor and step


# 3. A malformed rule is refused before training, with a reason the proposer can act on.

@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return jnp.sum(grad), state", "update must return a step (delta) with the parameter's shape (8, 4), got ()"),
        ("return -lr * grad, state[:3]",
         "update must return a new state of exactly 4 arrays shaped like the parameter, got 3"),
        ("return -lr * grad, (state[0], state[1], state[2], jnp.sum(state[3]))",
         "every new state array must have the parameter's shape (8, 4); got slot 3: ()"),
        ("return -lr * grad", "update must return a pair (delta, new_state)"),
        ("return -lr * momenta, state", "update must return a step (delta) with the parameter's shape (8, 4), "
                                        "got (6, 8, 4)"),
    ],
)
def test_a_rule_with_the_wrong_shape_or_state_is_refused_readably(body: str, expected: str) -> None:
    code = f"import jax.numpy as jnp\n\n\n{SIGNATURE}\n    {body}\n"
    traced = trace(TraceRequest(target="optimizer", code=code))
    assert traced.outcome is Outcome.invalid
    assert expected in (traced.error or "")


def test_a_rule_with_the_old_signature_is_told_the_new_one() -> None:
    old = "def update(grad, param, state, iteration, progress, lr):\n    return -lr * grad, state\n"
    traced = trace(TraceRequest(target="optimizer", code=old))
    assert traced.outcome is Outcome.invalid
    assert "expected (grad, param, state, momenta, iteration, progress, layer_proportion" in (traced.error or "")
