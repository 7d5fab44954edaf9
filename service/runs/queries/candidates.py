"""Candidates: lists and pages of a run's candidates, a candidate in full with its lineage, and the series the
run page's charts draw."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import Integer, Row, Select, String, bindparam, cast, func, select
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Candidate, Evaluation, LlmCall, is_proposal
from service.runs.queries.cost import CANDIDATE_COST
from service.runs.queries.ownership import OWNED_RUN_ID, owns_run
from service.runs.queries.rows import views_of
from service.runs.views import CandidateDetail, CandidateSummary, EvaluationOut, LlmCallOut

# What a candidate list shows: loaded as columns, not whole rows (code and thought stay in the database).
SUMMARY_FIELDS = ("id", "run_id", "index", "name", "is_warm_start", "reference", "status", "outcome", "score",
                  "verified_score", "verdict", "stats", "parent_ids", "error", "duplicate_of", "operator", "model",
                  "island", "stopped_early", "kind", "created_at", "evaluated_at")
SUMMARY_COLUMNS = (*(getattr(Candidate, name) for name in SUMMARY_FIELDS), *CANDIDATE_COST)
CANDIDATE_SUMMARIES = TypeAdapter(list[CandidateSummary])


@dataclass
class CandidatesPage:
    items: list[CandidateSummary]
    next_position: int | None  # the last index shown (sorted by time) or the next offset (by score); None: the end
    run_owned: bool  # False only when the page is empty because the key owns no such run


@cache
def _page_statement(by_status: bool, by_outcome: bool, sort: Literal["time", "score"], after: bool) -> Select[Any]:
    """A page of a run's candidates with the filters asked for, built once per combination (values bound per
    call). The page is chosen on the ids and sort keys alone, then only its rows are read in full and their cost
    summed (summed for every candidate of the run, the cost was most of the statement's time)."""
    owned = OWNED_RUN_ID.scalar_subquery()
    query = select(Candidate.id, Candidate.index, Candidate.counted_score.label("counted_score")).where(
        Candidate.run_id == owned)
    if by_status:
        query = query.where(Candidate.status == bindparam("status"))
    if by_outcome:
        query = query.where(Candidate.outcome == bindparam("outcome"))
    if sort == "time":
        if after:
            query = query.where(Candidate.index > bindparam("position"))
        query = query.order_by(Candidate.index)
    else:
        query = query.order_by(Candidate.counted_score.desc().nulls_last(), Candidate.index).offset(
            bindparam("offset", type_=Integer))
    page = query.limit(bindparam("limit", type_=Integer)).subquery("page")
    in_order = (page.c.index,) if sort == "time" else (page.c.counted_score.desc().nulls_last(), page.c.index)
    return select(*SUMMARY_COLUMNS).join(page, page.c.id == Candidate.id).order_by(*in_order)


def candidates_page(session: Session, key: ApiKey, run_id: str, *, status: str | None, outcome: str | None,
                    sort: Literal["time", "score"], limit: int, position: int | None) -> CandidatesPage:
    """One page of a run's candidates, by index after `position` or by the score that counts from offset
    `position`; the ownership check is in the same statement."""
    values = {"run_id": run_id, "owner_key_id": key.id, "status": status, "outcome": outcome, "position": position,
              "offset": position or 0, "limit": limit + 1}
    # Columns only: on the session's connection, past the ORM's execution (a tenth of a millisecond a statement).
    result = session.connection().execute(_page_statement(bool(status), bool(outcome), sort, position is not None),
                                          values)
    rows = result.all()
    items = views_of(result, rows[:limit], CANDIDATE_SUMMARIES)
    next_position = None
    if len(rows) > limit:
        next_position = items[-1].index if sort == "time" else (position or 0) + limit
    # An empty page of the key's run, or no run of the key's: only then is it worth telling apart.
    run_owned = bool(rows) or owns_run(session, key.id, run_id)
    return CandidatesPage(items, next_position, run_owned)


# A candidate in full: statements built once, bound per call. Its children name it in their parent_ids.
CHILDREN = select(Candidate.id, Candidate.index, Candidate.name, Candidate.parent_ids).where(
    Candidate.run_id == bindparam("run_id"), cast(Candidate.parent_ids, String).contains(bindparam("candidate_id"))
).order_by(Candidate.index)
PARENTS = select(Candidate).where(Candidate.id.in_(bindparam("ids", expanding=True)))  # in one statement
EVALUATIONS = select(Evaluation).where(Evaluation.candidate_id == bindparam("candidate_id")).order_by(
    Evaluation.created_at)


@dataclass
class Lineage:
    parents: list[Candidate]
    children: list[Row[Any]]  # id, index and name of each
    diff: str | None  # unified diff against the first parent ("" when the code is the same)


def lineage(session: Session, candidate: Candidate) -> Lineage:
    """A candidate's parents (in its order), its children (by index) and the diff against its first parent."""
    found = {p.id: p for p in session.scalars(PARENTS, {"ids": list(candidate.parent_ids)})} \
        if candidate.parent_ids else {}
    parents = [found[pid] for pid in candidate.parent_ids if pid in found]
    diff = None
    if parents:
        first = parents[0]
        diff = "".join(difflib.unified_diff(first.code.splitlines(keepends=True),
                                            candidate.code.splitlines(keepends=True),
                                            fromfile=f"#{first.index} {first.name}",
                                            tofile=f"#{candidate.index} {candidate.name}"))
    children = session.connection().execute(CHILDREN, {"run_id": candidate.run_id, "candidate_id": candidate.id}).all()
    return Lineage(parents=parents, children=[c for c in children if candidate.id in c.parent_ids], diff=diff)


def evaluations_of(session: Session, candidate: Candidate) -> list[Evaluation]:
    """The candidate's evaluation rows in the order they were written."""
    return list(session.scalars(EVALUATIONS, {"candidate_id": candidate.id}))


def candidate_detail(session: Session, c: Candidate) -> CandidateDetail:
    """The candidate in full: code, thought, lineage, evaluations and the LLM call that made it."""
    family = lineage(session, c)
    call = session.get(LlmCall, c.llm_call_id) if c.llm_call_id else None
    rows = evaluations_of(session, c)
    cost = {"env_steps": sum(e.env_steps or 0 for e in rows), "trainer_seconds": sum(e.trainer_seconds or 0.0
                                                                                       for e in rows)}
    return CandidateDetail(
        **{**CandidateSummary.model_validate(c).model_dump(), **cost},
        code=c.code, thought=c.thought, ast_hash=c.ast_hash,
        diff=family.diff, children=[child.id for child in family.children],
        evaluations=[EvaluationOut.model_validate(e) for e in rows],
        llm_call=LlmCallOut.model_validate(call) if call else None,
    )


def warm_start_evaluations(session: Session, run_id: str) -> dict[tuple[str, str], Evaluation]:
    """The run's warm start's evaluations by (environment, phase)."""
    return {(e.env, e.phase): e for e in session.scalars(
        select(Evaluation).join(Candidate).where(Candidate.run_id == run_id, Candidate.is_warm_start))}


def evaluated_in_order(session: Session, run_id: str) -> list[Row[Any]]:
    """(index, id, name, score, status) of every finished proposal, in evaluation order."""
    return list(session.execute(
        select(Candidate.index, Candidate.id, Candidate.name, Candidate.score, Candidate.status)
        .where(Candidate.run_id == run_id, is_proposal(), Candidate.finished)
        .order_by(Candidate.evaluated_at, Candidate.index)))


def island_scores(session: Session, run_id: str) -> list[Row[Any]]:
    """(index, island, score) of every finished proposal that belongs to an island, by index."""
    return list(session.execute(
        select(Candidate.index, Candidate.island, Candidate.score)
        .where(Candidate.run_id == run_id, is_proposal(), Candidate.island.is_not(None), Candidate.finished)
        .order_by(Candidate.index)))


LEADERBOARD_SORTS = {"score": Candidate.counted_score, "index": Candidate.index, "name": Candidate.name,
                     "status": Candidate.status, "evaluated": Candidate.evaluated_at}


def leaderboard(session: Session, run_id: str, sort: str, descending: bool, limit: int) -> tuple[list[Candidate], int]:
    """The run's candidates (references aside: they show in the meta-test) sorted by one of LEADERBOARD_SORTS,
    at most `limit` of them, and how many there are in all."""
    column = LEADERBOARD_SORTS[sort]
    direction = column.desc().nulls_last() if descending else column.asc().nulls_last()
    mine = (Candidate.run_id == run_id, Candidate.reference.is_(None))
    rows = session.scalars(select(Candidate).where(*mine).order_by(direction, Candidate.index).limit(limit)).all()
    total = session.scalar(select(func.count()).select_from(Candidate).where(*mine)) or 0
    return list(rows), total


def indices(session: Session, candidate_ids: set[str]) -> dict[str, int]:
    """Each candidate's index in its run, for links written as #index."""
    if not candidate_ids:
        return {}
    return dict(session.execute(select(Candidate.id, Candidate.index).where(Candidate.id.in_(candidate_ids))).all())
