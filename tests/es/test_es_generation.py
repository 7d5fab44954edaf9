"""An ES run's generations, without training (the population's evaluation is a stand-in with a smooth fitness):
the orchestrator schedules one generation at a time and stops at the spec's generations; each generation writes
its row, the state it told, in the transaction that tells it; a worker killed mid-generation leaves its job to the
sweeper, and the re-run asks the identical population; every `every_k` generations and at the last the mean
becomes a network candidate with its evaluation; a generation whose every member fails fails the run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Candidate, ESGeneration, Job, ParameterVector, Run
from service.evaluation import PopulationScore
from service.executors.base import sweep
from service.proposers.es import ESSettings, ESState, ask, initial_state, tell
from service.runs import jobs as jobs_module
from service.runs.jobs import es as es_job
from service.runs.jobs.claim import claim_batch
from service.runs.orchestrator import advance, create_run
from service.runs.spec import RunSpec
from service.settings import Settings
from workers.results import EvaluationResult, SeedPlan
from workers.vocabulary import CandidateKind, CandidateStatus, JobKind, JobStatus, Metric, Outcome, RunStatus, Task

DIM = 1152
GOAL = np.random.default_rng(7).standard_normal(DIM) * 0.05


class Recorder:
    """The stand-in evaluation: fitness = -|x - GOAL|^2 per member; records what it was asked to train."""

    def __init__(self, fail_after_ask: bool = False, fitness: float | None = None) -> None:
        self.calls: list[tuple[np.ndarray, list[int]]] = []
        self.fail_after_ask, self.fitness = fail_after_ask, fitness

    def __call__(self, settings: Settings, target: str, envs: list[str], profile: str, protocol: str, plan: SeedPlan,
                 seeds: list[int], vectors: np.ndarray, metric: Metric) -> PopulationScore:
        self.calls.append((vectors.copy(), list(seeds)))
        if self.fail_after_ask:
            raise KeyboardInterrupt("the worker is killed mid-generation")  # not an Exception: nothing catches it
        fitness = [self.fitness if self.fitness is not None else -float(np.sum((v - GOAL) ** 2)) for v in vectors]
        errors = {i: "nan: diverged" for i, f in enumerate(fitness) if not np.isfinite(f)}
        return PopulationScore(fitness=fitness, errors=errors, env_steps=len(vectors) * len(seeds) * 16_384,
                               trainer_seconds=0.25)


class Published(list[Task]):
    def __call__(self, tasks: list[Task]) -> None:
        self.extend(tasks)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url="sqlite://", broker_url=None, cache_dir=tmp_path)


def _es_run(factory: sessionmaker[Session], generations: int = 3, every_k: int = 2) -> str:
    spec = RunSpec.model_validate({"profile": "smoke", "environments": {"train": ["CartPole-v1"]}, "seed": 3,
                                   "proposer": {"kind": "es", "every_k": every_k, "seeds_per_member": 2,
                                                "es": {"population": 4, "generations": generations}}})
    with session_scope(factory) as session:
        run, _ = create_run(session, spec)
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run.id, Candidate.is_warm_start))
        run.best_candidate_id, run.best_score = warm.id, 1.0  # the warm start is scored: generations may start
        session.execute(update(Job).where(Job.run_id == run.id).values(status=JobStatus.DONE))
        return run.id


def _open_generation(factory: sessionmaker[Session], run_id: str) -> Job | None:
    with session_scope(factory) as session:
        job = session.scalar(select(Job).where(Job.run_id == run_id, Job.kind == JobKind.PROPOSE,
                                               Job.status.in_([JobStatus.PENDING, JobStatus.CLAIMED])))
        if job is not None:
            session.expunge(job)
        return job


def test_a_worker_killed_mid_generation_resumes_it_with_the_identical_population(
        session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, published = _es_run(session_factory), Published()
    advance(session_factory, run_id, published)
    job = _open_generation(session_factory, run_id)
    assert job is not None and job.proposal_index == 1 and [t.id for t in published] == [job.id]

    killed = Recorder(fail_after_ask=True)
    assert claim_batch(session_factory, job.id, "doomed-worker", 8) is not None
    with pytest.raises(KeyboardInterrupt):
        es_job.run_generation(session_factory, settings, job.id, killed)
    with session_scope(session_factory) as session:  # nothing of the generation was written
        assert session.scalars(select(ESGeneration)).all() == []
        assert session.get(Job, job.id).status == JobStatus.CLAIMED
        session.execute(update(Job).where(Job.id == job.id).values(lease_until=utcnow() - timedelta(seconds=1)))

    published.clear()
    sweep(session_factory, published)  # the lease lapsed: the sweeper re-publishes the job
    assert job.id in [t.id for t in published]
    rerun = Recorder()
    monkeypatch.setattr("service.evaluation.evaluate_population", rerun)
    monkeypatch.setattr(es_job, "evaluate_population", rerun)
    jobs_module.run_job(session_factory, settings, job.id, published)

    (asked, seeds), = killed.calls
    (again, seeds_again), = rerun.calls
    assert np.array_equal(asked, again) and seeds == seeds_again  # the same population, on the same seeds
    with session_scope(session_factory) as session:
        row = session.get(ESGeneration, (run_id, 0))
        assert row is not None and len(row.fitness) == 4 and row.env_steps == 4 * 2 * 16_384
        assert row.trainer_seconds == 0.25 and row.seeds == seeds
        assert ESState.from_dict(row.state).generation == 1
        assert session.get(Job, job.id).status == JobStatus.DONE
    following = _open_generation(session_factory, run_id)
    assert following is not None and following.proposal_index == 2  # advance scheduled the next generation

    # A re-published job of a told generation does nothing (its row is there).
    with session_scope(session_factory) as session:
        session.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.PENDING))
    jobs_module.run_job(session_factory, settings, job.id, published)
    assert len(rerun.calls) == 1


def test_an_es_run_climbs_one_generation_at_a_time_and_makes_network_candidates(
        session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, published, evaluate = _es_run(session_factory, generations=3, every_k=2), Published(), Recorder()
    monkeypatch.setattr(es_job, "evaluate_population", evaluate)
    advance(session_factory, run_id, published)
    while (job := _open_generation(session_factory, run_id)) is not None:
        with session_scope(session_factory) as session:  # one generation at a time
            assert session.query(Job).filter(Job.run_id == run_id, Job.kind == JobKind.PROPOSE,
                                             Job.status == JobStatus.PENDING).count() == 1
        jobs_module.run_job(session_factory, settings, job.id, published)
    with session_scope(session_factory) as session:
        rows = session.scalars(select(ESGeneration).where(ESGeneration.run_id == run_id)
                               .order_by(ESGeneration.generation)).all()
        assert [r.generation for r in rows] == [0, 1, 2]
        assert len({tuple(r.seeds) for r in rows}) == 3  # fresh seeds each generation
        means = [np.asarray(ESState.from_dict(r.state).mean) for r in rows]
        es = ESSettings(population=4, generations=3)
        state = initial_state(es, DIM, seed=3)
        for row, (population, _) in zip(rows, evaluate.calls, strict=True):  # each row is the told generation
            assert np.array_equal(population, ask(state, es))
            state = tell(state, es, population, np.asarray(row.fitness, dtype=np.float64))
            assert ESState.from_dict(row.state) == state
        networks = session.scalars(select(Candidate).where(Candidate.run_id == run_id,
                                                           Candidate.kind == CandidateKind.NETWORK)
                                   .order_by(Candidate.index)).all()
        assert [(c.index, c.es_generation) for c in networks] == [(2, 2), (3, 3)]  # every 2, and the last
        for candidate, mean in zip(networks, (means[1], means[2]), strict=True):
            vector = session.get(ParameterVector, candidate.parameters_sha256)
            assert vector.network == candidate.network == "lpo_network" and vector.size == DIM
            assert np.array_equal(np.frombuffer(vector.data, dtype="<f4"), mean.astype(np.float32))
            assert session.scalar(select(Job).where(Job.candidate_id == candidate.id)).kind == JobKind.EVALUATE
        proposes = session.query(Job).filter(Job.run_id == run_id, Job.kind == JobKind.PROPOSE).count()
        assert proposes == 3  # the budget is the generations
        assert session.get(Run, run_id).status == RunStatus.RUNNING  # its network candidates are still evaluating


def test_a_generation_whose_every_member_fails_fails_the_run(
        session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, published = _es_run(session_factory), Published()
    monkeypatch.setattr(es_job, "evaluate_population", Recorder(fitness=float("nan")))
    advance(session_factory, run_id, published)
    job = _open_generation(session_factory, run_id)
    assert job is not None
    jobs_module.run_job(session_factory, settings, job.id, published)
    with session_scope(session_factory) as session:
        run = session.get(Run, run_id)
        assert run.status == RunStatus.FAILED and "every member of ES generation 0 failed" in run.error
        assert session.get(Job, job.id).status == JobStatus.FAILED


def test_a_network_candidate_is_trained_from_its_vector_never_traced(
        session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, published = _es_run(session_factory, generations=1, every_k=1), Published()
    monkeypatch.setattr(es_job, "evaluate_population", Recorder())
    advance(session_factory, run_id, published)
    job = _open_generation(session_factory, run_id)
    assert job is not None
    jobs_module.run_job(session_factory, settings, job.id, published)
    trained: list[list[object]] = []

    def evaluate_artifacts(settings: Settings, target: str, env: str, profile: str, protocol: str, plan: SeedPlan,
                           artifacts: list[object], chosen: list[float | None], check_rules: bool = False
                           ) -> tuple[list[EvaluationResult], None]:
        trained.append(artifacts)
        return [EvaluationResult(outcome=Outcome.refused, error="the trainer refused it") for _ in artifacts], None

    def trace_many(settings: Settings, target: str, codes: list[str]) -> list[object]:
        assert codes == [], "a network candidate is never traced"
        return []

    monkeypatch.setattr("service.runs.jobs.evaluate.evaluate_artifacts", evaluate_artifacts)
    monkeypatch.setattr("service.runs.jobs.evaluate.trace_many", trace_many)
    with session_scope(session_factory) as session:
        candidate = session.scalar(select(Candidate).where(Candidate.run_id == run_id,
                                                           Candidate.kind == CandidateKind.NETWORK))
        evaluate = session.scalar(select(Job).where(Job.candidate_id == candidate.id))
        mean = ESState.from_dict(session.get(ESGeneration, (run_id, 0)).state).mean
    jobs_module.run_job(session_factory, settings, evaluate.id, published)
    (vector,), = trained
    assert isinstance(vector, np.ndarray) and np.array_equal(vector, np.asarray(mean, dtype=np.float32))
    with session_scope(session_factory) as session:
        candidate = session.get(Candidate, candidate.id)
        assert candidate.status == CandidateStatus.FAILED and candidate.outcome == Outcome.refused
