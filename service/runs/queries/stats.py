"""Per operator, model and island of a run: how each part of the search did (grouped queries)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Candidate, LlmCall, Run
from service.proposers.search import ProposalRecord, improvements
from service.runs.spec import LLMProposerSpec, RunSpec
from service.runs.views import IslandStats, ModelStats, OperatorStats
from workers.vocabulary import Outcome


def operator_stats(session: Session, run: Run, spec: RunSpec) -> list[OperatorStats]:
    """Evolution's operators in this run: children tried and turned down (counted when proposed), then the
    candidates each made and how they scored (one grouped query; none for a run no operator made)."""
    if spec.proposer.kind != "evolution" or not run.operator_attempts:
        return []
    scored = Candidate.counted_score
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
                                  Candidate.outcome, Candidate.score, Candidate.finished)
                           .where(Candidate.run_id == run_id, Candidate.reference.is_(None))
                           .order_by(Candidate.index)).all()
    return [ProposalRecord(candidate_id=row.id, is_warm_start=row.is_warm_start, model=row.model,
                           parent_ids=list(row.parent_ids), score=row.score, ok=row.outcome == Outcome.ok,
                           finished=bool(row.finished))
            for row in rows]


def model_stats(session: Session, run: Run, spec: RunSpec) -> list[ModelStats]:
    """Each model of an LLM run's ensemble: proposals, improvements, tokens, cost and best (two queries)."""
    if not isinstance(spec.proposer, LLMProposerSpec):
        return []
    models = spec.proposer.models
    made = {row[0]: row[1:] for row in session.execute(
        select(Candidate.model, func.count(), func.count().filter(Candidate.outcome == Outcome.ok),
               func.max(Candidate.counted_score))
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
    rows = session.execute(select(Candidate.id, Candidate.island, Candidate.counted_score)
                           .where(Candidate.run_id == run.id, Candidate.island.is_not(None))).all()
    stats = []
    for island in range(islands):
        mine = [(score, cid) for cid, home, score in rows if home == island]
        ranked = [(score, cid) for score, cid in mine if score is not None]
        best = max(ranked) if ranked else (None, None)
        stats.append(IslandStats(island=island, proposals=len(mine), best_candidate_id=best[1], best_score=best[0]))
    return stats
