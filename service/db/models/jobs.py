"""The executor's units of work (claimed and leased by `service.db.jobs`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import ID_LENGTH, Base, new_id, one_of, utcnow
from workers.vocabulary import JobKind, JobStatus


class Job(Base):
    """A unit of work carried by the executor; `dedupe_key` makes enqueueing idempotent."""

    __tablename__ = "jobs"
    __table_args__ = (
        one_of("kind", JobKind),
        one_of("status", JobStatus),
        Index("ix_jobs_status_lease_until", "status", "lease_until"),
        Index("ix_jobs_run_id", "run_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    candidate_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("candidates.id", ondelete="CASCADE")
    )
    env: Mapped[str | None] = mapped_column(String(64))
    proposal_index: Mapped[int | None] = mapped_column(Integer)  # a propose job: the candidate index it proposes
    round: Mapped[int | None] = mapped_column(Integer)  # a reevaluate job: its round of the verification race
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)  # e.g. "evaluate:<candidate_id>"
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
