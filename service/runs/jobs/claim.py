"""Claiming jobs: a worker takes a job (and the compatible ones waiting beside it) under a lease that a
heartbeat keeps alive while the work runs; a crashed job or run is recorded with its reason."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import claim_job, session_scope, utcnow
from service.db.models import Candidate, Job
from service.db.text import ERROR_CHARS, storable
from service.proposers import LLMCallRecord
from service.runs.jobs.llm_calls import record_calls
from service.runs.orchestrator import finish_run, lock_run
from workers.vocabulary import CandidateStatus, JobKind, JobStatus, Outcome, RunStatus

log = logging.getLogger(__name__)

LEASE_SECONDS = 20.0  # a dead worker's job is taken over within this (plus a sweep)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Heartbeat:
    """Extends claimed jobs' leases while the work runs, so a live worker keeps them and a dead one loses them."""

    def __init__(self, factory: sessionmaker[Session], job_ids: list[str], owner: str) -> None:
        self.factory, self.job_ids, self.owner = factory, job_ids, owner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(LEASE_SECONDS / 3):
            try:
                with session_scope(self.factory) as session:
                    session.execute(update(Job).where(Job.id.in_(self.job_ids), Job.lease_owner == self.owner,
                                                      Job.status == JobStatus.CLAIMED)
                                    .values(lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS)))
            except Exception:  # noqa: BLE001 - the database may be briefly away; the next beat retries
                log.warning("heartbeat for jobs %s failed", self.job_ids, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def claim_batch(factory: sessionmaker[Session], job_id: str, owner: str, batch_size: int
                ) -> tuple[str, JobKind, list[str]] | None:
    """Claim the job and, for an evaluation, up to `batch_size - 1` companions: (run id, kind, job ids); None when
    another worker holds the job or it is done."""
    with session_scope(factory) as session:
        if not claim_job(session, job_id, owner, LEASE_SECONDS):
            return None
        job = session.get(Job, job_id)
        assert job is not None
        job_ids = [job_id]
        if job.kind not in (JobKind.PROPOSE, JobKind.DISTILL):
            job_ids += claim_companions(session, job, owner, batch_size - 1)
        return job.run_id, JobKind(job.kind), job_ids


def claim_companions(session: Session, job: Job, owner: str, limit: int) -> list[str]:
    """Claim up to `limit` pending jobs that can train in the same program as `job`: same run, kind, env and round
    (the seeds of a verification round)."""
    if limit <= 0:
        return []
    candidates = session.scalars(
        select(Job.id).where(Job.run_id == job.run_id, Job.kind == job.kind, Job.status == JobStatus.PENDING,
                             Job.id != job.id, Job.env.is_(None) if job.env is None else Job.env == job.env,
                             Job.round.is_(None) if job.round is None else Job.round == job.round)
        .order_by(Job.created_at).limit(limit)).all()
    return [other for other in candidates if claim_job(session, other, owner, LEASE_SECONDS)]


def fail_job(factory: sessionmaker[Session], job_id: str, error: str) -> None:
    """Record a crashed job; a candidate whose search evaluation crashed gets the outcome `error`."""
    error = storable(error, ERROR_CHARS, keep_tail=True)
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.status, job.error, job.finished_at = JobStatus.FAILED, error, utcnow()
        if job.kind in (JobKind.EVALUATE, JobKind.DISTILL) and job.candidate_id:
            session.execute(update(Candidate).where(Candidate.id == job.candidate_id,
                                                    Candidate.status.in_([CandidateStatus.PENDING,
                                                                          CandidateStatus.EVALUATING]))
                            .values(status=CandidateStatus.FAILED, outcome=Outcome.error, error=error,
                                    evaluated_at=utcnow()))


def fail_run(factory: sessionmaker[Session], run_id: str, job_ids: list[str], reason: str,
             calls: list[LLMCallRecord]) -> None:
    """The run cannot go on (its proposer or sandbox is unavailable): it fails with the reason, its jobs too."""
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is not None:
            record_calls(session, run, None, calls)
            if not run.ended:
                finish_run(session, run, RunStatus.FAILED, reason)
        session.execute(update(Job).where(Job.id.in_(job_ids))
                        .values(status=JobStatus.FAILED, error=reason, finished_at=utcnow()))
