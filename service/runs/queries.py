"""Read models: what the API and the web UI show of runs and candidates, read in one place.

Ownership (a key sees only the runs it owns: `owned_run`, `owned_candidate`, None otherwise), the run
summary the API returns and the run page shows (`run_out`, two queries), and a candidate in full with
its lineage (`lineage`: parents, children, the diff against its first parent; `candidate_detail`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, String, and_, bindparam, cast, func, or_, select
from sqlalchemy.orm import Session

from service.api.schemas import (
    BestCandidate,
    CandidateDetail,
    CandidateSummary,
    Discovery,
    EvaluationOut,
    IslandStats,
    LlmCallOut,
    MetaTestCell,
    MetaTestRow,
    ModelStats,
    OperatorStats,
    Progress,
    RunListItem,
    RunOut,
    Spent,
    TrainedOn,
    WebhookOut,
)
from service.db.models import ApiKey, Candidate, Evaluation, Job, LlmCall, Run, WebhookEndpoint, is_proposal
from service.proposers.search import ProposalRecord, improvements
from service.runs.orchestrator import SEARCH_JOBS, discovery_message
from service.runs.spec import LLMProposerSpec, RunSpec, spec_of
from workers.targets import TARGETS
from workers.vocabulary import CandidateStatus, EvalPhase, JobStatus, Outcome


def owned_run(session: Session, key: ApiKey, run_id: str) -> Run | None:
    """The run if `key` owns it, else None (a run of another key is as absent as a missing one)."""
    run = session.get(Run, run_id)
    return run if run is not None and run.owner_key_id == key.id else None


def owned_candidate(session: Session, key: ApiKey, candidate_id: str) -> Candidate | None:
    """The candidate if `key` owns its run, else None."""
    return session.scalar(select(Candidate).join(Run, Run.id == Candidate.run_id)
                          .where(Candidate.id == candidate_id, Run.owner_key_id == key.id))


def runs_page(session: Session, owner_key_id: str, status: str | None, target: str | None, limit: int,
              after: tuple[datetime, str] | None = None) -> tuple[list[RunListItem], bool]:
    """The owner's runs, newest first, after (created_at, id) `after`: up to `limit`, and whether more follow."""
    proposer = func.coalesce(Run.proposer["kind"].as_string(), "?").label("proposer")
    query = select(Run.id, Run.status, Run.target, proposer,
                   Run.profile, Run.budget["candidates"].as_integer().label("candidates_budget"), Run.best_score,
                   Run.best_verdict, Run.created_at, Run.finished_at).where(Run.owner_key_id == owner_key_id)
    if status:
        query = query.where(Run.status == status)
    if target:
        query = query.where(Run.target == target)
    if after:
        created_at, run_id = after
        query = query.where(or_(Run.created_at < created_at, and_(Run.created_at == created_at, Run.id < run_id)))
    rows = session.execute(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)).all()
    return [RunListItem.model_validate(r._mapping) for r in rows[:limit]], len(rows) > limit


def comparison_fields(stats: dict[str, Any] | None) -> dict[str, Any]:
    """`score_ci`, `p_improvement`, `verdict` and `seeds` of a stored comparison (workers.results.Comparison)."""
    if not stats:
        return {"score_ci": None, "p_improvement": None, "verdict": None, "seeds": None}
    return {"score_ci": tuple(stats["ci"]), "p_improvement": stats["p_improvement"], "verdict": stats["verdict"],
            "seeds": stats["seeds"]}


def _cell(e: Row[Any] | None) -> MetaTestCell | None:
    if e is None:
        return None
    return MetaTestCell(normalised_score=e.normalised_score, score_basis=e.score_basis, final_return=e.final_return,
                        outcome=e.outcome, **comparison_fields((e.stats or {}).get("comparison")))


def discovery_of(run: Run) -> Discovery:
    """What the run found, in the words every face repeats."""
    return Discovery(found=run.best_verdict == "better", verdict=run.best_verdict, confidence=run.confidence,
                     verification_seeds=run.verification_seeds, message=discovery_message(run))


# run_out's two statements, built once (bound per call): building them per request cost more CPU than running them.
_RUN = bindparam("run_id")
_BEST = bindparam("best_id")
_ENDPOINT = select(WebhookEndpoint.url, WebhookEndpoint.events).where(WebhookEndpoint.run_id == _RUN).limit(1)
RUN_FIGURES = select(
    select(func.count()).select_from(Candidate).where(
        Candidate.run_id == _RUN, is_proposal(),
        Candidate.status.in_([CandidateStatus.EVALUATED, CandidateStatus.FAILED])).scalar_subquery(),
    select(func.count()).select_from(Job).where(
        Job.run_id == _RUN, Job.kind.in_(list(SEARCH_JOBS)),
        Job.status.in_([JobStatus.PENDING, JobStatus.CLAIMED])).scalar_subquery(),
    select(Candidate.id).where(Candidate.run_id == _RUN, Candidate.is_warm_start).scalar_subquery(),
    select(Candidate.index).where(Candidate.id == _BEST).scalar_subquery(),
    select(Candidate.name).where(Candidate.id == _BEST).scalar_subquery(),
    select(Candidate.stats).where(Candidate.id == _BEST).scalar_subquery(),
    _ENDPOINT.with_only_columns(WebhookEndpoint.url).scalar_subquery(),
    _ENDPOINT.with_only_columns(WebhookEndpoint.events).scalar_subquery(),
)
RUN_META_TESTS = select(Evaluation.candidate_id, Evaluation.env, Evaluation.normalised_score, Evaluation.score_basis,
                        Evaluation.final_return, Evaluation.outcome, Evaluation.stats, Candidate.reference
                        ).join(Candidate).where(Candidate.run_id == _RUN, Evaluation.phase == EvalPhase.TEST)


def trained_on(session: Session, run_id: str) -> list[TrainedOn]:
    """The platforms and devices the trainer ran the run's evaluations on, most evaluations first."""
    count = func.count()
    rows = session.execute(select(Evaluation.platform, Evaluation.device, count).join(Candidate)
                           .where(Candidate.run_id == run_id, Evaluation.platform.is_not(None))
                           .group_by(Evaluation.platform, Evaluation.device).order_by(count.desc())).all()
    return [TrainedOn(platform=platform, device=device, evaluations=n) for platform, device, n in rows]


def run_out(session: Session, run: Run, webhook_secret: str | None = None) -> RunOut:
    """The run as the API shows it: one row of figures, the meta-test rows, where it was trained, and the
    search's breakdowns where the run has them."""
    ids = {"run_id": run.id, "best_id": run.best_candidate_id}
    spec = spec_of(run)
    done, in_flight, warm_id, best_index, best_name, best_stats, endpoint_url, endpoint_events = session.execute(
        RUN_FIGURES, ids).one()
    tests = session.execute(RUN_META_TESTS, ids).all()
    by_key = {(e.candidate_id, e.env): e for e in tests}
    references = {e.reference: e.candidate_id for e in tests if e.reference is not None}
    reference_names = [r.name for r in TARGETS[run.target].references]
    seconds = None
    if run.started_at:
        seconds = ((run.finished_at or datetime.now(run.started_at.tzinfo)) - run.started_at).total_seconds()
    return RunOut(
        id=run.id, status=run.status, target=run.target,
        environments={"train": run.train_envs, "test": run.test_envs}, profile=run.profile, proposer=run.proposer,
        budget=run.budget, concurrency=run.concurrency, seed=run.seed, preset=spec.preset,
        seeds_per_eval=run.seeds_per_eval, metatest_seeds=run.metatest_seeds, learning_rate=run.lr_protocol,
        verification_seeds=run.verification_seeds, confidence=run.confidence, metric=run.metric,
        discovery=discovery_of(run),
        progress=Progress(candidates_done=done or 0, candidates_budget=spec.budget.candidates,
                          in_flight=in_flight or 0),
        spent=Spent(candidates=done or 0, tokens=run.tokens_used, cost_usd=run.cost_usd,
                    duplicates_skipped=run.duplicates_skipped, seconds=seconds),
        best=BestCandidate(candidate_id=run.best_candidate_id, index=best_index, name=best_name,
                           score=run.best_score, **comparison_fields((best_stats or {}).get("verification")))
        if run.best_candidate_id and best_name is not None else None,
        meta_test=[MetaTestRow(env=env, best=_cell(by_key.get((run.best_candidate_id, env))),
                               warm_start=_cell(by_key.get((warm_id, env))),
                               references={name: _cell(by_key.get((references.get(name), env)))
                                           for name in reference_names})
                   for env in run.test_envs],
        operators=operator_stats(session, run, spec), search=run.search, models=model_stats(session, run, spec),
        islands=island_stats(session, run, spec),
        error=run.error, provenance=run.config.get("provenance"), trained_on=trained_on(session, run.id),
        webhook=WebhookOut(url=endpoint_url, events=endpoint_events, secret=webhook_secret)
        if endpoint_url is not None else None,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        links={"self": f"/v1/runs/{run.id}", "candidates": f"/v1/runs/{run.id}/candidates",
               "events": f"/v1/runs/{run.id}/events", "best": f"/v1/runs/{run.id}/best.py"},
    )


# What a candidate list shows: loaded as columns, not whole rows (code and thought stay in the database).
SUMMARY_COLUMNS = (Candidate.id, Candidate.run_id, Candidate.index, Candidate.name, Candidate.is_warm_start,
                   Candidate.reference, Candidate.status, Candidate.outcome, Candidate.score, Candidate.verified_score,
                   Candidate.verdict, Candidate.stats,
                   Candidate.parent_ids, Candidate.error, Candidate.duplicate_of, Candidate.operator,
                   Candidate.model, Candidate.island, Candidate.stopped_early, Candidate.created_at,
                   Candidate.evaluated_at)


def operator_stats(session: Session, run: Run, spec: RunSpec) -> list[OperatorStats]:
    """Evolution's operators in this run: children tried and turned down (counted when proposed), then the
    candidates each made and how they scored (one grouped query; none for a run no operator made)."""
    if spec.proposer.kind != "evolution" or not run.operator_attempts:
        return []
    scored = func.coalesce(Candidate.verified_score, Candidate.score)
    rows = session.execute(select(
        Candidate.operator, func.count(), func.count().filter(Candidate.outcome == Outcome.ok),
        func.count().filter(scored >= 0.8), func.count().filter(scored > 1.0),
    ).where(Candidate.run_id == run.id, Candidate.operator.is_not(None)).group_by(Candidate.operator)).all()
    made = {operator: (proposed, ok, within, above) for operator, proposed, ok, within, above in rows}
    stats = []
    for operator in sorted(set(made) | set(run.operator_attempts)):
        fates = run.operator_attempts.get(operator, {})
        proposed, ok, within, above = made.get(operator, (0, 0, 0, 0))
        stats.append(OperatorStats(
            operator=operator, tried=fates.get("tried", proposed), broke_a_rule=fates.get("broke a rule", 0),
            behavioural_duplicates=fates.get("behavioural duplicate", 0), proposed=proposed, trained_ok=ok,
            within_20_percent=within, above_warm_start=above, success_rate=within / proposed if proposed else None))
    return stats


def proposal_records(session: Session, run_id: str) -> list[ProposalRecord]:
    """The run's candidates in proposal order, as the ensemble bandit's reward reads them (references aside)."""
    rows = session.execute(select(Candidate.id, Candidate.is_warm_start, Candidate.model, Candidate.parent_ids,
                                  Candidate.outcome, Candidate.score, Candidate.status)
                           .where(Candidate.run_id == run_id, Candidate.reference.is_(None))
                           .order_by(Candidate.index)).all()
    return [ProposalRecord(candidate_id=row.id, is_warm_start=row.is_warm_start, model=row.model,
                           parent_ids=list(row.parent_ids), score=row.score, ok=row.outcome == Outcome.ok,
                           finished=row.status in (CandidateStatus.EVALUATED, CandidateStatus.FAILED))
            for row in rows]


def model_stats(session: Session, run: Run, spec: RunSpec) -> list[ModelStats]:
    """Each model of an LLM run's ensemble: proposals, improvements, tokens, cost and best (two queries)."""
    if not isinstance(spec.proposer, LLMProposerSpec):
        return []
    models = spec.proposer.models
    scored = func.coalesce(Candidate.verified_score, Candidate.score)
    made = {row[0]: row[1:] for row in session.execute(
        select(Candidate.model, func.count(), func.count().filter(Candidate.outcome == Outcome.ok), func.max(scored))
        .where(Candidate.run_id == run.id, Candidate.model.is_not(None)).group_by(Candidate.model))}
    spent = {row[0]: row[1:] for row in session.execute(
        select(LlmCall.model,
               func.sum(func.coalesce(LlmCall.prompt_tokens, 0) + func.coalesce(LlmCall.completion_tokens, 0)),
               func.sum(func.coalesce(LlmCall.cost_usd, 0.0)))
        .where(LlmCall.run_id == run.id).group_by(LlmCall.model))}
    improved: dict[str, int] = {}
    for model, better in improvements(proposal_records(session, run.id)):
        improved[model] = improved.get(model, 0) + int(better)
    stats = []
    for model in [*models, *(m for m in made if m not in models)]:
        proposals, ok, best = made.get(model, (0, 0, None))
        tokens, cost = spent.get(model, (0, 0.0))
        stats.append(ModelStats(model=model, proposals=proposals, evaluated=ok, improved=improved.get(model, 0),
                                tokens=int(tokens or 0), cost_usd=float(cost or 0.0), best_score=best))
    return stats


def island_stats(session: Session, run: Run, spec: RunSpec) -> list[IslandStats]:
    """Each island's proposals and best (none for a run with one island)."""
    islands = spec.search.islands
    if islands <= 1:
        return []
    rows = session.execute(select(Candidate.id, Candidate.island, func.coalesce(Candidate.verified_score,
                                                                                Candidate.score))
                           .where(Candidate.run_id == run.id, Candidate.island.is_not(None))).all()
    stats = []
    for island in range(islands):
        mine = [(score, cid) for cid, home, score in rows if home == island]
        ranked = [(score, cid) for score, cid in mine if score is not None]
        best = max(ranked) if ranked else (None, None)
        stats.append(IslandStats(island=island, proposals=len(mine), best_candidate_id=best[1], best_score=best[0]))
    return stats


def candidate_summary(c: Candidate | Row[Any]) -> CandidateSummary:
    """A candidate, or a row of SUMMARY_COLUMNS, as a list item."""
    search, verified = (c.stats or {}).get("search"), (c.stats or {}).get("verification")
    return CandidateSummary(
        id=c.id, run_id=c.run_id, index=c.index, name=c.name, is_warm_start=c.is_warm_start,
        reference=c.reference, status=c.status,
        outcome=c.outcome, score=c.score, verified_score=c.verified_score, verdict=c.verdict,
        score_ci=tuple(search["ci"]) if search else None, verified_ci=tuple(verified["ci"]) if verified else None,
        p_improvement=(verified or search or {}).get("p_improvement"), seeds=verified["seeds"] if verified else None,
        parent_ids=list(c.parent_ids),
        error=c.error, duplicate_of=c.duplicate_of, operator=c.operator, model=c.model, island=c.island,
        stopped_early=c.stopped_early, created_at=c.created_at,
        evaluated_at=c.evaluated_at,
    )


@dataclass
class Lineage:
    parents: list[Candidate]
    children: list[Row[Any]]  # id, index and name of each
    diff: str | None  # unified diff against the first parent ("" when the code is the same)


def lineage(session: Session, candidate: Candidate) -> Lineage:
    """A candidate's parents (in its order), its children (by index) and the diff against its first parent."""
    parents = [p for p in (session.get(Candidate, pid) for pid in candidate.parent_ids) if p is not None]
    diff = None
    if parents:
        first = parents[0]
        diff = "".join(difflib.unified_diff(first.code.splitlines(keepends=True),
                                            candidate.code.splitlines(keepends=True),
                                            fromfile=f"#{first.index} {first.name}",
                                            tofile=f"#{candidate.index} {candidate.name}"))
    children = session.execute(select(Candidate.id, Candidate.index, Candidate.name, Candidate.parent_ids).where(
        Candidate.run_id == candidate.run_id, cast(Candidate.parent_ids, String).contains(candidate.id))
        .order_by(Candidate.index)).all()
    return Lineage(parents=parents, children=[c for c in children if candidate.id in c.parent_ids], diff=diff)


def candidate_detail(session: Session, c: Candidate) -> CandidateDetail:
    """The candidate in full: code, thought, lineage, evaluations and the LLM call that made it."""
    family = lineage(session, c)
    evaluations = session.scalars(select(Evaluation).where(Evaluation.candidate_id == c.id)
                                  .order_by(Evaluation.created_at)).all()
    call = session.get(LlmCall, c.llm_call_id) if c.llm_call_id else None
    return CandidateDetail(
        **candidate_summary(c).model_dump(), code=c.code, thought=c.thought, ast_hash=c.ast_hash, diff=family.diff,
        children=[child.id for child in family.children],
        evaluations=[EvaluationOut(
            env=e.env, phase=e.phase, round=e.round, seeds=e.seeds, learning_rates=e.learning_rates,
            returns=e.returns, curves=e.curves, best_lr=e.best_lr, final_return=e.final_return,
            normalised_score=e.normalised_score, score_basis=e.score_basis, scores=(e.stats or {}).get("scores"),
            **{k: v for k, v in comparison_fields((e.stats or {}).get("comparison")).items() if k != "seeds"},
            outcome=e.outcome, error=e.error, compile_seconds=e.compile_seconds,
            train_seconds=e.train_seconds, platform=e.platform, device=e.device,
        ) for e in evaluations],
        llm_call=LlmCallOut(
            id=call.id, model=call.model, messages=call.messages, reply=call.reply,
            prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
            latency_ms=call.latency_ms, cost_usd=call.cost_usd, error=call.error,
        ) if call else None,
    )
