"""SQLAlchemy models: the schema of the service's single source of truth.

Conventions:
- Entities that the API exposes or the broker carries (runs, candidates, jobs, ...) have string
  primary keys made by `new_id()` (uuid4 hex); append-only logs (events, webhook attempts) have
  integer autoincrement keys.
- Every timestamp is timezone-aware UTC (`UTCDateTime`), on SQLite as on PostgreSQL.
- Statuses are plain strings guarded by CHECK constraints; the allowed values are the StrEnums of
  `workers/vocabulary.py`
  (a StrEnum member compares equal to its string, so `run.status == RunStatus.RUNNING` works).
- JSON columns use the portable `sqlalchemy.JSON`. In-place mutation of a loaded JSON value is not
  tracked: assign a new list or dict.
- Schema changes go through Alembic (migrations/versions); tests/db checks the two agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from workers.vocabulary import (
    CANDIDATE_FINISHED_STATUSES,
    RUN_FINAL_STATUSES,
    RUN_STOPPED_STATUSES,
    CandidateKind,
    CandidateStatus,
    DeliveryStatus,
    EvalPhase,
    EventType,
    JobKind,
    JobStatus,
    LearningRateProtocol,
    Outcome,
    RunStatus,
    ScoreBasis,
)

# Deterministic constraint names: Alembic (and SQLite batch migrations) need every constraint named.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 32  # uuid4().hex


def new_id() -> str:
    """A new string primary key (uuid4 hex, 32 characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware in UTC.

    PostgreSQL stores `timestamp with time zone`; SQLite stores text without an offset, so values are
    converted to UTC before they are written and tagged UTC when read. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime (service.db.utcnow)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def one_of(column: str, values: type[StrEnum], name: str | None = None) -> CheckConstraint:
    """A CHECK constraint `column IN (...)` named after the column (or `name`)."""
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name or column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class ApiKey(Base):
    """An API key. Only the sha256 of the key is stored; `prefix` lets a user recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


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


class Candidate(Base):
    """One proposed algorithm (code) in a run, with its fitness once evaluated."""

    __tablename__ = "candidates"
    __table_args__ = (
        one_of("status", CandidateStatus),
        one_of("kind", CandidateKind),
        one_of("outcome", Outcome),
        UniqueConstraint("run_id", "index"),
        UniqueConstraint("run_id", "ast_hash"),
        Index("ix_candidates_run_id_score", "run_id", "score"),
        Index("ix_candidates_run_id_created_at", "run_id", "created_at"),
        Index("ix_candidates_run_id_fingerprint", "run_id", "fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    # Indexed by uq_candidates_run_id_index (run_id leads it).
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)  # 0, 1, 2, ... in the run
    is_warm_start: Mapped[bool] = mapped_column(Boolean, default=False)
    # A reference algorithm of the target (e.g. DPO for lpo), meta-tested beside the warm start; index < 0.
    reference: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    thought: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str] = mapped_column(Text)
    parent_ids: Mapped[list[Any]] = mapped_column(default=list)
    ast_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=CandidateStatus.PENDING)
    outcome: Mapped[str | None] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)  # normalised mean over meta-train environments
    # On the verification seeds only (fresh seeds, raced in rounds), never mixed with the search score.
    verified_score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16))  # against the warm start, on the verification seeds
    # `search` and `verification`: workers.results.Comparison of each (score, interval, p_improvement, ...).
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    llm_call_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("llm_calls.id", ondelete="SET NULL")
    )
    # The traced artifact every evaluation of this candidate trains (None: not traced yet, or the warm start).
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), ForeignKey("artifacts.sha256"))
    # What the candidate computes on its target's probe inputs (workers.targets.base.behaviour_fingerprint).
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The earlier candidate of the run that computes the same function: this one was not trained.
    duplicate_of: Mapped[str | None] = mapped_column(String(ID_LENGTH),
                                                     ForeignKey("candidates.id", ondelete="SET NULL"))
    operator: Mapped[str | None] = mapped_column(String(32))  # the evolution operator that made it
    model: Mapped[str | None] = mapped_column(String(200))  # the language model that made it (ensembles pick one)
    island: Mapped[int | None] = mapped_column(Integer)  # its sub-population (None: the warm start, shared by all)
    # Not trained on the environments after the first: it scored far below the run's median there.
    stopped_early: Mapped[bool] = mapped_column(Boolean, default=False)
    # `network`: the ES mean of generation `es_generation`, a vector of the target's network (`parameters_sha256`);
    # its `code` is a readable note, not code. `code`: everything else.
    kind: Mapped[str] = mapped_column(String(16), default=CandidateKind.CODE, server_default=CandidateKind.CODE.value)
    network: Mapped[str | None] = mapped_column(String(64))  # e.g. "lpo_network" (workers.targets.base.Network)
    parameters_sha256: Mapped[str | None] = mapped_column(String(64), ForeignKey("parameter_vectors.sha256"))
    es_generation: Mapped[int | None] = mapped_column(Integer)
    propose_seconds: Mapped[float | None] = mapped_column(Float)
    eval_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    evaluated_at: Mapped[datetime | None]

    @hybrid_property
    def finished(self) -> bool:
        """Its evaluation is over, trained or failed (in Python and in a query)."""
        return self.status in CANDIDATE_FINISHED_STATUSES

    @finished.inplace.expression
    @classmethod
    def _finished_expression(cls) -> ColumnElement[bool]:
        return cls.status.in_(list(CANDIDATE_FINISHED_STATUSES))

    @hybrid_property
    def counted_score(self) -> float | None:
        """The score that counts: the verified score once it was raced, the search score before."""
        return self.verified_score if self.verified_score is not None else self.score

    @counted_score.inplace.expression
    @classmethod
    def _counted_score_expression(cls) -> ColumnElement[float | None]:
        return func.coalesce(cls.verified_score, cls.score)

    @property
    def score_ci(self) -> tuple[float, float] | None:
        """The interval of the search score."""
        search = (self.stats or {}).get("search")
        return tuple(search["ci"]) if search else None

    @property
    def verified_ci(self) -> tuple[float, float] | None:
        """The interval of the verified score."""
        verification = (self.stats or {}).get("verification")
        return tuple(verification["ci"]) if verification else None


def is_proposal() -> ColumnElement[bool]:
    """A proposed candidate: neither the warm start nor a reference algorithm (what budgets and counts count)."""
    return and_(Candidate.is_warm_start.is_(False), Candidate.reference.is_(None))


class Evaluation(Base):
    """One candidate on one environment in one phase: returns per learning rate and seed."""

    __tablename__ = "evaluations"
    __table_args__ = (
        one_of("phase", EvalPhase),
        one_of("outcome", Outcome),
        one_of("score_basis", ScoreBasis),
        # A re-run evaluate job finds this row instead of adding a second one.
        UniqueConstraint("candidate_id", "env", "phase", "round"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    # Indexed by uq_evaluations_candidate_id_env_phase_round.
    candidate_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("candidates.id", ondelete="CASCADE")
    )
    env: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # a verification race's round (1, ...)
    seeds: Mapped[list[Any]] = mapped_column(default=list)
    learning_rates: Mapped[list[Any]] = mapped_column(default=list)
    returns: Mapped[list[Any] | None] = mapped_column(JSON)  # [lr][seed] final returns
    curves: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # learning curves, shape is the writer's
    best_lr: Mapped[float | None] = mapped_column(Float)
    final_return: Mapped[float | None] = mapped_column(Float)
    normalised_score: Mapped[float | None] = mapped_column(Float)
    score_basis: Mapped[str | None] = mapped_column(String(16))  # how normalised_score was computed
    # Per-seed normalised scores, the anchor they were normalised by (its own per-seed scores) and the
    # comparison with it on this environment (`service.evaluation.EnvScore`).
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    compile_seconds: Mapped[float | None] = mapped_column(Float)  # of the whole program (shared by its batch)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    # What this row cost (workers.results.EvaluationResult): environment steps over every lane it trained (the
    # grid's choosing seeds included) and its share of the trainer's seconds. None: recorded before 0010.
    env_steps: Mapped[int | None] = mapped_column(BigInteger)
    trainer_seconds: Mapped[float | None] = mapped_column(Float)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))  # the artifact that was trained
    # Where the trainer ran it: JAX's platform ("cpu", "cuda") and device ("TFRT_CPU_0", "cuda:0"); None: not
    # trained (a failed trace) or recorded before the trainer reported it.
    platform: Mapped[str | None] = mapped_column(String(16))
    device: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def comparison(self) -> dict[str, Any]:
        """This environment's comparison with the anchor (workers.results.Comparison as stored), or {}."""
        return (self.stats or {}).get("comparison") or {}


class Artifact(Base):
    """A candidate's traced function (`workers.artifact.Artifact` bytes), addressed by its SHA-256.

    Traced once per candidate; re-evaluation and meta-test train these same bytes.
    """

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ParameterVector(Base):
    """A network candidate's parameters (float32, little-endian bytes), addressed by the SHA-256 of those bytes."""

    __tablename__ = "parameter_vectors"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    network: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)  # values, not bytes
    data: Mapped[bytes] = mapped_column(LargeBinary)
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


class Event(Base):
    """The outbox: one row per run event. Its id is the SSE event id; webhooks deliver from here."""

    __tablename__ = "events"
    __table_args__ = (
        one_of("type", EventType),
        # "Events of run R after id N" (SSE resume with Last-Event-ID); also indexes run_id alone.
        Index("ix_events_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """Where to deliver events: for one run (run_id) or for all runs of a key (owner_key_id)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_run_id", "run_id"),
        Index("ix_webhook_endpoints_owner_key_id", "owner_key_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"))
    owner_key_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), ForeignKey("api_keys.id"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(255))  # whsec_...: needed in clear to sign
    events: Mapped[list[Any]] = mapped_column(default=list)  # event types; empty means all
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to one endpoint. `message_id` is the stable webhook-id header across retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        one_of("status", DeliveryStatus),
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("events.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]



class WebhookAttempt(Base):
    """One HTTP attempt of a delivery (the delivery log)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
