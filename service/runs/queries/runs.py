"""Runs: the summary the API returns and the run page shows (`run_out`, two queries; `owned_run_out` reads the run
itself in the first), the list of a key's runs, and what a run found (`discovery_of`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Integer, Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session, aliased

from service.db.models import ApiKey, Candidate, ESGeneration, Evaluation, Event, Job, Run, WebhookEndpoint, is_proposal
from service.runs.orchestrator import SEARCH_JOBS, discovery_message
from service.runs.queries.cost import COST_VALUES, cost_columns, cost_of
from service.runs.queries.rows import json_rows, views_of
from service.runs.queries.stats import island_stats, model_stats, operator_stats
from service.runs.spec import ESProposerSpec, spec_of
from service.runs.views import (
    BestCandidate,
    Discovery,
    MetaTestCell,
    MetaTestRow,
    Progress,
    RunListItem,
    RunOut,
    Spent,
    TrainedOn,
    WebhookOut,
)
from workers.targets import TARGETS
from workers.vocabulary import CandidateKind, EvalPhase, JobStatus


def comparison_fields(stats: dict[str, Any] | None) -> dict[str, Any]:
    """`score_ci`, `p_improvement`, `verdict` and `seeds` of a stored comparison (workers.results.Comparison)."""
    if not stats:
        return {"score_ci": None, "p_improvement": None, "verdict": None, "seeds": None}
    return {"score_ci": tuple(stats["ci"]), "p_improvement": stats["p_improvement"], "verdict": stats["verdict"],
            "seeds": stats["seeds"]}


def _cell(row: Any) -> MetaTestCell | None:
    return None if row is None else MetaTestCell.model_validate(row._asdict())


def discovery_of(run: Run) -> Discovery:
    """What the run found, in the words every face repeats."""
    return Discovery(found=run.best_verdict == "better", verdict=run.best_verdict, confidence=run.confidence,
                     verification_seeds=run.verification_seeds, message=discovery_message(run))


def made_by(proposer: str, kind: str, es_generation: int | None) -> str:
    """What made a run's candidate: the run's proposer, or `distilled` for a network no ES generation made."""
    return "distilled" if kind == CandidateKind.NETWORK and es_generation is None else proposer


# run_out's statements, built once (bound per call): building them per request cost more CPU than running them.
# The figures are read beside the run's row (joined to its best candidate), in one statement with the run itself
# where the run is looked up by id (`owned_run_out`). Kept under 4,096 characters: psycopg parses a longer
# statement's placeholders again at every execution.
_RUN = bindparam("run_id")
_BEST = aliased(Candidate, name="best")
_ENDPOINT = select(WebhookEndpoint.url, WebhookEndpoint.events).where(WebhookEndpoint.run_id == _RUN).limit(1)
_DEVICES = (select(Evaluation.platform, Evaluation.device, func.count().label("evaluations")).join(Candidate)
            .where(Candidate.run_id == _RUN, Evaluation.platform.is_not(None))
            .group_by(Evaluation.platform, Evaluation.device).subquery())
FIGURES = (
    select(func.count()).select_from(Candidate).where(
        Candidate.run_id == _RUN, is_proposal(), Candidate.finished).scalar_subquery(),
    select(func.count()).select_from(Job).where(
        Job.run_id == _RUN, Job.kind.in_(list(SEARCH_JOBS)),
        Job.status.in_([JobStatus.PENDING, JobStatus.CLAIMED])).scalar_subquery(),
    select(Candidate.id).where(Candidate.run_id == _RUN, Candidate.is_warm_start).scalar_subquery(),
    _BEST.index, _BEST.name, _BEST.stats, _BEST.kind, _BEST.es_generation,
    _ENDPOINT.with_only_columns(WebhookEndpoint.url).scalar_subquery(),
    _ENDPOINT.with_only_columns(WebhookEndpoint.events).scalar_subquery(),
    select(json_rows(platform=_DEVICES.c.platform, device=_DEVICES.c.device, evaluations=_DEVICES.c.evaluations)
           ).scalar_subquery(),  # where it was trained
    select(func.count()).select_from(ESGeneration).where(ESGeneration.run_id == _RUN).scalar_subquery(),
    *cost_columns(_RUN),
)
RUN_FIGURES = select(*FIGURES).select_from(Run).outerjoin(_BEST, _BEST.id == Run.best_candidate_id).where(
    Run.id == _RUN)
OWNED_RUN_AND_FIGURES = select(Run, *FIGURES).outerjoin(_BEST, _BEST.id == Run.best_candidate_id).where(
    Run.id == _RUN, Run.owner_key_id == bindparam("owner_key_id"))
RUN_META_TESTS = select(Evaluation.candidate_id, Evaluation.env, Evaluation.normalised_score, Evaluation.score_basis,
                        Evaluation.final_return, Evaluation.outcome, Evaluation.stats, Candidate.reference
                        ).join(Candidate).where(Candidate.run_id == _RUN, Evaluation.phase == EvalPhase.TEST)
TRAINED_ON = TypeAdapter(list[TrainedOn])


def trained_on(devices: list[dict[str, Any]] | None) -> list[TrainedOn]:
    """The platforms and devices the trainer ran the run's evaluations on (as `FIGURES` reads them), most
    evaluations first."""
    return TRAINED_ON.validate_python(sorted(devices or [], key=lambda device: -device["evaluations"]))


def run_out(session: Session, run: Run, webhook_secret: str | None = None) -> RunOut:
    """The run as the API shows it: one row of figures, the meta-test rows, and the search's breakdowns where
    the run has them."""
    return _run_out(session, run, session.execute(RUN_FIGURES, {"run_id": run.id}).one(), webhook_secret)


def owned_run_out(session: Session, key: ApiKey, run_id: str) -> RunOut | None:
    """`run_out` of the key's run, None when the key owns no such run: the run and its figures in one statement."""
    row = session.execute(OWNED_RUN_AND_FIGURES, {"run_id": run_id, "owner_key_id": key.id}).one_or_none()
    return None if row is None else _run_out(session, row[0], row[1:])


def _run_out(session: Session, run: Run, figures: Sequence[Any], webhook_secret: str | None = None) -> RunOut:
    ids = {"run_id": run.id}
    spec = spec_of(run)
    (done, in_flight, warm_id, best_index, best_name, best_stats, best_kind, best_generation, endpoint_url,
     endpoint_events, devices, told) = figures[:-COST_VALUES]
    es = spec.proposer if isinstance(spec.proposer, ESProposerSpec) else None
    tests = session.connection().execute(RUN_META_TESTS, ids).all()  # columns only (the figures flushed)
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
                          in_flight=in_flight or 0, generations_done=told if es else None,
                          generations_budget=es.es.generations if es else None),
        spent=Spent(candidates=done or 0, tokens=run.tokens_used, cost_usd=run.cost_usd,
                    duplicates_skipped=run.duplicates_skipped, seconds=seconds),
        best=BestCandidate(candidate_id=run.best_candidate_id, index=best_index, name=best_name,
                           score=run.best_score, **comparison_fields((best_stats or {}).get("verification")),
                           kind=best_kind, readable=best_kind == CandidateKind.CODE,
                           made_by="warm start" if run.best_candidate_id == warm_id
                           else made_by(spec.proposer.kind, best_kind, best_generation))
        if run.best_candidate_id and best_name is not None else None,
        meta_test=[MetaTestRow(env=env, best=_cell(by_key.get((run.best_candidate_id, env))),
                               warm_start=_cell(by_key.get((warm_id, env))),
                               references={name: _cell(by_key.get((references.get(name), env)))
                                           for name in reference_names})
                   for env in run.test_envs],
        cost=cost_of(figures[-COST_VALUES:]),
        operators=operator_stats(session, run, spec), search=run.search, models=model_stats(session, run, spec),
        islands=island_stats(session, run, spec),
        error=run.error, provenance=run.config.get("provenance"), trained_on=trained_on(devices),
        webhook=WebhookOut(url=endpoint_url, events=endpoint_events, secret=webhook_secret)
        if endpoint_url is not None else None,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        links={"self": f"/v1/runs/{run.id}", "candidates": f"/v1/runs/{run.id}/candidates",
               "events": f"/v1/runs/{run.id}/events", "best": f"/v1/runs/{run.id}/best.py",
               **({"generations": f"/v1/runs/{run.id}/generations"} if es else {})},
    )


_PROPOSER = func.coalesce(Run.proposer["kind"].as_string(), "?").label("proposer")
_RUNS = select(Run.id, Run.status, Run.target, _PROPOSER, Run.profile,
               Run.budget["candidates"].as_integer().label("candidates_budget"), Run.best_score, Run.best_verdict,
               Run.created_at, Run.finished_at).where(Run.owner_key_id == bindparam("owner_key_id"))
RUN_LIST_ITEMS = TypeAdapter(list[RunListItem])


@cache
def _runs_statement(by_status: bool, by_target: bool, after: bool) -> Select[Any]:
    """The list of runs with the filters asked for, built once per combination (its values bound per call)."""
    query = _RUNS
    if by_status:
        query = query.where(Run.status == bindparam("status"))
    if by_target:
        query = query.where(Run.target == bindparam("target"))
    if after:
        created_at, run_id = bindparam("after_created_at"), bindparam("after_id")
        query = query.where(or_(Run.created_at < created_at, and_(Run.created_at == created_at, Run.id < run_id)))
    return query.order_by(Run.created_at.desc(), Run.id.desc()).limit(bindparam("limit", type_=Integer))


def runs_page(session: Session, owner_key_id: str, status: str | None, target: str | None, limit: int,
              after: tuple[datetime, str] | None = None) -> tuple[list[RunListItem], bool]:
    """The owner's runs, newest first, after (created_at, id) `after`: up to `limit`, and whether more follow."""
    values: dict[str, Any] = {"owner_key_id": owner_key_id, "status": status, "target": target, "limit": limit + 1}
    if after:
        values["after_created_at"], values["after_id"] = after
    # Columns only: on the session's connection, past the ORM's execution (a tenth of a millisecond a statement).
    result = session.connection().execute(_runs_statement(bool(status), bool(target), bool(after)), values)
    rows = result.all()
    return views_of(result, rows[:limit], RUN_LIST_ITEMS), len(rows) > limit


def recent_runs(session: Session, key: ApiKey, limit: int) -> list[tuple[Run, int]]:
    """The key's newest runs, each with how many of its proposals have finished."""
    runs = session.scalars(select(Run).where(Run.owner_key_id == key.id)
                           .order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)).all()
    if not runs:
        return []
    done = dict(session.execute(
        select(Candidate.run_id, func.count())
        .where(Candidate.run_id.in_([r.id for r in runs]), is_proposal(), Candidate.finished)
        .group_by(Candidate.run_id)).all())
    return [(run, done.get(run.id, 0)) for run in runs]


def run_by_idempotency_key(session: Session, key: ApiKey, idempotency_key: str | None) -> Run | None:
    """The key's run created with this Idempotency-Key, if any."""
    return session.scalar(select(Run).where(Run.owner_key_id == key.id, Run.idempotency_key == idempotency_key))


def webhook_secret(session: Session, run_id: str) -> str | None:
    """The signing secret of the run's webhook (shown once, in the response that created the run)."""
    return session.scalar(select(WebhookEndpoint.secret).where(WebhookEndpoint.run_id == run_id))


def last_event_id(session: Session, run_id: str) -> int:
    """The id of the run's latest event (0: none yet): where a page's live stream picks up."""
    return session.scalar(select(func.max(Event.id)).where(Event.run_id == run_id)) or 0
