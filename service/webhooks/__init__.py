"""Signed webhook delivery (Standard Webhooks), with SSRF protection and a per-attempt log.

One module each: `ssrf` (which addresses may be called), `outbox` (delivery rows, what is due, the signed
body), `transport` (one pinned, signed attempt), `delivery` (the state machine).

Flow:
- `emit()` adds an Event and, in the same transaction, `enqueue_deliveries(session, event)` adds one
  WebhookDelivery per matching endpoint (the outbox: an event is delivered if and only if it committed).
- A sweeper calls `due_deliveries(session)` and hands each id to a deliverer, which calls
  `deliver(factory, settings, delivery_id)`. Publishing an id twice is harmless: `deliver` first claims
  the delivery with a conditional UPDATE, so only one deliverer sends a given attempt.
- Each attempt is signed afresh (webhook-timestamp is the send time) under the delivery's stable
  `message_id` (the webhook-id header), and logged as a WebhookAttempt.

Delivery states: pending (next_attempt_at = when due) -> delivering (next_attempt_at = lease expiry,
2 x the timeout: a deliverer that crashed is retried after it) -> delivered | failed, or back to pending
with the next slot of `settings.webhook_retry_schedule`. 410 Gone disables the endpoint; Retry-After on
429/503 is honoured (capped at a day).

SSRF: the URL's host is resolved once; every resolved address must be globally routable (IPv4-mapped,
NAT64 and 6to4 addresses are judged by the IPv4 address they embed); the request then connects to the
address that was checked (a pinned httpcore network backend), with the URL's host name kept for the
Host header, TLS SNI and certificate verification; redirects are not followed; proxies from the
environment are ignored. Hosts listed in `settings.webhook_allowed_hosts` skip the address check.

Residual risks: httpx timeouts are per phase (connect, each read), not total, so a server that drips
its response headers can hold a deliverer past the lease; another deliverer may then send the same
message again (the same webhook-id, which receivers use to deduplicate; the state update of the late
attempt is discarded). A delivery reclaimed after a crash counts the lost attempt but has no log row.
"""

from __future__ import annotations

from service.webhooks.delivery import deliver
from service.webhooks.outbox import (
    WebhookMessage,
    due_deliveries,
    enqueue_deliveries,
    message_body,
    new_secret,
    resend,
)
from service.webhooks.ssrf import UnsafeWebhookURL, check_webhook_url, resolve_webhook_url
from service.webhooks.transport import AttemptResult, Claim, post_signed

__all__ = [
    "AttemptResult",
    "Claim",
    "UnsafeWebhookURL",
    "WebhookMessage",
    "check_webhook_url",
    "deliver",
    "due_deliveries",
    "enqueue_deliveries",
    "message_body",
    "new_secret",
    "post_signed",
    "resend",
    "resolve_webhook_url",
]
