"""The evaluation jobs (`evaluate`, `reevaluate`, `metatest`): train a claimed batch of candidates, env by env.

Each candidate is traced once (its artifact stored; re-evaluation and meta-test train the same bytes);
results already recorded are not produced again (an evaluation row per candidate, environment, phase and
round), and `service/runs/verdicts.py` records what the rows mean. With early stopping, a candidate far
below the run's median on the first environment is not trained on the others (`_stop_if_hopeless`). A network
candidate (an ES mean) is not traced: its stored parameter vector is trained, in a batch of its own kind.
"""

from __future__ import annotations

import base64
from statistics import median

import numpy as np
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Artifact, Candidate, Evaluation, Job, ParameterVector, Run
from service.db.text import ERROR_CHARS, storable
from service.evaluation import EnvScore, Trainable, anchor_row, env_score, evaluate_artifacts, trace_many
from service.runs.jobs.propose import store_artifact
from service.runs.protocol import seed_plan
from service.runs.spec import EarlyStoppingSpec, spec_of
from service.runs.verdicts import record_evaluation
from service.settings import Settings
from workers.results import EvaluationResult, SeedPlan
from workers.vocabulary import CandidateKind, CandidateStatus, EvalPhase, JobKind, Metric, Outcome

PHASE_OF = {JobKind.EVALUATE: EvalPhase.TRAIN, JobKind.REEVALUATE: EvalPhase.REEVAL, JobKind.METATEST: EvalPhase.TEST}


class _Pending(BaseModel):
    """One claimed evaluation job, as plain values (no ORM object crosses the long-running work)."""

    job_id: str
    candidate_id: str
    is_warm_start: bool
    code: str
    artifact_sha256: str | None
    parameters_sha256: str | None = None  # a network candidate's vector (it is trained, not traced)
    envs: list[str]
    done: dict[str, str]  # env -> outcome of an evaluation already recorded
    rates: dict[str, float]  # env -> the learning rate the search chose (re-evaluation under `grid`)


def _load_batch(factory: sessionmaker[Session], job_ids: list[str]
                ) -> tuple[Run, EvalPhase, int, SeedPlan, list[_Pending]]:
    """Read the claimed jobs; search candidates become `evaluating` (committed here)."""
    with session_scope(factory) as session:
        jobs = [session.get(Job, job_id) for job_id in job_ids]
        run = session.get(Run, jobs[0].run_id)
        phase, round_ = PHASE_OF[JobKind(jobs[0].kind)], jobs[0].round or 0
        pending = []
        for job in jobs:
            candidate = session.get(Candidate, job.candidate_id)
            if phase == EvalPhase.TRAIN and candidate.status == CandidateStatus.PENDING:
                candidate.status = CandidateStatus.EVALUATING
            rows = session.scalars(select(Evaluation).where(Evaluation.candidate_id == candidate.id,
                                                            Evaluation.phase.in_([phase, EvalPhase.TRAIN]))).all()
            pending.append(_Pending(
                job_id=job.id, candidate_id=candidate.id, is_warm_start=candidate.is_warm_start, code=candidate.code,
                artifact_sha256=candidate.artifact_sha256,
                parameters_sha256=candidate.parameters_sha256 if candidate.kind == CandidateKind.NETWORK else None,
                done={e.env: e.outcome for e in rows if e.phase == phase and e.round == round_},
                rates={e.env: e.best_lr for e in rows if e.phase == EvalPhase.TRAIN and e.best_lr is not None}
                if phase == EvalPhase.REEVAL else {},
                envs=[job.env] if phase == EvalPhase.TEST else
                run.train_envs[:1] if phase == EvalPhase.TRAIN and candidate.stopped_early else list(run.train_envs)))
        session.expunge(run)
        return run, phase, round_, seed_plan(run, phase, round_ or None), pending


def _artifacts_for(factory: sessionmaker[Session], settings: Settings, target: str, items: list[_Pending]
                   ) -> list[tuple[Trainable | None, EvaluationResult | None]]:
    """Each candidate's artifact (a network candidate's parameter vector), or its failed trace as a result.

    A candidate is traced once; its artifact is stored, and re-evaluation and meta-test train the same bytes.
    """
    found: dict[str, Trainable] = {}
    with session_scope(factory) as session:
        for item in items:
            if item.parameters_sha256 is not None:
                vector = session.get(ParameterVector, item.parameters_sha256)
                found[item.candidate_id] = np.frombuffer(vector.data, dtype="<f4").astype(np.float32)
                continue
            row = session.get(Artifact, item.artifact_sha256) if item.artifact_sha256 else None
            if row is not None:
                found[item.candidate_id] = base64.b64encode(row.data).decode()
    to_trace = [item for item in items if item.candidate_id not in found]
    failed: dict[str, EvaluationResult] = {}
    for item, traced in zip(to_trace, trace_many(settings, target, [i.code for i in to_trace]), strict=True):
        if traced.outcome is not Outcome.ok or traced.artifact is None:
            failed[item.candidate_id] = EvaluationResult(outcome=traced.outcome, error=traced.error,
                                                         seconds=traced.seconds)
            continue
        with session_scope(factory) as session:
            digest = store_artifact(session, target, base64.b64decode(traced.artifact))
            session.execute(update(Candidate).where(Candidate.id == item.candidate_id)
                            .values(artifact_sha256=digest))
        found[item.candidate_id] = traced.artifact
    return [(found.get(i.candidate_id), failed.get(i.candidate_id)) for i in items]


def _store(factory: sessionmaker[Session], item: _Pending, env: str, phase: EvalPhase, round_: int,
           seeds: list[int], result: EvaluationResult, scored: EnvScore | None) -> None:
    r = result.result
    with session_scope(factory) as session:
        session.add(Evaluation(
            candidate_id=item.candidate_id, env=env, phase=phase, round=round_, seeds=seeds, outcome=result.outcome,
            error=storable(result.error, ERROR_CHARS, keep_tail=True) if result.error else None,
            learning_rates=r.learning_rates if r else [], returns=r.returns if r else None,
            curves={"learning_rates": r.learning_rates, "returns": r.curves, "diagnostics": r.diagnostics,
                    "seed_curves": r.seed_curves, "auc_returns": r.auc_returns,
                    "lr_choice": r.lr_choice.model_dump() if r.lr_choice else None} if r else None,
            best_lr=r.best_lr if r else None, final_return=r.final_return if r else None,
            normalised_score=scored.comparison.score if scored else None,
            score_basis=scored.basis if scored else None, stats=scored.model_dump(mode="json") if scored else None,
            compile_seconds=r.compile_seconds if r else None,
            train_seconds=r.train_seconds if r else None, artifact_sha256=r.artifact_sha256 if r else None,
            platform=r.platform if r else None, device=r.device if r else None,
            env_steps=result.env_steps, trainer_seconds=result.trainer_seconds,
        ))
    item.done[env] = result.outcome


def evaluate_jobs(factory: sessionmaker[Session], settings: Settings, job_ids: list[str]) -> None:
    """Evaluate a batch of claimed jobs: trace each candidate once, then train the batch env by env.

    The warm start's search evaluation is the anchor itself (its own artifact on the anchor seeds); everywhere
    else, the warm start is trained through its artifact like any candidate (the meta-test's fresh seeds).
    """
    run, phase, round_, plan, pending = _load_batch(factory, job_ids)
    target, profile, protocol = run.target, run.profile, run.lr_protocol
    confidence, metric = run.confidence, Metric(run.metric)
    early_stopping = spec_of(run).search.early_stopping if len(run.train_envs) > 1 else None
    artifacts: dict[str, Trainable] = {}
    is_anchor = phase == EvalPhase.TRAIN
    needed = [item for item in pending if not (item.is_warm_start and is_anchor)
              and any(e not in item.done for e in item.envs)
              and all(outcome == Outcome.ok for outcome in item.done.values())]
    for item, (artifact, failed) in zip(needed, _artifacts_for(factory, settings, target, needed), strict=True):
        if failed is not None:
            _store(factory, item, next(e for e in item.envs if e not in item.done), phase, round_, plan.score,
                   failed, None)
        elif artifact is not None:
            artifacts[item.candidate_id] = artifact
    for env in dict.fromkeys(e for item in pending for e in item.envs):
        todo = [i for i in pending if env in i.envs and env not in i.done
                and all(outcome == Outcome.ok for outcome in i.done.values())]
        for item in (i for i in todo if i.is_warm_start and is_anchor):
            result, anchor = anchor_row(settings, target, env, profile, protocol, plan)
            _store(factory, item, env, phase, round_, anchor.seeds, result,
                   env_score(anchor.result, anchor, confidence, metric))
        trainable = [i for i in todo if i.candidate_id in artifacts]
        for batch in _by_kind(trainable, artifacts):
            results, anchor = evaluate_artifacts(settings, target, env, profile, protocol, plan,
                                                 [artifacts[i.candidate_id] for i in batch],
                                                 [i.rates.get(env) for i in batch], check_rules=True)
            for item, result in zip(batch, results, strict=True):
                _store(factory, item, env, phase, round_, plan.score, result,
                       env_score(result.result, anchor, confidence, metric) if result.result else None)
        if phase == EvalPhase.TRAIN and early_stopping is not None and env == run.train_envs[0]:
            for item in trainable:
                _stop_if_hopeless(factory, run.id, item, env, early_stopping)
    for item in pending:
        record_evaluation(factory, item.job_id, phase, round_)


def _by_kind(items: list[_Pending], artifacts: dict[str, Trainable]) -> list[list[_Pending]]:
    """A batch as the trainer takes it: code candidates (artifacts) and network candidates (vectors) apart, and
    networks of one size (a distilled student's width) together."""
    code = [i for i in items if i.parameters_sha256 is None]
    sizes: dict[int, list[_Pending]] = {}
    for item in (i for i in items if i.parameters_sha256 is not None):
        sizes.setdefault(int(np.size(artifacts[item.candidate_id])), []).append(item)
    return [group for group in (code, *sizes.values()) if group]


def _stop_if_hopeless(factory: sessionmaker[Session], run_id: str, item: _Pending, env: str,
                      rule: EarlyStoppingSpec) -> None:
    """Successive halving after the first environment: a candidate scoring more than `margin` below the median
    of the run's other candidates there (once `min_evaluated` have a score) is not trained on the others."""
    with session_scope(factory) as session:
        rows = session.execute(select(Evaluation.candidate_id, Evaluation.normalised_score).join(Candidate).where(
            Candidate.run_id == run_id, Evaluation.phase == EvalPhase.TRAIN, Evaluation.env == env,
            Evaluation.outcome == Outcome.ok, Evaluation.normalised_score.is_not(None))).all()
        mine = next((value for candidate_id, value in rows if candidate_id == item.candidate_id), None)
        others = [value for candidate_id, value in rows if candidate_id != item.candidate_id]
        if mine is None or len(others) < rule.min_evaluated or mine >= median(others) - rule.margin:
            return
        session.execute(update(Candidate).where(Candidate.id == item.candidate_id).values(stopped_early=True))
    item.envs = [env]
