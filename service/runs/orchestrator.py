"""The orchestrator: `advance(run_id)` is the only place that moves a run forward.

Under a row lock on the run it reads the run's jobs and candidates, schedules proposals until
`concurrency` of them are in flight and the budget is spent, then meta-tests the best candidate, the
warm start and the target's reference algorithms on the held-out environments, and finally completes
the run. Every job is a row committed before it is published; publishing twice is harmless (a job is
claimed by one worker).
It is safe to call at any time, from any process, any number of times. It leaves a stopped run alone: a
final one, or one `interrupted` (its `discovery run` got Ctrl-C) until `resume` sets it going again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Candidate, Job, Run, WebhookEndpoint
from service.proposers import ast_hash
from service.proposers.es import MAX_GENERATIONS
from service.runs.events import emit
from service.runs.provenance import provenance
from service.runs.spec import Budget, ESProposerSpec, Extension, RunSpec, spec_of
from service.webhooks import new_secret
from workers.targets import TARGETS
from workers.vocabulary import (
    CandidateStatus,
    EventType,
    JobKind,
    JobStatus,
    Outcome,
    RunStatus,
    Task,
    TaskKind,
)

log = logging.getLogger(__name__)

Publish = Callable[[list[Task]], None]  # hands the tasks to the executor
OPEN_JOB = (JobStatus.PENDING, JobStatus.CLAIMED)
SEARCH_JOBS = (JobKind.PROPOSE, JobKind.EVALUATE, JobKind.REEVALUATE, JobKind.DISTILL)


def lock_run(session: Session, run_id: str) -> Run | None:
    return session.execute(select(Run).where(Run.id == run_id).with_for_update()).scalar_one_or_none()


def add_job(session: Session, run: Run, kind: JobKind, dedupe_key: str, candidate_id: str | None = None,
            env: str | None = None, proposal_index: int | None = None, round_: int | None = None) -> Job | None:
    """A new pending job unless one with the same dedupe key exists (then None)."""
    if session.execute(select(Job.id).where(Job.dedupe_key == dedupe_key)).first():
        return None
    job = Job(run_id=run.id, kind=kind, dedupe_key=dedupe_key, candidate_id=candidate_id, env=env,
              proposal_index=proposal_index, round=round_)
    session.add(job)
    session.flush()
    return job


def request_hash(spec: RunSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def create_run(session: Session, spec: RunSpec, owner_key_id: str | None = None,
               idempotency_key: str | None = None, config: dict[str, Any] | None = None) -> tuple[Run, list[Job]]:
    """Insert the run, its warm-start candidate and that candidate's evaluation job (not yet published)."""
    run = Run(
        owner_key_id=owner_key_id,
        status=RunStatus.QUEUED,
        target=spec.target,
        train_envs=spec.environments.train,
        test_envs=spec.environments.test,
        profile=spec.profile,
        proposer=spec.proposer.model_dump(mode="json"),
        budget=spec.budget.model_dump(mode="json"),
        search=spec.search.model_dump(mode="json"),
        concurrency=spec.concurrency,
        seed=spec.seed,
        seeds_per_eval=spec.seeds_per_eval,
        metatest_seeds=spec.metatest_seeds,
        verification_seeds=spec.verification_seeds,
        confidence=spec.confidence,
        metric=spec.metric,
        lr_protocol=spec.learning_rate,
        config={"spec": spec.model_dump(mode="json"), "provenance": provenance(), **(config or {})},
        idempotency_key=idempotency_key,
        request_hash=request_hash(spec),
    )
    session.add(run)
    session.flush()
    if spec.webhook is not None:
        session.add(WebhookEndpoint(run_id=run.id, owner_key_id=owner_key_id, url=str(spec.webhook.url),
                                    secret=new_secret(), events=list(spec.webhook.events)))
    warm = TARGETS[spec.target].warm_start
    candidate = Candidate(run_id=run.id, index=0, is_warm_start=True, name="warm start",
                          thought="The hand-made algorithm every candidate is scored against.",
                          code=warm, parent_ids=[], ast_hash=ast_hash(warm), status=CandidateStatus.PENDING)
    session.add(candidate)
    session.flush()
    job = add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}", candidate_id=candidate.id)
    return run, [job] if job else []


def budget_spent(run: Run, proposals: int) -> str | None:
    """Why the search must stop proposing, or None while there is budget left (an ES run's proposals are its
    generations)."""
    budget = Budget.model_validate(run.budget)
    proposer = spec_of(run).proposer
    if isinstance(proposer, ESProposerSpec):
        if proposals >= proposer.es.generations:
            return "generations"
    elif proposals >= budget.candidates:
        return "candidates"
    if budget.tokens is not None and run.tokens_used >= budget.tokens:
        return "tokens"
    if budget.cost_usd is not None and run.cost_usd >= budget.cost_usd:
        return "cost"
    if budget.wall_seconds is not None and run.started_at is not None:
        if (utcnow() - run.started_at).total_seconds() >= budget.wall_seconds:
            return "wall time"
    return None


def discovery_message(run: Run) -> str:
    """Whether the run found an algorithm that beats the warm start, said plainly."""
    seeds = f"at {run.verification_seeds} verification seeds and {run.confidence:.0%} confidence"
    if run.best_verdict == "better":
        return f"a discovery: the best candidate beats the warm start {seeds}"
    if run.best_verdict is None:
        return f"no candidate beat the warm start {seeds}: the best is the warm start"
    return (f"no candidate beat the warm start {seeds}; the best observed one is {run.best_verdict}, "
            "not distinguishable from the warm start")


def run_summary(run: Run) -> dict[str, Any]:
    return {"run_id": run.id, "status": run.status, "target": run.target, "best_candidate_id": run.best_candidate_id,
            "best_score": run.best_score, "best_verdict": run.best_verdict, "discovery": run.best_verdict == "better",
            "discovery_message": discovery_message(run),
            "links": {"run": f"/v1/runs/{run.id}",
                                                    "best": f"/v1/runs/{run.id}/best.py"}}


def _advance_locked(session: Session, run: Run) -> list[Job]:
    new_jobs: list[Job] = []
    if run.status == RunStatus.QUEUED:
        run.status = RunStatus.RUNNING
        run.started_at = utcnow()
        emit(session, run.id, EventType.RUN_STARTED, run_summary(run))
    jobs = session.scalars(select(Job).where(Job.run_id == run.id)).all()
    open_jobs = [j for j in jobs if j.status in OPEN_JOB]

    if run.status == RunStatus.RUNNING and run.best_candidate_id is None:
        return new_jobs  # proposals start once the warm start has set the scale (and the baselines)
    if run.status == RunStatus.RUNNING:
        in_flight = sum(1 for j in open_jobs if j.kind in SEARCH_JOBS)
        proposals = sum(1 for j in jobs if j.kind == JobKind.PROPOSE)
        room = _room(run, open_jobs, in_flight)
        while room > 0 and budget_spent(run, proposals) is None:
            proposals += 1
            job = add_job(session, run, JobKind.PROPOSE, f"propose:{run.id}:{proposals}", proposal_index=proposals)
            if job:
                new_jobs.append(job)
            in_flight += 1
            room -= 1
        if in_flight == 0 and budget_spent(run, proposals) is not None:
            run.status = RunStatus.COMPLETING
            finalists = [c for c in (run.best_candidate_id, _warm_start_id(session, run)) if c]
            finalists += add_references(session, run)
            for candidate_id in dict.fromkeys(finalists):
                for env in run.test_envs:
                    job = add_job(session, run, JobKind.METATEST, f"metatest:{candidate_id}:{env}",
                                  candidate_id=candidate_id, env=env)
                    if job:
                        new_jobs.append(job)
            open_jobs = new_jobs[:]

    if run.status == RunStatus.COMPLETING and not any(j.kind == JobKind.METATEST for j in open_jobs):
        finish_run(session, run, RunStatus.COMPLETED)
    return new_jobs


def _room(run: Run, open_jobs: list[Job], in_flight: int) -> int:
    """How many proposals may start now: up to `concurrency` search jobs in flight; an ES run's generations one at
    a time (each asks from the state the one before told), beside its network candidates' evaluations."""
    if spec_of(run).proposer.kind == "es":
        return 0 if any(j.kind == JobKind.PROPOSE for j in open_jobs) else 1
    return run.concurrency - in_flight


def add_references(session: Session, run: Run) -> list[str]:
    """The target's reference algorithms as candidates of the run (indices -1, -2, ...), to meta-test."""
    ids = []
    for k, reference in enumerate(TARGETS[run.target].references, start=1):
        existing = session.execute(select(Candidate.id).where(Candidate.run_id == run.id,
                                                              Candidate.reference == reference.name)).scalar()
        if existing is None:
            candidate = Candidate(run_id=run.id, index=-k, reference=reference.name, name=reference.name,
                                  thought=reference.description, code=reference.code, parent_ids=[],
                                  ast_hash=hashlib.sha256(f"reference:{reference.name}".encode()).hexdigest(),
                                  status=CandidateStatus.EVALUATED, outcome=Outcome.ok)
            session.add(candidate)
            session.flush()
            existing = candidate.id
        ids.append(existing)
    return ids


def _warm_start_id(session: Session, run: Run) -> str | None:
    return session.execute(
        select(Candidate.id).where(Candidate.run_id == run.id, Candidate.is_warm_start.is_(True))
    ).scalar_one_or_none()


def finish_run(session: Session, run: Run, status: RunStatus, error: str | None = None) -> None:
    """Move the run to a final status, close its pending jobs and write the event, in one transaction."""
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    session.execute(
        update(Job).where(Job.run_id == run.id, Job.status == JobStatus.PENDING)
        .values(status=JobStatus.FAILED, error=f"run {status}", finished_at=utcnow())
    )
    event = {RunStatus.COMPLETED: EventType.RUN_COMPLETED, RunStatus.FAILED: EventType.RUN_FAILED,
             RunStatus.CANCELLED: EventType.RUN_CANCELLED}[status]
    emit(session, run.id, event, {**run_summary(run), "error": error})


def advance(factory: sessionmaker[Session], run_id: str, publish: Publish) -> None:
    """Move the run as far as it can go now; publish the jobs it created after they are committed."""
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None or run.stopped:
            return
        jobs = _advance_locked(session, run)
        # Jobs the handlers added (a proposal's evaluation, a re-evaluation) go out now, not at the next sweep.
        jobs += session.scalars(select(Job).where(Job.run_id == run_id, Job.status == JobStatus.PENDING,
                                                  Job.published_at.is_(None))).all()
        to_publish = list(dict.fromkeys(Task(j.id, TaskKind(j.kind)) for j in jobs))
    if to_publish:
        publish(to_publish)


MAX_CANDIDATES = 1000  # a run's proposals, extensions included (the same cap as Budget.candidates)


def extension_mismatch(run: Run, more: Extension) -> str | None:
    """Why `more` does not fit the run's kind of budget (an es run's is its generations, any other's its
    proposals), or None when it does."""
    if spec_of(run).proposer.kind == "es":
        if more.generations is None:
            return ("an es run's budget is its generations: extend it with generations, not candidates "
                    f"(run {run.id} searches with es)")
    elif more.generations is not None:
        return (f"only an es run has generations to extend; run {run.id} searches with {run.proposer.get('kind')}: "
                "extend it with candidates")
    return None


def _extended_budget(run: Run, proposals: int, more: Extension) -> str | None:
    """Set the run's budget to `more` past what it has proposed (an es run's generations in `proposer`, another's
    candidates in `budget`); why not, when it would pass the most a run may have."""
    budget = Budget.model_validate(run.budget)
    proposer = spec_of(run).proposer
    if isinstance(proposer, ESProposerSpec):
        assert more.generations is not None  # extension_mismatch
        if proposals + more.generations > MAX_GENERATIONS:
            return f"a run has at most {MAX_GENERATIONS} generations; this one has asked {proposals}"
        es = proposer.es.model_copy(update={"generations": proposals + more.generations})
        run.proposer = proposer.model_copy(update={"es": es}).model_dump(mode="json")
    else:
        assert more.candidates is not None  # extension_mismatch
        if proposals + more.candidates > MAX_CANDIDATES:
            return f"a run has at most {MAX_CANDIDATES} proposals; this one has made {proposals}"
        # Exactly `more.candidates` more, even when another budget ended the run before its candidates did.
        budget.candidates = proposals + more.candidates
    # A limit the run does not have stays unlimited.
    if more.tokens is not None and budget.tokens is not None:
        budget.tokens += more.tokens
    if more.cost_usd is not None and budget.cost_usd is not None:
        budget.cost_usd += more.cost_usd
    if more.wall_seconds is not None and budget.wall_seconds is not None and run.started_at is not None:
        budget.wall_seconds = (utcnow() - run.started_at).total_seconds() + more.wall_seconds
    run.budget = budget.model_dump(mode="json")
    return None


def extend(factory: sessionmaker[Session], run_id: str, more: Extension) -> str | None:
    """Give a completed run more budget and set it running again from its history; why not, when it cannot be.

    Proposal indices continue where they stopped (the jobs count them), so the run gains exactly
    `more.candidates` proposals, or an es run exactly `more.generations` generations (asked from the state its last
    generation told, its sigma and learning rate going on decaying); at its new end the meta-test adds what it has
    not measured yet (a new best).
    """
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None:
            return f"no run {run_id!r}"
        mismatch = extension_mismatch(run, more)
        if mismatch is not None:
            return mismatch
        if run.status != RunStatus.COMPLETED:
            return f"only a completed run can be extended; run {run_id} is {run.status}"
        proposals = session.scalar(select(func.count()).select_from(Job).where(
            Job.run_id == run.id, Job.kind == JobKind.PROPOSE)) or 0
        too_many = _extended_budget(run, proposals, more)
        if too_many is not None:
            session.rollback()
            return too_many
        spent = budget_spent(run, proposals)
        if spent is not None:
            session.rollback()
            return f"the run's {spent} budget is still spent: extend it too"
        run.status, run.finished_at, run.error = RunStatus.RUNNING, None, None
        emit(session, run.id, EventType.RUN_STARTED, {**run_summary(run),
                                                       "extended_by": more.model_dump()})
        return None


def cancel(factory: sessionmaker[Session], run_id: str) -> bool:
    """Stop new work and mark the run cancelled; in-flight evaluations end on their own. False if already final."""
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None or run.ended:
            return False
        finish_run(session, run, RunStatus.CANCELLED)
        return True


def interrupt(factory: sessionmaker[Session], run_id: str) -> bool:
    """Stop the run where it stands (the `discovery run` running it got Ctrl-C or SIGTERM): it becomes
    `interrupted`, its claimed jobs go back to pending and none counts as published, so no worker, sweeper or
    runtime start-up takes them until `resume`. False if the run is missing or already stopped."""
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None or run.stopped:
            return False
        run.status = RunStatus.INTERRUPTED
        run.config = {**run.config, "interrupted_at": utcnow().isoformat()}
        session.execute(update(Job).where(Job.run_id == run.id, Job.status.in_(OPEN_JOB))
                        .values(status=JobStatus.PENDING, lease_owner=None, lease_until=None, published_at=None))
        emit(session, run.id, EventType.RUN_INTERRUPTED, run_summary(run))
        return True


def resume(factory: sessionmaker[Session], run_id: str) -> str | None:
    """Set an interrupted run going again where it stopped (searching, or meta-testing once it had begun);
    the time it stood still does not count against a wall-time budget. Why not, when it cannot be. `advance`
    then publishes its pending jobs."""
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None:
            return f"no run {run_id!r}"
        if run.status != RunStatus.INTERRUPTED:
            return f"only an interrupted run can be resumed; run {run_id} is {run.status}"
        meta_testing = session.execute(select(Job.id).where(Job.run_id == run.id, Job.kind == JobKind.METATEST)
                                       .limit(1)).first() is not None
        run.status = (RunStatus.QUEUED if run.started_at is None else
                      RunStatus.COMPLETING if meta_testing else RunStatus.RUNNING)
        config = dict(run.config)
        stopped = config.pop("interrupted_at", None)
        if stopped is not None and run.started_at is not None:
            run.started_at = run.started_at + (utcnow() - datetime.fromisoformat(stopped))
        run.config = config
        if run.status != RunStatus.QUEUED:  # a queued run emits run.started when advance starts it
            emit(session, run.id, EventType.RUN_STARTED, {**run_summary(run), "resumed": True})
        return None
