"""The ES generation: an `es` run's `propose` job (proposal index = generation + 1), one generation at a time.

Read the latest `es_generations` row (none: the zero network, PPO); ask the population, which is a function of
the run's seed and the generation only (`service.proposers.es.ask`); train every member on the generation's
shared seeds and score it (`service.evaluation.evaluate_population`); tell; and in one transaction write the
generation's row (the told state, the fitness, the seeds and the cost), every `every_k` generations (and at the
last) the mean as a network candidate with its `evaluate` job, and the job done. Nothing is written before that
transaction, so a worker killed mid-generation leaves only its claimed job, which the sweeper re-publishes
once its lease lapses; the re-run asks the identical population and trains it on the same seeds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Candidate, ESGeneration, Job, ParameterVector, Run
from service.evaluation import PopulationScore, evaluate_population
from service.proposers.es import ESState, ask, initial_state, tell
from service.runs.events import emit
from service.runs.orchestrator import add_job, lock_run
from service.runs.protocol import generation_seeds, seed_plan
from service.runs.spec import ESProposerSpec, spec_of
from service.settings import Settings
from workers.targets import TARGETS
from workers.trainer.parameters import encode_parameters, parameters_sha256
from workers.vocabulary import (
    RUN_FINAL_STATUSES,
    CandidateKind,
    CandidateStatus,
    EvalPhase,
    EventType,
    JobKind,
    JobStatus,
    Metric,
)

EvaluatePopulation = Callable[..., PopulationScore]  # `service.evaluation.evaluate_population`'s signature


class GenerationFailed(Exception):
    """Every member of a generation failed to train: the run cannot go on (it fails with the reason)."""


def es_spec(run: Run) -> ESProposerSpec:
    proposer = spec_of(run).proposer
    if not isinstance(proposer, ESProposerSpec):
        raise ValueError(f"run {run.id} is not an es run")
    return proposer


def state_before(session: Session, run: Run, generation: int) -> ESState:
    """The strategy generation `generation` asks from: the state told by the one before, or the initial one."""
    network = TARGETS[run.target].network
    assert network is not None  # the spec refuses es for a target without one
    if generation == 0:
        return initial_state(es_spec(run).es, network.parameter_count, run.seed)
    row = session.get(ESGeneration, (run.id, generation - 1))
    if row is None:
        raise RuntimeError(f"generation {generation} of run {run.id} has no told generation before it")
    return ESState.from_dict(row.state)


def _done(session: Session, job_id: str) -> None:
    job = session.get(Job, job_id)
    job.status, job.finished_at = JobStatus.DONE, utcnow()


def run_generation(factory: sessionmaker[Session], settings: Settings, job_id: str,
                   evaluate: EvaluatePopulation | None = None) -> None:
    """Ask, evaluate and tell the job's generation; write its row (and a network candidate when due) and mark
    the job done in one transaction. A generation already told is not run again."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = session.get(Run, job.run_id)
        generation = job.proposal_index - 1
        if run.status in RUN_FINAL_STATUSES or session.get(ESGeneration, (run.id, generation)) is not None:
            _done(session, job_id)
            return
        es, state = es_spec(run), state_before(session, run, generation)
        seeds = generation_seeds(run, generation, es.seeds_per_member)
        plan, run_id = seed_plan(run, EvalPhase.TRAIN), run.id
        target, envs, profile, protocol, metric = (run.target, list(run.train_envs), run.profile, run.lr_protocol,
                                                   Metric(run.metric))
    population = ask(state, es.es)
    score = (evaluate or evaluate_population)(settings, target, envs, profile, protocol, plan, seeds, population,
                                              metric)
    fitness = np.asarray(score.fitness, dtype=np.float64)
    if not np.isfinite(fitness).any():
        raise GenerationFailed(f"every member of ES generation {generation} failed to train; the first: "
                               f"{next(iter(score.errors.values()), 'no result')}")
    told = tell(state, es.es, population, fitness)
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if session.get(ESGeneration, (run_id, generation)) is None:
            session.add(ESGeneration(run_id=run_id, generation=generation, state=told.to_dict(),
                                     fitness=[f if math.isfinite(f) else None for f in score.fitness], seeds=seeds,
                                     env_steps=score.env_steps, trainer_seconds=score.trainer_seconds))
            session.flush()
            told_count = generation + 1
            if told_count % es.every_k == 0 or told_count == es.es.generations:
                add_network_candidate(session, run, told, told_count)
        _done(session, job_id)


def store_vector(session: Session, network: str, vector: np.ndarray) -> str:
    """Keep a parameter vector (once per content, as float32 bytes); its SHA-256 names it."""
    encoded = encode_parameters(vector)
    digest = parameters_sha256(encoded)
    if session.get(ParameterVector, digest) is None:
        data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        session.add(ParameterVector(sha256=digest, network=network, size=int(vector.size), data=data))
        session.flush()
    return digest


def network_note(network: str, size: int, digest: str, generations: int) -> str:
    """What a network candidate shows where a code candidate shows its code."""
    return (f"# A network candidate: {network}, {size} parameters (sha256 {digest}), the ES mean after "
            f"{generations} generations.\n# Not readable code: its parameters are data; its best.py export writes "
            "the network and its parameters as a standalone file.\n")


def add_network_candidate(session: Session, run: Run, told: ESState, generations: int) -> Candidate:
    """The ES mean after `generations` told generations as a candidate of the run, with its `evaluate` job."""
    network = TARGETS[run.target].network
    assert network is not None
    digest = store_vector(session, network.name, np.asarray(told.mean, dtype=np.float32))
    candidate = Candidate(
        run_id=run.id, index=generations, kind=CandidateKind.NETWORK, network=network.name,
        parameters_sha256=digest, es_generation=generations, name=f"ES mean, generation {generations}",
        thought=f"The mean of OpenES over {network.name} after {generations} generations.",
        code=network_note(network.name, network.parameter_count, digest, generations), parent_ids=[],
        ast_hash=hashlib.sha256(f"network:{generations}:{digest}".encode()).hexdigest(),
        status=CandidateStatus.PENDING)
    session.add(candidate)
    session.flush()
    add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}", candidate_id=candidate.id)
    emit(session, run.id, EventType.CANDIDATE_PROPOSED, {"candidate_id": candidate.id, "index": candidate.index,
                                                          "name": candidate.name})
    return candidate


def is_es_run(factory: sessionmaker[Session], run_id: str) -> bool:
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        return run is not None and spec_of(run).proposer.kind == "es"

