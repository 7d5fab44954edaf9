"""A run and its own records: the run, the language-model calls it paid for, an ES run's told generations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from service.db.models.base import ID_LENGTH, Base, new_id, one_of, utcnow
from workers.vocabulary import RUN_FINAL_STATUSES, RUN_STOPPED_STATUSES, LearningRateProtocol, RunStatus


class Run(Base):
    """One discovery run: a target, environments, a proposer and a budget."""

    __tablename__ = "runs"
    __table_args__ = (
        one_of("status", RunStatus),
        one_of("lr_protocol", LearningRateProtocol),
        UniqueConstraint("owner_key_id", "idempotency_key"),
        Index("ix_runs_owner_key_id_created_at", "owner_key_id", "created_at"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    owner_key_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED)
    target: Mapped[str] = mapped_column(String(64))
    train_envs: Mapped[list[Any]] = mapped_column(default=list)
    test_envs: Mapped[list[Any]] = mapped_column(default=list)
    profile: Mapped[str] = mapped_column(String(64))
    proposer: Mapped[dict[str, Any]] = mapped_column(default=dict)  # kind, model, temperature, base_url
    budget: Mapped[dict[str, Any]] = mapped_column(default=dict)  # candidates, tokens, cost_usd, wall_seconds
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    seeds_per_eval: Mapped[int] = mapped_column(Integer)
    metatest_seeds: Mapped[int] = mapped_column(Integer, server_default="2")
    lr_protocol: Mapped[str] = mapped_column(String(16), server_default=LearningRateProtocol.GRID.value)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # full configuration and versions
    best_candidate_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("candidates.id", use_alter=True, ondelete="SET NULL")
    )
    best_score: Mapped[float | None] = mapped_column(Float)  # the best's verified score (the warm start: 1.0)
    # The best's verdict against the warm start (None while the best is the warm start): a discovery only if
    # `better`.
    best_verdict: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float, server_default="0.95")  # of every verdict of the run
    metric: Mapped[str] = mapped_column(String(16), server_default="final")  # workers.results.Metric
    verification_seeds: Mapped[int] = mapped_column(Integer, server_default="8")  # fresh seeds a contender may get
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    duplicates_skipped: Mapped[int] = mapped_column(Integer, default=0)
    # Evolution's children by operator and fate before training: {"constant": {"tried": 9, "broke a rule": 2,
    # "behavioural duplicate": 1, ...}} (what was proposed is counted from the candidates).
    operator_attempts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    search: Mapped[dict[str, Any]] = mapped_column(default=dict)  # islands, migration_interval, early_stopping
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @hybrid_property
    def ended(self) -> bool:
        """Completed, failed or cancelled: nothing advances it any more (in Python and in a query)."""
        return self.status in RUN_FINAL_STATUSES

    @ended.inplace.expression
    @classmethod
    def _ended_expression(cls) -> ColumnElement[bool]:
        return cls.status.in_(list(RUN_FINAL_STATUSES))

    @hybrid_property
    def stopped(self) -> bool:
        """Ended or interrupted: nothing advances it until `discovery runs resume` (in Python and in a query)."""
        return self.status in RUN_STOPPED_STATUSES

    @stopped.inplace.expression
    @classmethod
    def _stopped_expression(cls) -> ColumnElement[bool]:
        return cls.status.in_(list(RUN_STOPPED_STATUSES))


class LlmCall(Base):
    """One request to a language model, stored for audit and cost accounting."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_run_id_created_at", "run_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"))
    candidate_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("candidates.id", use_alter=True, ondelete="SET NULL")
    )
    model: Mapped[str] = mapped_column(String(200))
    messages: Mapped[list[Any]] = mapped_column(default=list)
    reply: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ESGeneration(Base):
    """One told generation of an ES run, written in the transaction that tells it (`service/runs/jobs/es.py`).

    `state` is the strategy after telling this generation (`service.proposers.es.ESState`: what generation + 1
    asks from); `fitness` the population's, per member (null: non-finite, a diverged training); `seeds` the
    training seeds the whole population shared. The latest row is where a resumed run starts.
    """

    __tablename__ = "es_generations"

    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column()
    fitness: Mapped[list[Any]] = mapped_column()
    seeds: Mapped[list[Any]] = mapped_column(default=list)
    env_steps: Mapped[int] = mapped_column(BigInteger)
    trainer_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
