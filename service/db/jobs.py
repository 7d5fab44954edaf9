"""Job claiming: a conditional UPDATE hands a job to exactly one worker, on SQLite and PostgreSQL.

A job is claimable when it is pending, or claimed under a lease that has run out (its worker died), and its
run is not interrupted (that run waits for `discovery runs resume`, even where a broker still holds its tasks).
The UPDATE's WHERE clause re-checks that state, so when two workers race for the same job the
database lets only one of them change the row; the other sees rowcount 0.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import Job, Run, utcnow
from workers.vocabulary import JobStatus, RunStatus


def claim_job(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Claim job `job_id` for `owner` for `lease_seconds`; True if this caller got it.

    Flushes but does not commit: commit promptly so that other workers stop waiting on the row.
    """
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.PENDING,
        and_(Job.status == JobStatus.CLAIMED, Job.lease_until < now),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable,
               Job.run_id.not_in(select(Run.id).where(Run.status == RunStatus.INTERRUPTED)))
        .values(
            status=JobStatus.CLAIMED,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
