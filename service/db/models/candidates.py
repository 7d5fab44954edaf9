"""What a run proposes and how it scored: candidates, their evaluations, and the traced artifacts and
parameter vectors they train.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from service.db.models.base import ID_LENGTH, Base, new_id, one_of, utcnow
from workers.vocabulary import (
    CANDIDATE_FINISHED_STATUSES,
    CandidateKind,
    CandidateStatus,
    EvalPhase,
    Outcome,
    ScoreBasis,
)


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
