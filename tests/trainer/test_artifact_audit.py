"""The trainer judges what an artifact computes: only the source's function can earn its score.

Each attack is one a reward-hacking model would try once the static check stops it reaching its tracer:
code in the allowed subset whose arithmetic on the batch size switches behaviour, and artifacts made by
hand, as a candidate that owned its tracer could make them (another function's modules behind the
shown source's probe outputs, a gradient module that is not the function's own).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.trainer.conftest import SMALL_DRIFT, USELESS_DRIFT, artifact_of
from workers.artifact import Artifact, ProbeOutput
from workers.rl.envs import ENVIRONMENTS, get_config
from workers.sandbox import check_source
from workers.targets import TARGETS, get_target
from workers.trainer.audit import artifact_function, training_sizes
from workers.trainer.protocol import TrainRequest
from workers.trainer.server import checked_artifact, handle
from workers.trainer.verify import ArtifactRefused, verify_artifact

LPO = get_target("lpo")

# PPO's clip at the probe's 324 samples (what the fingerprint is hashed from), no drift at any other size: it
# would squat PPO's fingerprint and train as plain policy gradient. Plain arithmetic, inside the subset.
SQUAT_ON_THE_PROBE = '''import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    samples = jnp.sum(jnp.ones_like(ratio))
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.where(samples == 324.0, jax.nn.relu((ratio - clipped) * advantage), 0.0 * ratio)
'''

# Advantages normalised across the environments of the call: each column depends on the others.
ACROSS_ENVIRONMENTS = '''import jax.numpy as jnp


def advantages(rewards, values, dones, last_value, gamma, lam):
    deltas = rewards + gamma * jnp.concatenate([values[1:], last_value[None]], axis=0) * (1.0 - dones) - values
    return deltas - jnp.mean(deltas, axis=1, keepdims=True)
'''


def _audit(encoded: str, target: str = "lpo", env: str = "CartPole-v1", profile: str = "smoke",
           check_rules: bool = False) -> None:
    sizes = tuple(sorted(training_sizes(get_config(env, profile)).items()))
    checked_artifact(encoded, target, "cpu", sizes, check_rules)


def _refusal(encoded: str, **kwargs: object) -> str:
    with pytest.raises(ArtifactRefused) as refused:
        _audit(encoded, **kwargs)  # type: ignore[arg-type]
    return str(refused.value)


def _encode(artifact: Artifact) -> str:
    return base64.b64encode(artifact.to_bytes()).decode()


def _decode(encoded: str) -> Artifact:
    return Artifact.from_bytes(base64.b64decode(encoded))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_warm_starts_and_references_pass_at_every_training_size(name: str) -> None:
    target = TARGETS[name]
    for code in (target.warm_start, *(r.code for r in target.references)):
        encoded = artifact_of(code, name)
        for env in sorted(ENVIRONMENTS):
            _audit(encoded, name, env, "smoke", check_rules=True)


def test_behaviour_that_switches_on_the_batch_size_is_refused() -> None:
    assert check_source(SQUAT_ON_THE_PROBE, LPO) == []  # nothing in the source gives it away
    encoded = artifact_of(SQUAT_ON_THE_PROBE)
    assert _decode(encoded).fingerprint == _decode(artifact_of(LPO.warm_start)).fingerprint  # the squat itself
    reason = _refusal(encoded)
    assert "depends on the other samples in the call" in reason and "324 samples and with 64" in reason


def test_the_trainer_refuses_the_squatter_and_trains_nothing_of_it() -> None:
    request = TrainRequest(target="lpo", env="CartPole-v1", profile="smoke", seeds=[0], learning_rates=[2.5e-4],
                           artifacts=[artifact_of(SQUAT_ON_THE_PROBE)])
    response = handle(request)
    assert response.trained == [] and "depends on the other samples" in response.refused[0]


def test_advantages_that_mix_environments_are_refused() -> None:
    reason = _refusal(artifact_of(ACROSS_ENVIRONMENTS, "advantage"), target="advantage", env="Breakout-MinAtar")
    assert "depend on the other environments in the call" in reason


def test_modules_of_another_function_behind_the_sources_probe_outputs_are_refused() -> None:
    shown = _decode(artifact_of(USELESS_DRIFT))  # what the source computes, as the tracer declares it
    shipped = _decode(artifact_of(LPO.warm_start))  # what a subverted tracer exports instead
    forged = shipped.model_copy(update={"probe": shown.probe})
    assert forged.fingerprint == shown.fingerprint
    assert "does not compute what its source computes" in _refusal(_encode(forged))


def test_a_gradient_module_that_is_not_the_functions_own_is_refused() -> None:
    primal = _decode(artifact_of(USELESS_DRIFT))  # trains as nothing useful on its own
    gradient = _decode(artifact_of(SMALL_DRIFT))  # a good drift's gradient
    hybrid = primal.model_copy(update={"modules": {"drift": primal.modules["drift"],
                                                   "drift_vjp": gradient.modules["drift_vjp"]}})
    # A forger declares what the hybrid itself computes on the probe, so the probe agrees with it.
    modules = verify_artifact(hybrid.to_bytes(), LPO, "cpu")
    declared = tuple(ProbeOutput.of(np.asarray(o)) for o in LPO.probe(artifact_function(LPO, modules)))
    forged = hybrid.model_copy(update={"probe": declared})
    assert "the gradient of the drift is not the derivative of the drift" in _refusal(_encode(forged))


def test_the_rules_are_judged_on_the_artifact_when_a_run_asks() -> None:
    encoded = artifact_of(USELESS_DRIFT)
    _audit(encoded, check_rules=False)  # `discovery evaluate` trains what it is given
    assert "breaks a rule of the target: the drift should be non-negative" in _refusal(encoded, check_rules=True)
