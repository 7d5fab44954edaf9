"""The ES run's spec: `proposer.kind: es` with its settings block, the `es-lpo` preset (the paper's values), a
target without a network refused, and `discovery run --proposer es`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.runs.spec import ESProposerSpec, RunSpec
from tests.conftest import process_env
from tests.runs.conftest import REPO
from workers.targets import TARGETS


def test_the_es_lpo_preset_is_the_papers_es_lpo() -> None:
    spec = RunSpec.model_validate({"preset": "es-lpo"})
    assert isinstance(spec.proposer, ESProposerSpec)
    es = spec.proposer.es
    assert (es.population, es.generations) == (64, 800)
    assert (es.sigma_init, es.sigma_decay, es.sigma_limit) == (0.03, 0.99, 0.01)
    assert (es.lr_init, es.lr_decay, es.lr_limit) == (0.03, 0.99, 1e-3)
    assert spec.target == "lpo" and spec.profile == "full" and spec.environments.train == ["Breakout-MinAtar"]


def test_fields_given_refine_the_presets_es_block_and_another_kind_replaces_it() -> None:
    spec = RunSpec.model_validate({"preset": "es-lpo", "proposer": {"every_k": 5, "es": {"generations": 10}}})
    assert isinstance(spec.proposer, ESProposerSpec)
    assert spec.proposer.every_k == 5 and spec.proposer.es.generations == 10 and spec.proposer.es.population == 64
    other = RunSpec.model_validate({"preset": "es-lpo", "proposer": {"kind": "evolution"}})
    assert other.proposer.kind == "evolution" and other.profile == "full"


def test_a_target_without_a_network_refuses_es() -> None:
    assert TARGETS["lpo"].network is not None
    for name in ("optimizer", "advantage", "open"):
        assert TARGETS[name].network is None
        with pytest.raises(ValidationError, match="has no network"):
            RunSpec.model_validate({"target": name, "proposer": {"kind": "es"}})


@pytest.mark.parametrize("es", [{"population": 5}, {"sigma_init": float("inf")}, {"lr_init": 0.0}, {"nope": 1}])
def test_bad_es_settings_are_refused(es: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RunSpec.model_validate({"proposer": {"kind": "es", "es": es}})


def test_the_cards_parameter_count_is_the_kernels() -> None:
    from workers.targets.kernels import lpo_network

    network = TARGETS["lpo"].network
    assert network is not None and network.kernel == lpo_network.__name__
    assert network.parameter_count == lpo_network.PARAMETER_COUNT


def test_the_cli_runs_es(tmp_path: Path) -> None:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}", DISCOVERY_CACHE_DIR=str(tmp_path))
    command = [sys.executable, "-m", "service.cli", "run", "--dry-run"]
    done = subprocess.run([*command, "--proposer", "es", "--generations", "3", "--population", "4"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    proposer = json.loads(done.stdout)["proposer"]
    assert proposer["kind"] == "es" and proposer["es"]["generations"] == 3 and proposer["es"]["population"] == 4
    refused = subprocess.run([*command, "--proposer", "es", "--target", "optimizer"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "has no network" in refused.stderr


@pytest.mark.parametrize("generations", [0, -1, 100_001, 10**9])
def test_an_es_run_asks_between_one_and_a_hundred_thousand_generations(generations: int) -> None:
    with pytest.raises(ValidationError, match="generations"):
        RunSpec.model_validate({"proposer": {"kind": "es", "es": {"generations": generations}}})
