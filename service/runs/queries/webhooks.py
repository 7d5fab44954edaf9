"""A run's webhook deliveries, each with its attempts (two queries)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.runs.views import WebhookAttemptOut, WebhookDeliveryOut


def deliveries(session: Session, run_id: str) -> list[WebhookDeliveryOut]:
    """Every delivery of the run's webhook in the order created, with its attempt log."""
    rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.event_id, Event.type.label("event_type"),
                                  WebhookDelivery.message_id, WebhookEndpoint.url, WebhookDelivery.status,
                                  WebhookDelivery.attempts, WebhookDelivery.last_status_code,
                                  WebhookDelivery.next_attempt_at, WebhookDelivery.delivered_at)
                           .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                           .join(Event, Event.id == WebhookDelivery.event_id)
                           .where(WebhookEndpoint.run_id == run_id).order_by(WebhookDelivery.created_at)).all()
    attempts: dict[str, list[WebhookAttemptOut]] = {}
    for attempt in session.scalars(select(WebhookAttempt)
                                   .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                                   .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                                   .where(WebhookEndpoint.run_id == run_id).order_by(WebhookAttempt.id)):
        attempts.setdefault(attempt.delivery_id, []).append(WebhookAttemptOut.model_validate(attempt))
    return [WebhookDeliveryOut.model_validate({**row._mapping, "attempt_log": attempts.get(row.id, [])})
            for row in rows]
