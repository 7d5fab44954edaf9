"""A run's events: written (`emit`, with their webhook deliveries, in the caller's transaction) and read back as a
Server-Sent Events stream (the API's and the web UI's).

Event ids are committed in order per run (events are written under the run's row lock), so a client
resumes exactly with Last-Event-ID. The stream ends after the run's final event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Event
from service.webhooks import enqueue_deliveries
from workers.vocabulary import EventType

FINAL_EVENTS = {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 15.0


def emit(session: Session, run_id: str, type_: EventType, payload: dict[str, Any]) -> None:
    """Write an event and its webhook deliveries (the outbox) in the caller's transaction.

    Callers hold the run's row lock, so a run's event ids are committed in order (SSE resumes by id).
    """
    event = Event(run_id=run_id, type=type_, payload=payload)
    session.add(event)
    session.flush()
    enqueue_deliveries(session, event)


def event_stream(factory: sessionmaker[Session], run_id: str, after: int,
                 is_disconnected: Callable[[], Awaitable[bool]]) -> StreamingResponse:
    def fetch(last: int) -> list[tuple[int, str, dict]]:
        with factory() as session:
            rows = session.execute(select(Event.id, Event.type, Event.payload)
                                   .where(Event.run_id == run_id, Event.id > last).order_by(Event.id).limit(500))
            return [tuple(r) for r in rows]

    async def stream() -> AsyncIterator[str]:
        last, idle = after, 0.0
        while not await is_disconnected():
            rows = await run_in_threadpool(fetch, last)
            for event_id, type_, payload in rows:
                last = event_id
                yield f"id: {event_id}\nevent: {type_}\ndata: {json.dumps(payload)}\n\n"
                if type_ in FINAL_EVENTS:
                    return
            if rows:
                idle = 0.0
                continue
            idle += POLL_SECONDS
            if idle >= KEEP_ALIVE_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
