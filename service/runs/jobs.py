"""The jobs a run is made of, and how a worker runs one: claim, heartbeat, do the work, advance.

Every handler is idempotent and keyed by database rows: results already recorded are not produced
again (an evaluation row per candidate, environment and phase; a candidate per proposal index; an
artifact per candidate), and the job is marked done in the same transaction that records its last
result. A worker that claims an evaluation also claims the compatible evaluations waiting beside it
(same run, kind and environment, up to `evaluate_batch_size`) and trains them as one batch.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import socket
import threading
from datetime import timedelta
from statistics import median

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import claim_job, session_scope, utcnow
from service.db.models import (
    RUN_FINAL_STATUSES,
    Artifact,
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
from service.db.text import CODE_CHARS, ERROR_CHARS, NAME_CHARS, THOUGHT_CHARS, storable, storable_json
from service.evaluation import EnvScore, anchor_row, env_score, evaluate_artifacts, trace_code, trace_many
from service.proposers import (
    EvolutionSettings,
    HistoryEntry,
    HistorySettings,
    LLMCallRecord,
    LLMSettings,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    make_proposer,
)
from service.proposers.bandit import choose_model
from service.proposers.islands import island_history, island_of
from service.runs.orchestrator import Publish, add_job, advance, emit, finish_run, lock_run, seed_plan
from service.runs.queries import model_pulls
from service.runs.verdicts import record_evaluation
from service.settings import Settings
from workers.anchor import AnchorError
from workers.results import EvaluationResult, Metric, Outcome, SeedPlan, TraceResult
from workers.sandbox.host import IsolationUnavailable

log = logging.getLogger(__name__)

LEASE_SECONDS = 20.0  # a dead worker's job is taken over within this (plus a sweep)
PHASE_OF = {JobKind.EVALUATE: EvalPhase.TRAIN, JobKind.REEVALUATE: EvalPhase.REEVAL, JobKind.METATEST: EvalPhase.TEST}


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


def run_job(factory: sessionmaker[Session], settings: Settings, job_id: str, publish: Publish) -> None:
    """Claim and run one job (with its batch companions); a job another worker holds, or that is done, is left
    alone."""
    owner = worker_id()
    with session_scope(factory) as session:
        if not claim_job(session, job_id, owner, LEASE_SECONDS):
            return
        job = session.get(Job, job_id)
        assert job is not None
        run_id, kind = job.run_id, JobKind(job.kind)
        job_ids = [job_id]
        if kind != JobKind.PROPOSE:
            job_ids += claim_companions(session, job, owner, settings.evaluate_batch_size - 1)
    with Heartbeat(factory, job_ids, owner):
        try:
            if kind == JobKind.PROPOSE:
                propose(factory, settings, job_id)
            else:
                evaluate_jobs(factory, settings, job_ids)
        except ProposerUnavailable as exc:
            _fail_run(factory, run_id, job_ids, f"the proposer is unavailable: {exc.reason}", exc.llm_calls)
        except (AnchorError, IsolationUnavailable) as exc:
            _fail_run(factory, run_id, job_ids, str(exc), [])
        except Exception as exc:
            log.exception("jobs %s (%s) failed", job_ids, kind)
            for failed in job_ids:
                _fail_job(factory, failed, f"the {kind} job crashed: {type(exc).__name__}: {exc}")
    advance(factory, run_id, publish)


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


def _fail_job(factory: sessionmaker[Session], job_id: str, error: str) -> None:
    """Record a crashed job; a candidate whose search evaluation crashed gets the outcome `error`."""
    error = storable(error, ERROR_CHARS, keep_tail=True)
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.status, job.error, job.finished_at = JobStatus.FAILED, error, utcnow()
        if job.kind == JobKind.EVALUATE and job.candidate_id:
            session.execute(update(Candidate).where(Candidate.id == job.candidate_id,
                                                    Candidate.status.in_([CandidateStatus.PENDING,
                                                                          CandidateStatus.EVALUATING]))
                            .values(status=CandidateStatus.FAILED, outcome=Outcome.error, error=error,
                                    evaluated_at=utcnow()))


def _fail_run(factory: sessionmaker[Session], run_id: str, job_ids: list[str], reason: str,
              calls: list[LLMCallRecord]) -> None:
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is not None:
            _record_calls(session, run, None, calls)
            if run.status not in RUN_FINAL_STATUSES:
                finish_run(session, run, RunStatus.FAILED, reason)
        session.execute(update(Job).where(Job.id.in_(job_ids))
                        .values(status=JobStatus.FAILED, error=reason, finished_at=utcnow()))


# --- propose -------------------------------------------------------------------------------------

def proposer_config(run: Run) -> ProposerConfig:
    spec = run.proposer
    if spec["kind"] == "evolution":
        chosen = {k: spec[k] for k in ("mutation_weights", "crossover_probability") if spec.get(k) is not None}
        return ProposerConfig(kind="evolution", evolution=EvolutionSettings(**chosen))
    return ProposerConfig(kind="llm", llm=LLMSettings(
        model=spec["model"], base_url=spec.get("base_url"), temperature=spec.get("temperature"),
        send_temperature=spec.get("send_temperature", True), json_mode=spec.get("json_mode", True),
        max_tokens=spec.get("max_tokens"), max_completion_tokens=spec.get("max_completion_tokens"),
        reasoning_effort=spec.get("reasoning_effort"), price_prompt_per_1k=spec.get("price_per_1k_prompt_tokens"),
        price_completion_per_1k=spec.get("price_per_1k_completion_tokens"),
    ), history=HistorySettings(mode=spec.get("history", "bounded"), max_turns=spec.get("history_max_turns", 30)))


def history_entry(candidate: Candidate, reply: str | None = None) -> HistoryEntry:
    """A candidate as the proposer sees it; `reply` is the model's stored reply that made it, when loaded."""
    evaluated = candidate.status in (CandidateStatus.EVALUATED, CandidateStatus.FAILED)
    return HistoryEntry(
        candidate_id=candidate.id, index=candidate.index, name=candidate.name, thought=candidate.thought,
        code=candidate.code, outcome=Outcome(candidate.outcome) if evaluated and candidate.outcome else None,
        score=candidate.verified_score if candidate.verified_score is not None else candidate.score,
        comparison=candidate.stats.get("verification") if candidate.verified_score is not None
        else candidate.stats.get("search"),
        error=candidate.error, parent_ids=list(candidate.parent_ids), reply=reply,
    )


def build_context(session: Session, run: Run, index: int) -> ProposalContext:
    """The proposer's view of the run, rebuilt from the database (so a resumed run prompts the same)."""
    candidates = session.scalars(select(Candidate).where(Candidate.run_id == run.id, Candidate.index < index,
                                                         Candidate.reference.is_(None))
                                 .order_by(Candidate.index)).all()
    warm = next(c for c in candidates if c.is_warm_start)
    replies: dict[str, str | None] = {}
    if run.proposer.get("history") == "conversation":  # the chat replays each proposal's last reply
        call_ids = [c.llm_call_id for c in candidates if c.llm_call_id]
        rows = session.execute(select(LlmCall.id, LlmCall.reply).where(LlmCall.id.in_(call_ids)))
        replies = {call_id: text for call_id, text in rows}
    history = [history_entry(c, replies.get(c.llm_call_id or "")) for c in candidates if not c.is_warm_start]
    return ProposalContext(
        run_id=run.id, target=run.target, seed=run.seed, index=index, warm_start=history_entry(warm),
        history=island_history(history, index, run.search.get("islands", 1), run.search.get("migration_interval", 4)),
        known_hashes={c.ast_hash for c in candidates},
        known_fingerprints={c.fingerprint: c.name for c in reversed(candidates) if c.fingerprint},
    )


def _record_calls(session: Session, run: Run, candidate_id: str | None, calls: list[LLMCallRecord]) -> str | None:
    last_id = None
    for call in calls:
        fields = call.model_dump()
        fields.update(messages=storable_json(fields["messages"]),
                      reply=storable(fields["reply"]) if fields.get("reply") is not None else None,
                      error=storable(fields["error"], ERROR_CHARS, keep_tail=True) if fields.get("error") else None)
        row = LlmCall(run_id=run.id, candidate_id=candidate_id, **fields)
        session.add(row)
        session.flush()
        last_id = row.id
        run.tokens_used += (call.prompt_tokens or 0) + (call.completion_tokens or 0)
        run.cost_usd += call.cost_usd or 0.0
    return last_id


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


def propose(factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    """Make proposal number `index`, probe it in the sandbox (the target's rules, its behaviour), record it.

    A proposal that breaks a rule of the target, or computes the same function as a candidate already in
    the run (the same behaviour fingerprint), is recorded as failed, with the reason, and never trained.
    """
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        run = session.get(Run, job.run_id)
        index = job.proposal_index
        if run.status in RUN_FINAL_STATUSES or session.execute(
            select(Candidate.id).where(Candidate.run_id == run.id, Candidate.index == index)
        ).first():
            job.status, job.finished_at = JobStatus.DONE, utcnow()
            return
        run_id = run.id
    fingerprint_warm_start(factory, settings, run_id)
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        context = build_context(session, run, index)
        config = proposer_config(run)
        ensemble = run.proposer.get("models") or []
        if config.kind == "llm" and len(ensemble) > 1:  # only an ensemble reads the earlier pulls
            config.llm.model = choose_model(ensemble, model_pulls(session, run.id),
                                            run.proposer.get("bandit", "thompson"),
                                            random.Random(f"{run.seed}:{index}"))
        model = config.llm.model if config.kind == "llm" else None
        island = island_of(index, run.search.get("islands", 1))
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
        job = session.get(Job, job_id)
        known = set(session.scalars(select(Candidate.ast_hash).where(Candidate.run_id == run.id)))
        error, outcome = proposal.invalid_error, Outcome.invalid
        digest = proposal.ast_hash
        if error is None and (digest is None or digest in known):
            error = "the same algorithm is already in this run"
            proposal.duplicates_skipped += 1
        duplicate_of, artifact_sha256, trace = None, None, proposal.trace
        if error is None and trace is not None and trace.outcome != Outcome.ok:
            error, outcome = trace.error or "the probe failed", trace.outcome
        elif error is None and trace is not None:
            original = session.scalar(select(Candidate).where(
                Candidate.run_id == run.id, Candidate.fingerprint == trace.fingerprint,
                Candidate.reference.is_(None)).order_by(Candidate.index).limit(1))
            if original is not None:
                duplicate_of = original.id
                error = (f"computes the same function as #{original.index} {original.name} on every probe input "
                         f"(a behavioural duplicate): not trained")
            else:
                artifact_sha256 = store_artifact(session, run.target, base64.b64decode(trace.artifact or ""))
        if error is not None:
            digest = hashlib.sha256(f"unevaluated:{index}:{proposal.code}".encode()).hexdigest()
        candidate = Candidate(
            run_id=run.id, index=index, name=storable(proposal.name or f"candidate {index}", NAME_CHARS),
            thought=storable(proposal.thought, THOUGHT_CHARS), code=storable(proposal.code, CODE_CHARS),
            parent_ids=proposal.parent_ids, ast_hash=digest,
            status=CandidateStatus.FAILED if error else CandidateStatus.PENDING,
            outcome=outcome if error else None, error=storable(error, ERROR_CHARS, keep_tail=True) if error else None,
            fingerprint=trace.fingerprint if trace is not None else None, duplicate_of=duplicate_of,
            artifact_sha256=artifact_sha256, operator=proposal.operator, model=model, island=island,
            propose_seconds=(utcnow() - started).total_seconds(),
            evaluated_at=utcnow() if error else None,
        )
        session.add(candidate)
        session.flush()
        candidate.llm_call_id = _record_calls(session, run, candidate.id, proposal.llm_calls)
        run.duplicates_skipped += proposal.duplicates_skipped
        run.operator_attempts = merge_attempts(run.operator_attempts, proposal.attempts)
        emit(session, run.id, EventType.CANDIDATE_PROPOSED,
             {"candidate_id": candidate.id, "index": index, "name": candidate.name})
        if error is None and run.status not in RUN_FINAL_STATUSES:
            add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}", candidate_id=candidate.id)
        else:
            emit(session, run.id, EventType.CANDIDATE_EVALUATED,
                 {"candidate_id": candidate.id, "index": index, "outcome": candidate.outcome, "score": None})
        job.status, job.finished_at = JobStatus.DONE, utcnow()


def merge_attempts(counts: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The run's children by operator and fate, plus one proposal's (a new object, so the JSON column is saved)."""
    merged = {operator: dict(fates) for operator, fates in counts.items()}
    for operator, fates in more.items():
        for fate, n in fates.items():
            merged.setdefault(operator, {})[fate] = merged.get(operator, {}).get(fate, 0) + n
    return merged


def store_artifact(session: Session, target: str, data: bytes) -> str:
    """Keep a traced artifact (once per content); its SHA-256 names it."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(Artifact, digest) is None:
        session.add(Artifact(sha256=digest, target=target, data=data))
        session.flush()
    return digest


# --- evaluate, re-evaluate, meta-test --------------------------------------------------------------

class _Pending(BaseModel):
    """One claimed evaluation job, as plain values (no ORM object crosses the long-running work)."""

    job_id: str
    candidate_id: str
    is_warm_start: bool
    code: str
    artifact_sha256: str | None
    envs: list[str]
    done: dict[str, str]  # env -> outcome of an evaluation already recorded
    rates: dict[str, float]  # env -> the learning rate the search chose (re-evaluation under `grid`)


def _load_batch(factory: sessionmaker[Session], job_ids: list[str]
                ) -> tuple[Run, EvalPhase, int, SeedPlan, list[_Pending]]:
    """Read the claimed jobs; search candidates become `evaluating` (committed here)."""
    with session_scope(factory) as session:
        jobs = [session.get(Job, job_id) for job_id in job_ids]
        run = session.get(Run, jobs[0].run_id)
        phase, round_ = PHASE_OF[JobKind(jobs[0].kind)], jobs[0].round or 0
        pending = []
        for job in jobs:
            candidate = session.get(Candidate, job.candidate_id)
            if phase == EvalPhase.TRAIN and candidate.status == CandidateStatus.PENDING:
                candidate.status = CandidateStatus.EVALUATING
            rows = session.scalars(select(Evaluation).where(Evaluation.candidate_id == candidate.id,
                                                            Evaluation.phase.in_([phase, EvalPhase.TRAIN]))).all()
            pending.append(_Pending(
                job_id=job.id, candidate_id=candidate.id, is_warm_start=candidate.is_warm_start, code=candidate.code,
                artifact_sha256=candidate.artifact_sha256,
                done={e.env: e.outcome for e in rows if e.phase == phase and e.round == round_},
                rates={e.env: e.best_lr for e in rows if e.phase == EvalPhase.TRAIN and e.best_lr is not None}
                if phase == EvalPhase.REEVAL else {},
                envs=[job.env] if phase == EvalPhase.TEST else
                run.train_envs[:1] if phase == EvalPhase.TRAIN and candidate.stopped_early else list(run.train_envs)))
        session.expunge(run)
        return run, phase, round_, seed_plan(run, phase, round_ or None), pending


def _artifacts_for(factory: sessionmaker[Session], settings: Settings, target: str, items: list[_Pending]
                   ) -> list[tuple[str | None, EvaluationResult | None]]:
    """Each candidate's artifact, or its failed trace as a result.

    A candidate is traced once; its artifact is stored, and re-evaluation and meta-test train the same bytes.
    """
    found: dict[str, str] = {}
    with session_scope(factory) as session:
        for item in items:
            row = session.get(Artifact, item.artifact_sha256) if item.artifact_sha256 else None
            if row is not None:
                found[item.candidate_id] = base64.b64encode(row.data).decode()
    to_trace = [item for item in items if item.candidate_id not in found]
    failed: dict[str, EvaluationResult] = {}
    for item, traced in zip(to_trace, trace_many(settings, target, [i.code for i in to_trace]), strict=True):
        if traced.outcome is not Outcome.ok or traced.artifact is None:
            failed[item.candidate_id] = EvaluationResult(outcome=traced.outcome, error=traced.error,
                                                         seconds=traced.seconds)
            continue
        with session_scope(factory) as session:
            digest = store_artifact(session, target, base64.b64decode(traced.artifact))
            session.execute(update(Candidate).where(Candidate.id == item.candidate_id)
                            .values(artifact_sha256=digest))
        found[item.candidate_id] = traced.artifact
    return [(found.get(i.candidate_id), failed.get(i.candidate_id)) for i in items]


def _store(factory: sessionmaker[Session], item: _Pending, env: str, phase: EvalPhase, round_: int,
           seeds: list[int], result: EvaluationResult, scored: EnvScore | None) -> None:
    r = result.result
    with session_scope(factory) as session:
        session.add(Evaluation(
            candidate_id=item.candidate_id, env=env, phase=phase, round=round_, seeds=seeds, outcome=result.outcome,
            error=storable(result.error, ERROR_CHARS, keep_tail=True) if result.error else None,
            learning_rates=r.learning_rates if r else [], returns=r.returns if r else None,
            curves={"learning_rates": r.learning_rates, "returns": r.curves, "diagnostics": r.diagnostics,
                    "seed_curves": r.seed_curves, "auc_returns": r.auc_returns,
                    "lr_choice": r.lr_choice.model_dump() if r.lr_choice else None} if r else None,
            best_lr=r.best_lr if r else None, final_return=r.final_return if r else None,
            normalised_score=scored.comparison.score if scored else None,
            score_basis=scored.basis if scored else None, stats=scored.model_dump(mode="json") if scored else None,
            compile_seconds=r.compile_seconds if r else None,
            train_seconds=r.train_seconds if r else None, artifact_sha256=r.artifact_sha256 if r else None,
        ))
    item.done[env] = result.outcome


def evaluate_jobs(factory: sessionmaker[Session], settings: Settings, job_ids: list[str]) -> None:
    """Evaluate a batch of claimed jobs: trace each candidate once, then train the batch env by env.

    The warm start's search evaluation is the anchor itself (its own artifact on the anchor seeds); everywhere
    else, the warm start is trained through its artifact like any candidate (the meta-test's fresh seeds).
    """
    run, phase, round_, plan, pending = _load_batch(factory, job_ids)
    target, profile, protocol = run.target, run.profile, run.lr_protocol
    confidence, metric = run.confidence, Metric(run.metric)
    early_stopping = run.search.get("early_stopping") if len(run.train_envs) > 1 else None
    artifacts: dict[str, str] = {}
    is_anchor = phase == EvalPhase.TRAIN
    needed = [item for item in pending if not (item.is_warm_start and is_anchor)
              and any(e not in item.done for e in item.envs)
              and all(outcome == Outcome.ok for outcome in item.done.values())]
    for item, (artifact, failed) in zip(needed, _artifacts_for(factory, settings, target, needed), strict=True):
        if failed is not None:
            _store(factory, item, next(e for e in item.envs if e not in item.done), phase, round_, plan.score,
                   failed, None)
        elif artifact is not None:
            artifacts[item.candidate_id] = artifact
    for env in dict.fromkeys(e for item in pending for e in item.envs):
        todo = [i for i in pending if env in i.envs and env not in i.done
                and all(outcome == Outcome.ok for outcome in i.done.values())]
        for item in (i for i in todo if i.is_warm_start and is_anchor):
            result, anchor = anchor_row(settings, target, env, profile, protocol, plan)
            _store(factory, item, env, phase, round_, anchor.seeds, result,
                   env_score(anchor.result, anchor, confidence, metric))
        batch = [i for i in todo if i.candidate_id in artifacts]
        if not batch:
            continue
        results, anchor = evaluate_artifacts(settings, target, env, profile, protocol, plan,
                                             [artifacts[i.candidate_id] for i in batch],
                                             [i.rates.get(env) for i in batch], check_rules=True)
        for item, result in zip(batch, results, strict=True):
            _store(factory, item, env, phase, round_, plan.score, result,
                   env_score(result.result, anchor, confidence, metric) if result.result else None)
        if phase == EvalPhase.TRAIN and early_stopping is not None and env == run.train_envs[0]:
            for item in batch:
                _stop_if_hopeless(factory, run.id, item, env, early_stopping)
    for item in pending:
        record_evaluation(factory, item.job_id, phase, round_)


def _stop_if_hopeless(factory: sessionmaker[Session], run_id: str, item: _Pending, env: str,
                      rule: dict[str, float]) -> None:
    """Successive halving after the first environment: a candidate scoring more than `margin` below the median
    of the run's other candidates there (once `min_evaluated` have a score) is not trained on the others."""
    with session_scope(factory) as session:
        rows = session.execute(select(Evaluation.candidate_id, Evaluation.normalised_score).join(Candidate).where(
            Candidate.run_id == run_id, Evaluation.phase == EvalPhase.TRAIN, Evaluation.env == env,
            Evaluation.outcome == Outcome.ok, Evaluation.normalised_score.is_not(None))).all()
        mine = next((value for candidate_id, value in rows if candidate_id == item.candidate_id), None)
        others = [value for candidate_id, value in rows if candidate_id != item.candidate_id]
        if mine is None or len(others) < rule["min_evaluated"] or mine >= median(others) - rule["margin"]:
            return
        session.execute(update(Candidate).where(Candidate.id == item.candidate_id).values(stopped_early=True))
    item.envs = [env]
