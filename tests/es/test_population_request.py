"""The service side of training a population, without a trainer: `TrainRequest.parameters` (exclusive with
artifacts, with its network), the vectors' encoding and content address, what the worker reads of a trainer's
refusal, the fitness (per-seed scores against the anchor, averaged over seeds and environments,
NaN for a member that failed anywhere) and the generation's cost, and the generation's seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service import evaluation
from service.db.models import Run
from service.runs.protocol import ES_SEED_BASE, generation_seeds, seed_plan
from service.settings import Settings
from workers.anchor import Anchor
from workers.evaluate import train_batch
from workers.results import EnvResult, EvaluationResult, SeedPlan
from workers.rl.envs import get_config
from workers.trainer.parameters import decode_parameters, encode_parameters, parameters_sha256
from workers.trainer.protocol import TrainRequest, TrainResponse
from workers.vocabulary import EvalPhase, Metric, Outcome

SIZE = 1152
BASE = {"target": "lpo", "env": "CartPole-v1", "profile": "smoke", "seeds": [0], "learning_rates": [2.5e-4]}


def _vectors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(SIZE).astype(np.float32) * 0.01 for _ in range(count)]


def test_a_request_trains_artifacts_or_parameters_never_both() -> None:
    encoded = [encode_parameters(v) for v in _vectors(3)]
    request = TrainRequest(**BASE, parameters=encoded, network="lpo_network")
    assert request.candidates == 3 and request.subset(1, 3).parameters == encoded[1:]
    assert TrainRequest(**BASE).candidates == 1 and TrainRequest(**BASE, artifacts=["a", "b"]).candidates == 2
    for bad in ({"parameters": encoded, "network": "lpo_network", "artifacts": ["a"]},
                {"parameters": encoded}, {"network": "lpo_network"}, {"parameters": [], "network": "lpo_network"}):
        with pytest.raises(ValidationError):
            TrainRequest(**BASE, **bad)
    again = TrainRequest.model_validate_json(request.model_dump_json())  # what crosses to the trainer
    assert np.array_equal(decode_parameters(again.parameters[0], SIZE), _vectors(1)[0])


def test_a_vector_is_addressed_by_its_float32_bytes() -> None:
    vector = _vectors(1)[0]
    assert parameters_sha256(encode_parameters(vector)) == hashlib.sha256(vector.astype("<f4").tobytes()).hexdigest()
    assert parameters_sha256(encode_parameters(vector.astype(np.float64))) == \
        parameters_sha256(encode_parameters(vector))  # the ES mean (float64) is sent and stored as float32


class _Trainer:
    """A trainer that refuses the second vector and trains nothing (what the worker reads back)."""

    def __init__(self) -> None:
        self.requests: list[TrainRequest] = []

    def train(self, request: TrainRequest, timeout: float) -> TrainResponse:
        self.requests.append(request)
        return TrainResponse(refused={1: "network parameters must be finite: value 7 is nan"})


def test_the_worker_sends_the_vectors_and_reports_a_refused_one() -> None:
    request = TrainRequest(**BASE, parameters=[encode_parameters(v) for v in _vectors(2)], network="lpo_network")
    trainer = _Trainer()
    results = train_batch(trainer, request, None)  # type: ignore[arg-type]
    assert trainer.requests == [request]
    assert [r.outcome for r in results] == [Outcome.error, Outcome.refused]
    assert results[1].error == "the trainer refused the parameter vector: network parameters must be finite: " \
        "value 7 is nan"


class _Anchor:
    """What the fitness reads of an anchor: its rate and its normaliser (here: return / 100)."""

    best_lr = 2.5e-4

    def normalise(self, returns: list[float], metric: Metric) -> tuple[list[float], str]:
        return [r / 100.0 for r in returns], "normalised"


def _result(per_seed: list[float]) -> EvaluationResult:
    result = EnvResult.model_construct(returns=[per_seed], learning_rates=[2.5e-4], best_lr=2.5e-4, auc_returns=None)
    return EvaluationResult(outcome=Outcome.ok, result=result)


def test_fitness_is_the_mean_normalised_score_over_seeds_and_environments(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    per_env = {"CartPole-v1": [_result([100.0, 300.0]), _result([50.0, 50.0]),
                               EvaluationResult(outcome=Outcome.nan, error="diverged")],
               "Acrobot-v1": [_result([0.0, 200.0]), _result([150.0, 150.0]), _result([10.0, 10.0])]}
    asked: list[tuple[str, list[int], float, int]] = []

    def train(settings: Settings, target: str, env: str, profile: str, seeds: list[int], rate: float,
              vectors: np.ndarray, anchor: Anchor) -> list[EvaluationResult]:
        asked.append((env, seeds, rate, len(vectors)))
        return per_env[env]

    monkeypatch.setattr(evaluation, "anchor_of", lambda *args: _Anchor())
    monkeypatch.setattr(evaluation, "train_population", train)
    vectors = np.stack(_vectors(3))
    score = evaluation.evaluate_population(Settings(cache_dir=tmp_path), "lpo", list(per_env), "smoke", "fixed",
                                           SeedPlan(score=[0, 1]), [7, 8], vectors, Metric.final)
    assert score.fitness[:2] == [pytest.approx(1.5), pytest.approx(1.0)]  # (2 + 1) / 2, (0.5 + 1.5) / 2
    assert np.isnan(score.fitness[2]) and score.errors == {2: "CartPole-v1: nan: diverged"}
    assert asked == [("CartPole-v1", [7, 8], 2.5e-4, 3), ("Acrobot-v1", [7, 8], 2.5e-4, 3)]
    steps = get_config("CartPole-v1", "smoke").env_steps + get_config("Acrobot-v1", "smoke").env_steps
    assert score.env_steps == steps * 2 * 3 and score.trainer_seconds >= 0.0


def test_train_population_checks_the_vectors_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1152"):
        evaluation.train_population(Settings(cache_dir=tmp_path), "lpo", "CartPole-v1", "smoke", [0], 1e-3,
                                    np.zeros((2, 10)), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no network"):
        evaluation.train_population(Settings(cache_dir=tmp_path), "optimizer", "CartPole-v1", "smoke", [0], 1e-3,
                                    np.zeros((2, SIZE)), None)  # type: ignore[arg-type]


def test_generation_seeds_are_fresh_each_generation_and_apart_from_every_other_purpose() -> None:
    run = Run(seed=12, seeds_per_eval=4, metatest_seeds=4, verification_seeds=32, lr_protocol="grid")
    seeds = [generation_seeds(run, g, 4) for g in range(50)]
    assert seeds[3] == generation_seeds(run, 3, 4)  # a re-run generation trains on the same seeds
    assert len({s for gen in seeds for s in gen}) == 200 and all(ES_SEED_BASE <= s < 2**31 for g in seeds for s in g)
    others = {s for phase in EvalPhase for plan in [seed_plan(run, phase, 1)]
              for s in [*(plan.choose or []), *plan.score]}
    assert others and not others & {s for gen in seeds for s in gen}
