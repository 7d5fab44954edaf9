"""Fixtures for the trainer tests: artifacts traced in this process, a warm sandboxed trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.results import TraceRequest
from workers.sandbox import SandboxLimits, probe_isolation
from workers.sandbox.tracer import trace
from workers.trainer.client import TrainerConfig, TrainerProcess
from workers.vocabulary import Outcome

USELESS_DRIFT = '''
def drift(ratio, advantage, epsilon):
    return 2.0 * ratio * advantage
'''

# Infinite gradient at ratio == 1 (every first epoch), finite everywhere the probe looks.
NAN_IN_TRAINING_DRIFT = '''
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return jnp.sqrt(jnp.abs(ratio - 1.0)) * 0.0
'''

# Loops forever once some ratio is exactly 1 (the first epoch of training); the probe never sees one.
ENDLESS_IN_TRAINING_DRIFT = '''
import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    steps = jax.lax.while_loop(lambda i: jnp.any(ratio == 1.0), lambda i: i + 1.0, 0.0)
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jax.nn.relu((ratio - clipped) * advantage) + 0.0 * steps
'''

SMALL_DRIFT = '''
import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    clipped = jnp.clip(ratio, 1.0 - 0.5 * epsilon, 1.0 + 0.5 * epsilon)
    return jax.nn.relu((ratio - clipped) * advantage)
'''


def artifact_of(code: str, target: str = "lpo") -> str:
    traced = trace(TraceRequest(target=target, code=code))
    assert traced.outcome is Outcome.ok and traced.artifact, traced.error
    return traced.artifact


@pytest.fixture(scope="session")
def trainer_config(tmp_path_factory: pytest.TempPathFactory) -> TrainerConfig:
    if not probe_isolation().bwrap:
        pytest.fail("bubblewrap does not work here")
    cache = tmp_path_factory.mktemp("trainer-cache")
    limits = SandboxLimits(memory_mb=8192, cpus=2.0, cpu_seconds=10**9, max_processes=1024, max_file_mb=1024,
                           scratch_mb=256, cache_dir=cache)
    return TrainerConfig(limits=limits, device="cpu")


@pytest.fixture(scope="session")
def trainer(trainer_config: TrainerConfig) -> Iterator[TrainerProcess]:
    process = TrainerProcess(trainer_config)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def cache_root(trainer_config: TrainerConfig) -> Path:
    assert trainer_config.limits.cache_dir is not None
    return Path(trainer_config.limits.cache_dir)
