"""One ES generation on CartPole-v1's smoke profile, end to end through the service's LocalExecutor and the real,
sandboxed trainer: the warm start is traced and anchors the scores, the population (4 members, 1 seed each) trains
as parameter vectors in one program, the generation's row has a finite fitness per member and its environment
steps, and the mean becomes a network candidate that is trained from its vector and scored. Then hostile vectors
sent to the same sandboxed trainer are refused and reported, never trained."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Candidate, ESGeneration
from service.evaluation import trainer_config
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.runs.conftest import read_report, wait_for_final
from workers.rl.envs import get_config
from workers.trainer.client import POOL
from workers.trainer.protocol import EncodedArray, TrainRequest
from workers.vocabulary import CandidateKind

POPULATION = 4
SPEC = {"target": "lpo", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "seed": 0, "seeds_per_eval": 1, "metatest_seeds": 1, "verification_seeds": 2,
        "proposer": {"kind": "es", "every_k": 1, "seeds_per_member": 1,
                     "es": {"population": POPULATION, "generations": 1}}}


@pytest.fixture
def runtime(tmp_path: Path, cache_dir: Path) -> Iterator[Runtime]:  # noqa: F811
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'es.db'}", broker_url=None, cache_dir=cache_dir)
    upgrade_database(settings.database_url)
    built = build_runtime(settings, local_workers=1, sweep_interval=2.0)
    yield built
    built.executor.close()


@pytest.mark.slow
def test_one_es_generation_on_cartpole_smoke_end_to_end(runtime: Runtime) -> None:
    run_id = start_run(runtime, RunSpec.model_validate(SPEC))
    status = wait_for_final(runtime.factory, run_id, timeout=1200)
    report = read_report(runtime.factory, run_id)
    assert status == "completed", report.describe()
    with session_scope(runtime.factory) as session:
        rows = session.scalars(select(ESGeneration).where(ESGeneration.run_id == run_id)).all()
        assert [row.generation for row in rows] == [0]
        row = rows[0]
        assert len(row.fitness) == POPULATION and all(f is not None and math.isfinite(f) for f in row.fitness), row
        assert len(row.seeds) == 1 and row.trainer_seconds > 0
        assert row.env_steps == POPULATION * get_config("CartPole-v1", "smoke").env_steps
        network = session.scalar(select(Candidate).where(Candidate.run_id == run_id,
                                                         Candidate.kind == CandidateKind.NETWORK))
        assert network is not None and network.es_generation == 1, report.describe()
        assert network.outcome == "ok" and network.score is not None and math.isfinite(network.score), \
            report.describe()
        network_id, vector_sha = network.id, network.parameters_sha256
    trained = [e for e in report.evaluations if e.candidate_id == network_id]
    assert {e.phase for e in trained} >= {"train"}, report.describe()
    assert all(e.outcome == "ok" and e.artifact_sha256 == vector_sha for e in trained), report.describe()

    nan = np.zeros(1152, np.float32)
    nan[0] = np.nan
    hostile = [EncodedArray.of(nan), EncodedArray.of(np.zeros(1151, np.float32)), EncodedArray.of(np.zeros(1152))]
    request = TrainRequest(target="lpo", env="CartPole-v1", profile="smoke", seeds=[0], learning_rates=[2.5e-4],
                           parameters=hostile, network="lpo_network")
    with POOL.acquire(trainer_config(runtime.settings)) as trainer:  # the sandboxed trainer the run used
        response = trainer.train(request, 120.0)
    assert response.error is None and response.trained == [] and response.return_sum is None
    reasons = [response.refused.get(index, "") for index in range(len(hostile))]
    assert "finite" in reasons[0] and "[1151]" in reasons[1] and "float64" in reasons[2], response.refused
