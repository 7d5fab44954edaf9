"""Runs: create (idempotent), list, get, cancel, extend, resume, live events (SSE), candidates, an es run's
generations, the best as a .py file, webhook deliveries."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import NonNegativeInt, TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api.deps import KeyDep, RuntimeDep, SessionDep, found, read
from service.api.schemas import Page, Problem
from service.db.models import ApiKey, Run
from service.runs import export
from service.runs.events import event_stream
from service.runs.orchestrator import advance, cancel, extend, extension_mismatch, request_hash, resume
from service.runs.queries.candidates import candidates_page
from service.runs.queries.generations import generations_page
from service.runs.queries.ownership import owned_run, owns_delivery
from service.runs.queries.runs import (
    discovery_of,
    owned_run_out,
    run_by_idempotency_key,
    run_out,
    runs_page,
    webhook_secret,
)
from service.runs.queries.webhooks import deliveries
from service.runs.runner import RunRefused, start_run
from service.runs.spec import Extension, RunSpec
from service.runs.views import CandidateSummary, GenerationOut, RunListItem, RunOut, WebhookDeliveryOut
from service.webhooks import resend
from workers.vocabulary import EventType, Task, TaskKind

router = APIRouter(prefix="/v1", tags=["runs"], responses={401: {"model": Problem}})
NOT_FOUND = {404: {"model": Problem}}


def _encode_cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


RUNS_CURSOR = TypeAdapter(tuple[str, str])  # (created_at, run id)
POSITION_CURSOR = TypeAdapter(tuple[NonNegativeInt])  # (candidate index) or (offset)


def _decode_cursor(cursor: str, shape: TypeAdapter[Any]) -> Any:
    """The cursor's values, checked against the shape this endpoint writes; 400 for anything else."""
    try:
        return shape.validate_json(base64.urlsafe_b64decode(cursor.encode()), strict=True)
    except Exception:  # noqa: BLE001 - any garbage is the client's
        raise HTTPException(400, "cursor is not one this API returned") from None


@router.post("/runs", status_code=201, response_model=RunOut,
             responses={409: {"model": Problem}, 422: {"model": Problem}})
def post_run(spec: RunSpec, key: KeyDep, session: SessionDep, runtime: RuntimeDep,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> RunOut:
    """Start a discovery run. The response shows the webhook secret once."""
    digest = request_hash(spec)

    def replay() -> RunOut | None:
        session.rollback()
        existing = run_by_idempotency_key(session, key, idempotency_key)
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise HTTPException(422, "this Idempotency-Key was used with a different request body")
        return run_out(session, existing)

    if idempotency_key and (previous := replay()):
        return previous
    try:
        run_id = start_run(runtime, spec, owner_key_id=key.id, idempotency_key=idempotency_key)
    except RunRefused as exc:
        raise HTTPException(422, str(exc)) from None
    except IntegrityError:
        if idempotency_key and (previous := replay()):
            return previous
        raise HTTPException(409, "a request with this Idempotency-Key is still in progress") from None
    return run_out(session, session.get(Run, run_id), webhook_secret=webhook_secret(session, run_id))


@router.get("/runs", response_model=Page[RunListItem])
async def list_runs(key: KeyDep, runtime: RuntimeDep,
                    status: Annotated[str | None, Query(description="filter by status")] = None,
                    target: Annotated[str | None, Query(description="filter by target")] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(description="from next_cursor of the previous page")] = None,
                    ) -> Page[RunListItem]:
    after = None
    if cursor:
        created, run_id = _decode_cursor(cursor, RUNS_CURSOR)
        try:
            after = (datetime.fromisoformat(created), run_id)
        except (TypeError, ValueError):
            raise HTTPException(400, "cursor is not one this API returned") from None
    return await read(runtime, _runs_page, key, status, target, limit, after)


def _runs_page(session: Session, key: ApiKey, status: str | None, target: str | None, limit: int,
               after: tuple[datetime, str] | None) -> Page[RunListItem]:
    items, more = runs_page(session, key.id, status, target, limit, after)
    last = items[-1] if more else None
    return Page(items=items, next_cursor=_encode_cursor(last.created_at.isoformat(), last.id) if last else None)


@router.get("/runs/{run_id}", response_model=RunOut, responses=NOT_FOUND)
async def get_run(run_id: str, key: KeyDep, runtime: RuntimeDep) -> RunOut:
    return await read(runtime, _owned_run_out, key, run_id)


def _owned_run_out(session: Session, key: ApiKey, run_id: str) -> RunOut:
    return found(owned_run_out(session, key, run_id), "run", run_id)


@router.post("/runs/{run_id}/cancel", response_model=RunOut, responses={**NOT_FOUND, 409: {"model": Problem}})
def cancel_run(run_id: str, key: KeyDep, session: SessionDep, runtime: RuntimeDep) -> RunOut:
    run = found(owned_run(session, key, run_id), "run", run_id)
    if run.ended or not cancel(runtime.factory, run_id):
        raise HTTPException(409, f"run {run_id} has already ended ({run.status})")
    session.expire_all()
    return run_out(session, found(owned_run(session, key, run_id), "run", run_id))


@router.post("/runs/{run_id}/extend", response_model=RunOut,
             responses={**NOT_FOUND, 409: {"model": Problem}, 422: {"model": Problem}})
def extend_run(run_id: str, more: Extension, key: KeyDep, session: SessionDep, runtime: RuntimeDep) -> RunOut:
    """Give a completed run more budget: it continues from its history, proposal numbers going on from its last.
    An es run takes `generations` (its budget), any other run `candidates`; the other is refused (422)."""
    run = found(owned_run(session, key, run_id), "run", run_id)
    mismatch = extension_mismatch(run, more)
    if mismatch is not None:
        raise HTTPException(422, mismatch)
    refused = extend(runtime.factory, run_id, more)
    if refused is not None:
        raise HTTPException(409, refused)
    advance(runtime.factory, run_id, runtime.publish)
    session.expire_all()
    return run_out(session, found(owned_run(session, key, run_id), "run", run_id))


@router.post("/runs/{run_id}/resume", response_model=RunOut, responses={**NOT_FOUND, 409: {"model": Problem}})
def resume_run(run_id: str, key: KeyDep, session: SessionDep, runtime: RuntimeDep) -> RunOut:
    """Continue an interrupted run (its `discovery run` got Ctrl-C) on this server, where it stopped; 409 for a run
    that is not interrupted."""
    found(owned_run(session, key, run_id), "run", run_id)
    refused = resume(runtime.factory, run_id)
    if refused is not None:
        raise HTTPException(409, refused)
    advance(runtime.factory, run_id, runtime.publish)
    session.expire_all()
    return run_out(session, found(owned_run(session, key, run_id), "run", run_id))


EVENT_STREAM = {
    "description": "A Server-Sent Events stream, one frame per event in the order they happened: `id` (resume "
                   "with the Last-Event-ID header), `event` (one of " + ", ".join(f"`{t.value}`" for t in EventType)
                   + ") and `data`, the event as JSON. The stream ends after the run's final event.",
    "content": {"text/event-stream": {"schema": {"type": "string"}, "example": (
        'id: 42\nevent: candidate.evaluated\ndata: {"candidate_id": "9f2c...", "index": 3, "outcome": "ok", '
        '"score": 1.08}\n\n')}},
}


@router.get("/runs/{run_id}/events", responses={**NOT_FOUND, 200: EVENT_STREAM}, response_class=StreamingResponse)
async def run_events(run_id: str, key: KeyDep, session: SessionDep, runtime: RuntimeDep, request: Request,
                     last_event_id: Annotated[int | None, Header()] = None) -> StreamingResponse:
    """Server-Sent Events: candidate proposed, evaluated, new best, run finished. Resume with Last-Event-ID."""
    found(owned_run(session, key, run_id), "run", run_id)
    session.close()
    return event_stream(runtime.factory, run_id, last_event_id or 0, request.is_disconnected)


@router.get("/runs/{run_id}/candidates", response_model=Page[CandidateSummary], responses=NOT_FOUND)
async def list_candidates(run_id: str, key: KeyDep, runtime: RuntimeDep,
                          status: Annotated[str | None, Query()] = None,
                          outcome: Annotated[str | None, Query()] = None,
                          sort: Annotated[Literal["time", "score"], Query()] = "time",
                          limit: Annotated[int, Query(ge=1, le=500)] = 100,
                          cursor: Annotated[str | None, Query()] = None) -> Page[CandidateSummary]:
    position = int(_decode_cursor(cursor, POSITION_CURSOR)[0]) if cursor else None
    return await read(runtime, _candidates_page, key, run_id, status, outcome, sort, limit, position)


def _candidates_page(session: Session, key: ApiKey, run_id: str, status: str | None, outcome: str | None,
                     sort: Literal["time", "score"], limit: int, position: int | None) -> Page[CandidateSummary]:
    page = candidates_page(session, key, run_id, status=status, outcome=outcome, sort=sort, limit=limit,
                           position=position)
    if not page.run_owned:
        raise HTTPException(404, f"no run {run_id!r}")
    next_cursor = _encode_cursor(page.next_position) if page.next_position is not None else None
    return Page(items=page.items, next_cursor=next_cursor)


@router.get("/runs/{run_id}/generations", response_model=Page[GenerationOut], responses=NOT_FOUND)
async def list_generations(run_id: str, key: KeyDep, runtime: RuntimeDep,
                           limit: Annotated[int, Query(ge=1, le=500)] = 100,
                           cursor: Annotated[str | None, Query(description="from next_cursor of the previous page")]
                           = None) -> Page[GenerationOut]:
    """An es run's told generations in order: each one's fitness per member and its summary (mean with its 95%
    interval, spread, min, max, diverged members), the strategy's sigma and learning rate after it, its seeds and
    cost. Another proposer's run has none (an empty page)."""
    after = int(_decode_cursor(cursor, POSITION_CURSOR)[0]) if cursor else None
    return await read(runtime, _generations_page, key, run_id, limit, after)


def _generations_page(session: Session, key: ApiKey, run_id: str, limit: int,
                      after: int | None) -> Page[GenerationOut]:
    page = generations_page(session, key.id, run_id, limit, after)
    if not page.run_owned:
        raise HTTPException(404, f"no run {run_id!r}")
    next_cursor = _encode_cursor(page.next_position) if page.next_position is not None else None
    return Page(items=page.items, next_cursor=next_cursor)


@router.get("/runs/{run_id}/best.py", response_class=PlainTextResponse,
            responses={**NOT_FOUND, 200: {"content": {"text/x-python": {}}}})
def best_file(run_id: str, key: KeyDep, session: SessionDep) -> Response:
    """The run's best algorithm as a standalone Python file, with where it came from in its header."""
    run = found(owned_run(session, key, run_id), "run", run_id)
    download = export.best_download(session, run, discovery_of(run).message)
    if download is None:
        raise HTTPException(404, f"run {run_id} has no evaluated candidate yet")
    body, name = download
    return Response(body, media_type="text/x-python", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/runs/{run_id}/export", responses={**NOT_FOUND, 200: {"content": {"text/csv": {},
                                                                               "application/x-ndjson": {}}}})
def export_evaluations(run_id: str, key: KeyDep, session: SessionDep,
                       format: Literal["csv", "jsonl"] = "csv") -> Response:  # noqa: A002 - the query's name
    """Every evaluation of the run, one row per candidate × environment × phase × seed (return, score, learning
    rate, artifact); `jsonl` rows also carry the seed's learning curve."""
    run = found(owned_run(session, key, run_id), "run", run_id)
    body, media_type, name = export.table_download(session, run, format)
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/runs/{run_id}/webhook-deliveries", response_model=list[WebhookDeliveryOut], responses=NOT_FOUND)
def list_deliveries(run_id: str, key: KeyDep, session: SessionDep) -> list[WebhookDeliveryOut]:
    found(owned_run(session, key, run_id), "run", run_id)
    return deliveries(session, run_id)


@router.post("/webhook-deliveries/{delivery_id}/resend", status_code=202,
             responses={**NOT_FOUND, 409: {"model": Problem}})
def resend_delivery(delivery_id: str, key: KeyDep, session: SessionDep, runtime: RuntimeDep) -> JSONResponse:
    """Send a delivery's message again, with the same webhook-id and a fresh retry schedule."""
    if not owns_delivery(session, key, delivery_id):
        raise HTTPException(404, f"no webhook delivery {delivery_id!r}")
    try:
        resent = resend(runtime.factory, delivery_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    runtime.publish([Task(resent, TaskKind.WEBHOOK)])
    return JSONResponse({"id": resent, "status": "pending"}, status_code=202)
