"""The jobs a run is made of, and how a worker runs one: claim, heartbeat, do the work, advance.

Every handler is idempotent and keyed by database rows: results already recorded are not produced
again (an evaluation row per candidate, environment and phase; a candidate per proposal index), and
the job is marked done in the same transaction that records its last result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from statistics import mean

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import claim_job, session_scope, utcnow
from service.db.models import (
    RUN_FINAL_STATUSES,
    Candidate,
    CandidateStatus,
    EvalPhase,
    Evaluation,
    EventType,
    Job,
    JobKind,
    JobStatus,
    LlmCall,
    Run,
    RunStatus,
)
from service.evaluation import run_evaluation
from service.proposers import (
    HistoryEntry,
    LLMCallRecord,
    LLMSettings,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    make_proposer,
)
from service.runs.orchestrator import Publish, add_job, advance, emit, finish_run, lock_run, seeds_for
from service.settings import Settings
from workers.baselines import BaselineError, get_baseline
from workers.results import EvaluationRequest, EvaluationResult, Outcome
from workers.rl.scoring import normalised_score
from workers.sandbox.isolate import IsolationUnavailable

log = logging.getLogger(__name__)

LEASE_SECONDS = 20.0  # a dead worker's job is taken over within this (plus a sweep)
PHASE_OF = {JobKind.EVALUATE: EvalPhase.TRAIN, JobKind.REEVALUATE: EvalPhase.REEVAL, JobKind.METATEST: EvalPhase.TEST}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Heartbeat:
    """Extends a claimed job's lease while the work runs, so a live worker keeps it and a dead one loses it."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, owner: str) -> None:
        self.factory, self.job_id, self.owner = factory, job_id, owner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(LEASE_SECONDS / 3):
            try:
                with session_scope(self.factory) as session:
                    session.execute(update(Job).where(Job.id == self.job_id, Job.lease_owner == self.owner,
                                                      Job.status == JobStatus.CLAIMED)
                                    .values(lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS)))
            except Exception:  # noqa: BLE001 - the database may be briefly away; the next beat retries
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def run_job(factory: sessionmaker[Session], settings: Settings, job_id: str, publish: Publish) -> None:
    """Claim and run one job; a job another worker holds, or that is done, is left alone."""
    owner = worker_id()
    with session_scope(factory) as session:
        if not claim_job(session, job_id, owner, LEASE_SECONDS):
            return
        job = session.get(Job, job_id)
        assert job is not None
        run_id, kind = job.run_id, JobKind(job.kind)
    handler: Callable[[sessionmaker[Session], Settings, str], None] = (
        propose if kind == JobKind.PROPOSE else evaluate
    )
    with Heartbeat(factory, job_id, owner):
        try:
            handler(factory, settings, job_id)
        except ProposerUnavailable as exc:
            _fail_run(factory, run_id, job_id, f"the proposer is unavailable: {exc.reason}", exc.llm_calls)
        except (BaselineError, IsolationUnavailable) as exc:
            _fail_run(factory, run_id, job_id, str(exc), [])
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, kind)
            _fail_job(factory, job_id, f"the {kind} job crashed: {type(exc).__name__}: {exc}")
    advance(factory, run_id, publish)


def _fail_job(factory: sessionmaker[Session], job_id: str, error: str) -> None:
    """Record a crashed job; a candidate whose search evaluation crashed gets the outcome `error`."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.status, job.error, job.finished_at = JobStatus.FAILED, error, utcnow()
        if job.kind == JobKind.EVALUATE and job.candidate_id:
            session.execute(update(Candidate).where(Candidate.id == job.candidate_id,
                                                    Candidate.status.in_([CandidateStatus.PENDING,
                                                                          CandidateStatus.EVALUATING]))
                            .values(status=CandidateStatus.FAILED, outcome=Outcome.error, error=error,
                                    evaluated_at=utcnow()))


def _fail_run(factory: sessionmaker[Session], run_id: str, job_id: str, reason: str,
              calls: list[LLMCallRecord]) -> None:
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is not None:
            _record_calls(session, run, None, calls)
            if run.status not in RUN_FINAL_STATUSES:
                finish_run(session, run, RunStatus.FAILED, reason)
        session.execute(update(Job).where(Job.id == job_id)
                        .values(status=JobStatus.FAILED, error=reason, finished_at=utcnow()))


# --- propose -------------------------------------------------------------------------------------

def proposer_config(run: Run) -> ProposerConfig:
    spec = run.proposer
    if spec["kind"] == "evolution":
        return ProposerConfig(kind="evolution")
    return ProposerConfig(kind="llm", llm=LLMSettings(
        model=spec["model"], base_url=spec.get("base_url"), temperature=spec.get("temperature"),
        send_temperature=spec.get("send_temperature", True), json_mode=spec.get("json_mode", True),
        max_tokens=spec.get("max_tokens"), price_prompt_per_1k=spec.get("price_per_1k_prompt_tokens"),
        price_completion_per_1k=spec.get("price_per_1k_completion_tokens"),
    ))


def history_entry(candidate: Candidate) -> HistoryEntry:
    evaluated = candidate.status in (CandidateStatus.EVALUATED, CandidateStatus.FAILED)
    return HistoryEntry(
        candidate_id=candidate.id, index=candidate.index, name=candidate.name, thought=candidate.thought,
        code=candidate.code, outcome=Outcome(candidate.outcome) if evaluated and candidate.outcome else None,
        score=candidate.pooled_score if candidate.pooled_score is not None else candidate.score,
        error=candidate.error, parent_ids=list(candidate.parent_ids),
    )


def build_context(session: Session, run: Run, index: int) -> ProposalContext:
    """The proposer's view of the run, rebuilt from the database (so a resumed run prompts the same)."""
    candidates = session.scalars(select(Candidate).where(Candidate.run_id == run.id, Candidate.index < index)
                                 .order_by(Candidate.index)).all()
    warm = next(c for c in candidates if c.is_warm_start)
    return ProposalContext(
        run_id=run.id, target=run.target, seed=run.seed, index=index, warm_start=history_entry(warm),
        history=[history_entry(c) for c in candidates if not c.is_warm_start],
        known_hashes={c.ast_hash for c in candidates},
    )


def _record_calls(session: Session, run: Run, candidate_id: str | None, calls: list[LLMCallRecord]) -> str | None:
    last_id = None
    for call in calls:
        row = LlmCall(run_id=run.id, candidate_id=candidate_id, **call.model_dump())
        session.add(row)
        session.flush()
        last_id = row.id
        run.tokens_used += (call.prompt_tokens or 0) + (call.completion_tokens or 0)
        run.cost_usd += call.cost_usd or 0.0
    return last_id


def propose(factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = session.get(Run, job.run_id)
        index = int(job.dedupe_key.rsplit(":", 1)[1])
        if run.status in RUN_FINAL_STATUSES or session.execute(
            select(Candidate.id).where(Candidate.run_id == run.id, Candidate.index == index)
        ).first():
            job.status, job.finished_at = JobStatus.DONE, utcnow()
            return
        context = build_context(session, run, index)
        config = proposer_config(run)
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    started = utcnow()
    proposal: Proposal = make_proposer(config, api_key=api_key, base_url=settings.openai_base_url).propose(context)
    with session_scope(factory) as session:
        run = lock_run(session, context.run_id)
        job = session.get(Job, job_id)
        known = set(session.scalars(select(Candidate.ast_hash).where(Candidate.run_id == run.id)))
        error = proposal.invalid_error
        digest = proposal.ast_hash
        if error is None and (digest is None or digest in known):
            error = "the same algorithm is already in this run"
            proposal.duplicates_skipped += 1
        if error is not None:
            digest = hashlib.sha256(f"unevaluated:{index}:{proposal.code}".encode()).hexdigest()
        candidate = Candidate(
            run_id=run.id, index=index, name=proposal.name or f"candidate {index}", thought=proposal.thought,
            code=proposal.code, parent_ids=proposal.parent_ids, ast_hash=digest,
            status=CandidateStatus.FAILED if error else CandidateStatus.PENDING,
            outcome=Outcome.invalid if error else None, error=error,
            propose_seconds=(utcnow() - started).total_seconds(),
            evaluated_at=utcnow() if error else None,
        )
        session.add(candidate)
        session.flush()
        candidate.llm_call_id = _record_calls(session, run, candidate.id, proposal.llm_calls)
        run.duplicates_skipped += proposal.duplicates_skipped
        emit(session, run.id, EventType.CANDIDATE_PROPOSED,
             {"candidate_id": candidate.id, "index": index, "name": candidate.name})
        if error is None and run.status not in RUN_FINAL_STATUSES:
            add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}", candidate_id=candidate.id)
        else:
            emit(session, run.id, EventType.CANDIDATE_EVALUATED,
                 {"candidate_id": candidate.id, "index": index, "outcome": Outcome.invalid, "score": None})
        job.status, job.finished_at = JobStatus.DONE, utcnow()


# --- evaluate, re-evaluate, meta-test --------------------------------------------------------------

def _evaluate_env(settings: Settings, run_target: str, candidate: Candidate, env: str, profile: str,
                  seeds: list[int]) -> tuple[EvaluationResult, float | None]:
    """One sandboxed evaluation and its normalised score (None when it failed)."""
    request = EvaluationRequest(target=run_target, code=candidate.code, env=env, profile=profile, seeds=seeds,
                                trusted=candidate.is_warm_start, with_random_baseline=candidate.is_warm_start)
    result = run_evaluation(settings, request)
    if candidate.is_warm_start and result.outcome is not Outcome.ok:
        raise BaselineError(f"the warm start failed on {env} ({result.outcome}): {result.error}")
    if result.result is None:
        return result, None
    measured = (lambda _req: result) if candidate.is_warm_start else (lambda req: run_evaluation(settings, req))
    baseline = get_baseline(run_target, env, profile, seeds, settings.cache_dir, measured)
    return result, normalised_score(result.result.final_return, baseline.random_return, baseline.warm_return)


def evaluate(factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = session.get(Run, job.run_id)
        candidate = session.get(Candidate, job.candidate_id)
        phase = PHASE_OF[JobKind(job.kind)]
        envs = [job.env] if phase == EvalPhase.TEST else list(run.train_envs)
        seeds = seeds_for(run, phase)
        done_envs = {e.env: e for e in session.scalars(
            select(Evaluation).where(Evaluation.candidate_id == candidate.id, Evaluation.phase == phase))}
        if phase == EvalPhase.TRAIN and candidate.status == CandidateStatus.PENDING:
            candidate.status = CandidateStatus.EVALUATING
        target, profile = run.target, run.profile
        session.expunge(candidate)
    for env in envs:
        if env in done_envs:
            if done_envs[env].outcome != Outcome.ok:
                break
            continue
        result, score = _evaluate_env(settings, target, candidate, env, profile, seeds)
        r = result.result
        with session_scope(factory) as session:
            session.add(Evaluation(
                candidate_id=candidate.id, env=env, phase=phase, seeds=seeds, outcome=result.outcome,
                error=result.error, learning_rates=r.learning_rates if r else [], returns=r.returns if r else None,
                curves={"learning_rates": r.learning_rates, "returns": r.curves} if r else None,
                best_lr=r.best_lr if r else None, final_return=r.final_return if r else None,
                normalised_score=score, compile_seconds=r.compile_seconds if r else None,
                train_seconds=r.train_seconds if r else None,
            ))
        if result.outcome is not Outcome.ok:
            break
    _record_evaluation(factory, job_id, phase)


def _record_evaluation(factory: sessionmaker[Session], job_id: str, phase: EvalPhase) -> None:
    """Score the candidate from its evaluation rows, update the run's best, finish the job: one transaction."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = lock_run(session, job.run_id)
        candidate = session.get(Candidate, job.candidate_id)
        rows = session.scalars(select(Evaluation).where(Evaluation.candidate_id == candidate.id,
                                                        Evaluation.phase == phase)).all()
        job.status, job.finished_at = JobStatus.DONE, utcnow()
        failed = next((r for r in rows if r.outcome != Outcome.ok), None)
        score = None if failed else mean(r.normalised_score for r in rows)
        if phase == EvalPhase.TEST:
            return
        if phase == EvalPhase.TRAIN:
            candidate.status = CandidateStatus.FAILED if failed else CandidateStatus.EVALUATED
            candidate.outcome = failed.outcome if failed else Outcome.ok
            candidate.error = failed.error if failed else None
            candidate.score = score
            candidate.evaluated_at = utcnow()
            candidate.eval_seconds = sum((r.compile_seconds or 0) + (r.train_seconds or 0) for r in rows)
            emit(session, run.id, EventType.CANDIDATE_EVALUATED,
                 {"candidate_id": candidate.id, "index": candidate.index, "outcome": candidate.outcome,
                  "score": score})
            if score is None or run.status in RUN_FINAL_STATUSES:
                return
            if candidate.is_warm_start:
                candidate.pooled_score = score  # the warm start defines the scale: no noise to pool away
                _crown(session, run, candidate)
            elif run.best_score is None or score > run.best_score:
                add_job(session, run, JobKind.REEVALUATE, f"reevaluate:{candidate.id}", candidate_id=candidate.id)
            return
        # Re-evaluation on fresh seeds: the run's best is chosen on the pooled result.
        if score is None or candidate.score is None:
            candidate.pooled_score = None
            return
        candidate.pooled_score = (candidate.score + score) / 2
        if run.status not in RUN_FINAL_STATUSES and (run.best_score is None or candidate.pooled_score > run.best_score):
            _crown(session, run, candidate)


def _crown(session: Session, run: Run, candidate: Candidate) -> None:
    run.best_candidate_id, run.best_score = candidate.id, candidate.pooled_score
    emit(session, run.id, EventType.CANDIDATE_NEW_BEST,
         {"candidate_id": candidate.id, "index": candidate.index, "name": candidate.name,
          "pooled_score": candidate.pooled_score, "run_id": run.id})
