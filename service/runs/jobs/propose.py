"""The `propose` job: make proposal number `index` of a run, probe it in the sandbox, record it.

The proposer's view of the run is rebuilt from the database (`build_context`), so a resumed run prompts
the same. A proposal that breaks a rule of the target, or computes the same function as a candidate
already in the run (the same behaviour fingerprint), is recorded as failed, with the reason, and never
trained; otherwise it becomes a pending candidate with its traced artifact and its `evaluate` job.
"""

from __future__ import annotations

import base64
import hashlib

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Artifact, Candidate, Job, LlmCall, Run
from service.db.text import CODE_CHARS, ERROR_CHARS, NAME_CHARS, THOUGHT_CHARS, storable
from service.evaluation import trace_code
from service.proposers import (
    EvolutionSettings,
    HistoryEntry,
    HistorySettings,
    LLMSettings,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    make_proposer,
)
from service.proposers.search import Placement, place_proposal
from service.runs.events import emit
from service.runs.jobs.llm_calls import record_calls
from service.runs.orchestrator import add_job, lock_run
from service.runs.queries.stats import proposal_records
from service.runs.spec import EvolutionProposerSpec, LLMProposerSpec, RunSpec, spec_of
from service.settings import Settings
from workers.results import TraceResult
from workers.vocabulary import CandidateStatus, EventType, JobKind, JobStatus, Outcome


def proposer_config(spec: RunSpec, model: str | None = None, index: int = 0) -> ProposerConfig:
    """The proposer a run's spec asks for proposal `index` (with an ensemble, `model` is the one picked for it;
    with a seed, the request's seed is the spec's plus `index`)."""
    proposer = spec.proposer
    if isinstance(proposer, EvolutionProposerSpec):
        return ProposerConfig(kind="evolution", evolution=EvolutionSettings(**proposer.model_dump(
            mode="json", include=set(EvolutionSettings.model_fields), exclude_none=True)))
    assert isinstance(proposer, LLMProposerSpec)
    llm = LLMSettings(**proposer.model_dump(mode="json", include=set(LLMSettings.model_fields)))
    llm.model = model or llm.model
    if proposer.seed is not None:
        llm.seed = (proposer.seed + index) % 2**31
    return ProposerConfig(kind="llm", llm=llm,
                          history=HistorySettings(mode=proposer.history, max_turns=proposer.history_max_turns))


def history_entry(candidate: Candidate, reply: str | None = None) -> HistoryEntry:
    """A candidate as the proposer sees it; `reply` is the model's stored reply that made it, when loaded."""
    evaluated = candidate.finished
    return HistoryEntry(
        candidate_id=candidate.id, index=candidate.index, name=candidate.name, thought=candidate.thought,
        code=candidate.code, outcome=Outcome(candidate.outcome) if evaluated and candidate.outcome else None,
        score=candidate.counted_score,
        comparison=candidate.stats.get("verification") if candidate.verified_score is not None
        else candidate.stats.get("search"),
        error=candidate.error, parent_ids=list(candidate.parent_ids), reply=reply,
    )


def build_context(session: Session, run: Run, index: int) -> tuple[ProposalContext, Placement]:
    """The proposer's view of the run (through the search policy: the proposal's island, its model), rebuilt from
    the database so a resumed run prompts the same."""
    spec = spec_of(run)
    candidates = session.scalars(select(Candidate).where(Candidate.run_id == run.id, Candidate.index < index,
                                                         Candidate.reference.is_(None))
                                 .order_by(Candidate.index)).all()
    warm = next(c for c in candidates if c.is_warm_start)
    replies: dict[str, str | None] = {}
    llm = spec.proposer if isinstance(spec.proposer, LLMProposerSpec) else None
    if llm is not None and llm.history == "conversation":  # the chat replays each proposal's last reply
        call_ids = [c.llm_call_id for c in candidates if c.llm_call_id]
        rows = session.execute(select(LlmCall.id, LlmCall.reply).where(LlmCall.id.in_(call_ids)))
        replies = {call_id: text for call_id, text in rows}
    history = [history_entry(c, replies.get(c.llm_call_id or "")) for c in candidates if not c.is_warm_start]
    placement = place_proposal(index, run.seed, history, spec.search.islands, spec.search.migration_interval,
                               llm.models if llm else [], llm.bandit if llm else "thompson",
                               proposal_records(session, run.id) if llm and len(llm.models) > 1 else [])
    context = ProposalContext(
        run_id=run.id, target=run.target, seed=run.seed, index=index, warm_start=history_entry(warm),
        history=placement.history, known_hashes={c.ast_hash for c in candidates},
        known_fingerprints={c.fingerprint: c.name for c in reversed(candidates) if c.fingerprint},
    )
    return context, placement


def fingerprint_warm_start(factory: sessionmaker[Session], settings: Settings, run_id: str) -> None:
    """Probe the run's warm start once, so a candidate that computes the same function is known as a duplicate."""
    with session_scope(factory) as session:
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run_id, Candidate.is_warm_start))
        if warm.fingerprint is not None:
            return
        target, code = session.get(Run, run_id).target, warm.code
    traced = trace_code(settings, target, code)
    if traced.outcome != Outcome.ok:
        raise RuntimeError(f"the warm start failed its probe: {traced.error}")
    with session_scope(factory) as session:
        session.execute(update(Candidate).where(Candidate.run_id == run_id, Candidate.is_warm_start)
                        .values(fingerprint=traced.fingerprint))


def store_artifact(session: Session, target: str, data: bytes) -> str:
    """Keep a traced artifact (once per content); its SHA-256 names it."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(Artifact, digest) is None:
        session.add(Artifact(sha256=digest, target=target, data=data))
        session.flush()
    return digest


def propose(factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    """Make the job's proposal, probe it, record it (the job is done in the transaction that records it)."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = session.get(Run, job.run_id)
        index = job.proposal_index
        if run.ended or session.execute(
            select(Candidate.id).where(Candidate.run_id == run.id, Candidate.index == index)
        ).first():
            job.status, job.finished_at = JobStatus.DONE, utcnow()
            return
        run_id = run.id
    fingerprint_warm_start(factory, settings, run_id)
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        context, placement = build_context(session, run, index)
        config = proposer_config(spec_of(run), placement.model, index)
    if config.kind == "llm" and config.llm.base_url and not settings.llm_endpoint_allowed(config.llm.base_url):
        # A run stored before the operator narrowed the endpoints: its proposals stop, the key stays here.
        raise ProposerUnavailable(f"the endpoint {config.llm.base_url} is not one this server's operator allows")
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    started = utcnow()

    def probe(code: str) -> TraceResult:
        return trace_code(settings, context.target, code, check_rules=True)

    proposal: Proposal = make_proposer(config, api_key=api_key, base_url=settings.openai_base_url,
                                       probe=probe).propose(context)
    if proposal.invalid_error is None and proposal.trace is None and proposal.ast_hash not in context.known_hashes:
        proposal.trace = probe(proposal.code)
    with session_scope(factory) as session:
        run = lock_run(session, context.run_id)
        candidate = _record_proposal(session, run, index, proposal, placement)
        candidate.propose_seconds = (utcnow() - started).total_seconds()
        if candidate.error is None and not run.ended:
            add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}", candidate_id=candidate.id)
        else:
            emit(session, run.id, EventType.CANDIDATE_EVALUATED,
                 {"candidate_id": candidate.id, "index": index, "outcome": candidate.outcome, "score": None})
        job = session.get(Job, job_id)
        job.status, job.finished_at = JobStatus.DONE, utcnow()


def _judge(session: Session, run: Run, proposal: Proposal) -> tuple[str | None, Outcome, str | None]:
    """Why the proposal is not trained (None: it is), its outcome if not, and the candidate it duplicates."""
    known = set(session.scalars(select(Candidate.ast_hash).where(Candidate.run_id == run.id)))
    trace = proposal.trace
    if proposal.invalid_error is not None:
        return proposal.invalid_error, Outcome.invalid, None
    if proposal.ast_hash is None or proposal.ast_hash in known:
        proposal.duplicates_skipped += 1
        return "the same algorithm is already in this run", Outcome.invalid, None
    if trace is not None and trace.outcome != Outcome.ok:
        return trace.error or "the probe failed", trace.outcome, None
    original = None if trace is None else session.scalar(select(Candidate).where(
        Candidate.run_id == run.id, Candidate.fingerprint == trace.fingerprint,
        Candidate.reference.is_(None)).order_by(Candidate.index).limit(1))
    if original is not None:
        return (f"computes the same function as #{original.index} {original.name} on every probe input "
                f"(a behavioural duplicate): not trained"), Outcome.invalid, original.id
    return None, Outcome.ok, None


def _record_proposal(session: Session, run: Run, index: int, proposal: Proposal, placement: Placement) -> Candidate:
    """The proposal as a candidate of the run (failed, with the reason, when it is not to be trained), its model
    calls, and the run's counters."""
    error, outcome, duplicate_of = _judge(session, run, proposal)
    trace = proposal.trace
    artifact_sha256 = None
    if error is None and trace is not None:
        artifact_sha256 = store_artifact(session, run.target, base64.b64decode(trace.artifact or ""))
    digest = proposal.ast_hash if error is None else \
        hashlib.sha256(f"unevaluated:{index}:{proposal.code}".encode()).hexdigest()
    candidate = Candidate(
        run_id=run.id, index=index, name=storable(proposal.name or f"candidate {index}", NAME_CHARS),
        thought=storable(proposal.thought, THOUGHT_CHARS), code=storable(proposal.code, CODE_CHARS),
        parent_ids=proposal.parent_ids, ast_hash=digest,
        status=CandidateStatus.FAILED if error else CandidateStatus.PENDING,
        outcome=outcome if error else None, error=storable(error, ERROR_CHARS, keep_tail=True) if error else None,
        fingerprint=trace.fingerprint if trace is not None else None, duplicate_of=duplicate_of,
        artifact_sha256=artifact_sha256, operator=proposal.operator, model=placement.model,
        island=placement.island, evaluated_at=utcnow() if error else None,
    )
    session.add(candidate)
    session.flush()
    candidate.llm_call_id = record_calls(session, run, candidate.id, proposal.llm_calls)
    run.duplicates_skipped += proposal.duplicates_skipped
    run.operator_attempts = merge_attempts(run.operator_attempts, proposal.attempts)
    emit(session, run.id, EventType.CANDIDATE_PROPOSED, {"candidate_id": candidate.id, "index": index,
                                                          "name": candidate.name})
    return candidate


def merge_attempts(counts: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The run's children by operator and fate, plus one proposal's (a new object, so the JSON column is saved)."""
    merged = {operator: dict(fates) for operator, fates in counts.items()}
    for operator, fates in more.items():
        for fate, n in fates.items():
            merged.setdefault(operator, {})[fate] = merged.get(operator, {}).get(fate, 0) + n
    return merged
