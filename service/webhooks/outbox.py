"""The webhook outbox: endpoint secrets, one delivery row per event and endpoint, written in the event's
own transaction (an event is delivered if and only if it committed), what is due, resending, and the
signed message body (with secret-looking keys scrubbed from payloads).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Event, Run, WebhookDelivery, WebhookEndpoint
from workers.vocabulary import DeliveryStatus

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Keys dropped from event payloads wherever they appear (defence in depth: payloads should not carry them).
SECRET_KEYS = frozenset({"secret", "api_key", "openai_api_key", "password", "authorization", "token"})


def new_secret() -> str:
    """A new endpoint signing secret: 'whsec_' + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message_id_for(event_id: int, endpoint_id: str) -> str:
    """The webhook-id of an event sent to an endpoint: stable across retries and resends."""
    return f"msg_{event_id}_{endpoint_id}"


def enqueue_deliveries(session: Session, event: Event) -> list[str]:
    """Add a pending delivery of `event` to each enabled endpoint that wants it; return their ids.

    Endpoints: those of the event's run, and those registered by the run's owner for all its runs
    (run_id NULL). An endpoint with an empty `events` list wants every type. Idempotent. Flushes.
    """
    if event.id is None:
        session.flush()
    owner_key_id = session.scalar(select(Run.owner_key_id).where(Run.id == event.run_id))
    scope = WebhookEndpoint.run_id == event.run_id
    if owner_key_id is not None:
        scope = or_(scope, and_(WebhookEndpoint.run_id.is_(None), WebhookEndpoint.owner_key_id == owner_key_id))
    endpoints = session.scalars(
        select(WebhookEndpoint).where(scope, WebhookEndpoint.disabled_at.is_(None)).order_by(WebhookEndpoint.id)
    ).all()
    existing = set(session.scalars(select(WebhookDelivery.endpoint_id).where(WebhookDelivery.event_id == event.id)))
    now = utcnow()
    ids: list[str] = []
    for endpoint in endpoints:
        if endpoint.events and event.type not in endpoint.events:
            continue
        if endpoint.id in existing:
            continue
        delivery = WebhookDelivery(
            endpoint_id=endpoint.id,
            event_id=event.id,
            message_id=message_id_for(event.id, endpoint.id),
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        session.add(delivery)
        session.flush()
        ids.append(delivery.id)
    return ids


def due_deliveries(session: Session, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Ids of deliveries to attempt now: pending and due, or delivering past their lease (crashed)."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.DELIVERING]),
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


def resend(factory: sessionmaker[Session], delivery_id: str) -> str:
    """Send a delivery's message again (same webhook-id): pending, due now, with a fresh retry schedule.

    The attempt log keeps the earlier attempts. A delivery being attempted right now is left alone.
    Raises LookupError for an unknown delivery and ValueError if its endpoint is disabled.
    """
    with session_scope(factory) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            raise LookupError(f"no webhook delivery {delivery_id!r}")
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is None or endpoint.disabled_at is not None:
            raise ValueError(f"the endpoint of delivery {delivery_id!r} is disabled")
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status != DeliveryStatus.DELIVERING)
            .values(status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return delivery_id




class WebhookMessage(BaseModel):
    """The body of every webhook request (Standard Webhooks' recommended shape)."""

    type: str
    timestamp: datetime
    data: dict[str, Any]


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if str(k).lower() not in SECRET_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def message_body(event: Event) -> str:
    """The JSON body for `event` (the exact bytes that are signed and sent)."""
    return WebhookMessage(type=event.type, timestamp=event.created_at, data=_scrub(event.payload)).model_dump_json()
