"""From evaluation rows to verdicts and the run's best: the search score nominates, a race on fresh seeds decides.

A candidate's search rows give its search score and interval; one above the warm start's starts a race on
verification seeds, round after round (`protocol.race_rounds`), until its verdict against the anchor is
decided or its seeds are spent. Only then can it become the run's best, and only a `better` verdict makes the
run a discovery (docs/evaluation.md).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Candidate, Evaluation, Job, Run
from service.runs.events import emit
from service.runs.orchestrator import add_job, lock_run
from service.runs.protocol import race_rounds
from workers.results import Comparison
from workers.statistics import compare
from workers.vocabulary import (
    CandidateStatus,
    EvalPhase,
    EventType,
    JobKind,
    JobStatus,
    Outcome,
    Verdict,
)


def comparison_of(rows: list[Evaluation], confidence: float, looks: int = 1) -> Comparison:
    """A candidate's rows (one per environment and round, all ok) against the anchor: per environment, the
    per-seed scores of every round together."""
    envs = list(dict.fromkeys(r.env for r in sorted(rows, key=lambda r: (r.round, r.env))))
    scores = [[s for r in sorted(rows, key=lambda r: r.round) if r.env == env for s in r.stats["scores"]]
              for env in envs]
    anchor = [next(r.stats["anchor"]["scores"] for r in rows if r.env == env) for env in envs]
    return compare(scores, anchor, confidence, looks)


def record_evaluation(factory: sessionmaker[Session], job_id: str, phase: EvalPhase, round_: int) -> None:
    """Score the candidate from its evaluation rows, move its race on or decide it, finish the job: one
    transaction."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = lock_run(session, job.run_id)
        candidate = session.get(Candidate, job.candidate_id)
        rows = session.scalars(select(Evaluation).where(Evaluation.candidate_id == candidate.id,
                                                        Evaluation.phase == phase)).all()
        job.status, job.finished_at = JobStatus.DONE, utcnow()
        failed = next((r for r in rows if r.outcome != Outcome.ok), None)
        if phase == EvalPhase.TEST:
            return
        if phase == EvalPhase.TRAIN:
            record_search(session, run, candidate, rows, failed)
        else:
            record_round(session, run, candidate, rows, failed, round_)


def record_search(session: Session, run: Run, candidate: Candidate, rows: list[Evaluation],
                   failed: Evaluation | None) -> None:
    """The search score nominates: a candidate whose point score beats the warm start starts a verification race."""
    comparison = None if failed else comparison_of(rows, run.confidence)
    candidate.status = CandidateStatus.FAILED if failed else CandidateStatus.EVALUATED
    candidate.outcome = failed.outcome if failed else Outcome.ok
    candidate.error = failed.error if failed else None
    candidate.score = comparison.score if comparison else None
    kept = {k: v for k, v in (candidate.stats or {}).items() if k == "distillation"}  # a student's provenance
    candidate.stats = kept | ({"search": comparison.model_dump(mode="json")} if comparison else {})
    candidate.evaluated_at = utcnow()
    candidate.eval_seconds = sum((r.compile_seconds or 0) + (r.train_seconds or 0) for r in rows)
    emit(session, run.id, EventType.CANDIDATE_EVALUATED,
         {"candidate_id": candidate.id, "index": candidate.index, "outcome": candidate.outcome,
          "score": candidate.score, "score_ci": list(comparison.ci) if comparison else None})
    if comparison is None or run.ended or candidate.stopped_early:
        return
    if candidate.is_warm_start:  # the anchor: the scale every verdict is read on
        candidate.verified_score = 1.0
        if run.best_candidate_id is None:
            crown(session, run, candidate)
    elif comparison.score > 1.0:
        add_job(session, run, JobKind.REEVALUATE, f"reevaluate:{candidate.id}:1", candidate_id=candidate.id,
                round_=1)


def record_round(session: Session, run: Run, candidate: Candidate, rows: list[Evaluation],
                  failed: Evaluation | None, round_: int) -> None:
    """One round of a verification race: decided (or out of seeds) ends it, else the next round's fresh seeds."""
    if failed is not None:
        candidate.stats = {**candidate.stats, "verification_error": failed.error or failed.outcome}
        return
    rounds = race_rounds(run.verification_seeds)
    comparison = comparison_of(list(rows), run.confidence, looks=len(rounds))
    candidate.stats = {**candidate.stats, "verification": comparison.model_dump(mode="json")}
    if comparison.verdict == Verdict.inconclusive and round_ < len(rounds) and not run.ended:
        add_job(session, run, JobKind.REEVALUATE, f"reevaluate:{candidate.id}:{round_ + 1}",
                candidate_id=candidate.id, round_=round_ + 1)
        return
    candidate.verdict, candidate.verified_score = comparison.verdict, comparison.score
    emit(session, run.id, EventType.CANDIDATE_EVALUATED,
         {"candidate_id": candidate.id, "index": candidate.index, "phase": "verification", "verdict": candidate.verdict,
          "verified_score": comparison.score, "score_ci": list(comparison.ci), "seeds": comparison.seeds})
    if not run.ended:
        choose_best(session, run)


def choose_best(session: Session, run: Run) -> None:
    """The run's best: the highest verified score among `better` candidates; with none, the highest among the
    `inconclusive` (shown as such); with none either, the warm start."""
    verified = session.scalars(select(Candidate).where(
        Candidate.run_id == run.id, Candidate.verdict.in_([Verdict.better, Verdict.inconclusive]),
        Candidate.verified_score.is_not(None))).all()
    better = [c for c in verified if c.verdict == Verdict.better]
    pool = better or verified
    best = max(pool, key=lambda c: (c.verified_score, -c.index)) if pool else None
    if best is not None and best.id != run.best_candidate_id:
        crown(session, run, best)


def crown(session: Session, run: Run, candidate: Candidate) -> None:
    run.best_candidate_id, run.best_score, run.best_verdict = candidate.id, candidate.verified_score, candidate.verdict
    emit(session, run.id, EventType.CANDIDATE_NEW_BEST,
         {"candidate_id": candidate.id, "index": candidate.index, "name": candidate.name,
          "verified_score": candidate.verified_score, "verdict": candidate.verdict, "run_id": run.id})
