"""The delivery state machine: claim a due delivery, send one attempt, record it.

pending (next_attempt_at = when due) -> delivering (next_attempt_at = lease expiry, 2 x the timeout:
a deliverer that crashed is retried after it) -> delivered | failed, or back to pending with the next
slot of `settings.webhook_retry_schedule`. 410 Gone disables the endpoint; Retry-After on 429/503 is
honoured (capped at a day). Publishing a delivery id twice is harmless: the claim is a conditional
UPDATE, so only one deliverer sends a given attempt.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.settings import Settings
from service.webhooks.outbox import message_body
from service.webhooks.ssrf import UnsafeWebhookURL, resolve_webhook_url
from service.webhooks.transport import AttemptResult, Claim, post_signed
from workers.vocabulary import DeliveryStatus

log = logging.getLogger(__name__)


def _claim(factory: sessionmaker[Session], settings: Settings, delivery_id: str) -> Claim | None:
    """Take the delivery for one attempt if it is due (conditional UPDATE); None if someone else has it."""
    now = utcnow()
    lease = timedelta(seconds=2 * settings.webhook_timeout_seconds)
    with session_scope(factory) as session:
        claimable = and_(
            WebhookDelivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.DELIVERING]),
            WebhookDelivery.next_attempt_at <= now,
        )
        result = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, claimable)
            .values(status=DeliveryStatus.DELIVERING, attempts=WebhookDelivery.attempts + 1,
                    next_attempt_at=now + lease)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return None
        delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        event = session.get(Event, delivery.event_id)
        if endpoint.disabled_at is not None:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            delivery.attempts -= 1  # nothing was sent
            return None
        return Claim(delivery_id=delivery.id, attempt=delivery.attempts, endpoint_id=endpoint.id, url=endpoint.url,
                     secret=endpoint.secret, message_id=delivery.message_id, body=message_body(event))


def _finish(factory: sessionmaker[Session], settings: Settings, claim: Claim, outcome: AttemptResult) -> None:
    """Log the attempt and move the delivery on (if this attempt still owns it)."""
    now = utcnow()
    code = outcome.status_code
    values: dict[str, Any] = {"last_status_code": code}
    disable = False
    if code is not None and 200 <= code < 300:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif code == 410:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        disable = True
    elif claim.attempt <= len(settings.webhook_retry_schedule):
        delay = max(float(settings.webhook_retry_schedule[claim.attempt - 1]), outcome.retry_after or 0.0)
        values.update(status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay))
    else:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    with session_scope(factory) as session:
        session.add(WebhookAttempt(delivery_id=claim.delivery_id, attempted_at=now, status_code=code,
                                   latency_ms=outcome.latency_ms, error=outcome.error))
        result = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claim.delivery_id, WebhookDelivery.status == DeliveryStatus.DELIVERING,
                   WebhookDelivery.attempts == claim.attempt)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            log.warning("webhook delivery %s: attempt %d finished after its lease; outcome logged only",
                        claim.delivery_id, claim.attempt)
        if disable:
            log.warning("webhook endpoint %s answered 410 Gone: disabled", claim.endpoint_id)
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == claim.endpoint_id, WebhookEndpoint.disabled_at.is_(None))
                .values(disabled_at=now)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == claim.endpoint_id,
                       WebhookDelivery.status == DeliveryStatus.PENDING)
                .values(status=DeliveryStatus.FAILED, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )


def deliver(factory: sessionmaker[Session], settings: Settings, delivery_id: str) -> None:
    """Make one attempt of a due delivery, if no other deliverer has it; log it and schedule what's next.

    Network errors, timeouts and refused (unsafe) addresses are failed attempts, never exceptions.
    """
    claim = _claim(factory, settings, delivery_id)
    if claim is None:
        return
    try:
        target = resolve_webhook_url(claim.url, settings)
    except UnsafeWebhookURL as exc:
        outcome = AttemptResult(error=f"refused: {exc}")
        log.warning("webhook %s: %s", claim.message_id, outcome.error)
    else:
        outcome = post_signed(target.url, target.address, claim, settings)
    _finish(factory, settings, claim, outcome)
