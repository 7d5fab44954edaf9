"""Signed webhook delivery (Standard Webhooks), with SSRF protection and a per-attempt log.

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

import base64
import ipaddress
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from pydantic import BaseModel
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from service.db import session_scope, utcnow
from service.db.models import DeliveryStatus, Event, Run, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.settings import Settings

__all__ = [
    "UnsafeWebhookURL",
    "WebhookMessage",
    "check_webhook_url",
    "deliver",
    "due_deliveries",
    "enqueue_deliveries",
    "new_secret",
    "resend",
]

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_RETRY_AFTER_SECONDS = 24 * 3600
ERROR_BODY_CHARS = 200  # how much of a failed response's body goes into the attempt log
USER_AGENT = "discovery-webhooks/1"
# Keys dropped from event payloads wherever they appear (defence in depth: payloads should not carry them).
SECRET_KEYS = frozenset({"secret", "api_key", "openai_api_key", "password", "authorization", "token"})

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


# --- secrets -------------------------------------------------------------------------------------


def new_secret() -> str:
    """A new endpoint signing secret: 'whsec_' + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


# --- SSRF ----------------------------------------------------------------------------------------


class UnsafeWebhookURL(ValueError):
    """A webhook URL that may not be called (bad scheme, unresolvable, or a non-public address)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the address that was checked) and what to ask for."""

    url: str
    host: str
    port: int
    address: str


def _allowed_hosts(settings: Settings) -> set[str]:
    return {h.strip().lower().strip("[]") for h in settings.webhook_allowed_hosts.split(",") if h.strip()}


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `address` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _refusal(address.ipv4_mapped)
        if address in NAT64_WELL_KNOWN:
            return _refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in NAT64_LOCAL_USE:
            return "a local-use NAT64 address"
        if address.sixtofour is not None:
            return _refusal(address.sixtofour)
        if address.teredo is not None:
            return "a Teredo address"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "a shared (CGNAT) address"
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookURL(f"webhook host {host!r} does not resolve ({exc})") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeWebhookURL(f"webhook host {host!r} does not resolve")
    return addresses


def resolve_webhook_url(url: str, settings: Settings) -> Target:
    """Check `url` (see check_webhook_url) and return it with the checked address to connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"invalid webhook URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookURL(f"webhook URL must be http or https, not {parts.scheme or 'no scheme'!r}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeWebhookURL(f"webhook URL {url!r} has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    if host not in _allowed_hosts(settings):
        for address in addresses:
            reason = _refusal(ipaddress.ip_address(address))
            if reason is not None:
                raise UnsafeWebhookURL(
                    f"webhook host {host!r} resolves to {address}, {reason}; only public addresses are allowed"
                    " (an operator can allow a host with DISCOVERY_WEBHOOK_ALLOWED_HOSTS)"
                )
    return Target(url=url, host=host, port=port, address=addresses[0])


def check_webhook_url(url: str, settings: Settings) -> None:
    """Refuse (UnsafeWebhookURL) a URL that is not http(s), does not resolve, or resolves to any address
    that is not globally routable, unless its host is in settings.webhook_allowed_hosts."""
    resolve_webhook_url(url, settings)


# --- enqueueing ----------------------------------------------------------------------------------


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


# --- delivering ----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Claim:
    delivery_id: str
    attempt: int  # the delivery's `attempts` after the claim: identifies this attempt
    endpoint_id: str
    url: str
    secret: str
    message_id: str
    body: str


@dataclass
class Outcome:
    status_code: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    retry_after: float | None = None


class _PinnedBackend(httpcore.SyncBackend):
    """Connects every TCP connection to one address, whatever host name the URL carries."""

    def __init__(self, address: str) -> None:
        self.address = address

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return super().connect_tcp(self.address, port, timeout, local_address, socket_options)


class PinnedTransport(httpx.HTTPTransport):
    """An httpx transport that connects to `address` only; TLS still verifies the URL's host name.

    httpx.HTTPTransport takes no network backend, so its connection pool is replaced by an equivalent
    one that has ours (httpx 0.28; tests/webhooks checks the pinning).
    """

    def __init__(self, address: str) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=1,
            network_backend=_PinnedBackend(address),
        )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isdigit() else (parsedate_to_datetime(value) - utcnow()).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def post_signed(url: str, address: str, claim: Claim, settings: Settings) -> Outcome:
    """POST the claim's message to `url`, connecting to `address`; never raises for network errors."""
    timestamp = utcnow()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",  # the response cap counts the bytes on the wire
        "webhook-id": claim.message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(claim.secret).sign(claim.message_id, timestamp, claim.body),
    }
    started = time.monotonic()
    outcome = Outcome()
    try:
        with httpx.Client(transport=PinnedTransport(address), timeout=settings.webhook_timeout_seconds,
                          follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", url, content=claim.body.encode(), headers=headers) as response:
                outcome.status_code = response.status_code
                body = bytearray()
                for chunk in response.iter_raw():  # read up to the cap (one chunk past it at most), then hang up
                    body += chunk
                    if len(body) >= settings.webhook_max_response_bytes:
                        del body[settings.webhook_max_response_bytes:]
                        break
                    if time.monotonic() - started > settings.webhook_timeout_seconds:
                        raise httpx.ReadTimeout("response body took longer than the timeout")
                if response.status_code in (429, 503):
                    outcome.retry_after = _retry_after(response.headers.get("retry-after"))
                if not 200 <= response.status_code < 300:
                    snippet = bytes(body[:ERROR_BODY_CHARS]).decode("utf-8", "replace")
                    location = response.headers.get("location")
                    outcome.error = f"HTTP {response.status_code}" + (f" (redirect to {location})" if location else "")
                    outcome.error += f": {snippet}" if snippet else ""
    except httpx.HTTPError as exc:
        outcome.error = _error_text(exc)
        log.info("webhook %s to %s: %s", claim.message_id, url, outcome.error)
    except OSError as exc:  # socket errors that httpx did not wrap
        outcome.error = _error_text(exc)
        log.info("webhook %s to %s: %s", claim.message_id, url, outcome.error)
    outcome.latency_ms = (time.monotonic() - started) * 1000
    return outcome


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


def _finish(factory: sessionmaker[Session], settings: Settings, claim: Claim, outcome: Outcome) -> None:
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
        outcome = Outcome(error=f"refused: {exc}")
        log.warning("webhook %s: %s", claim.message_id, outcome.error)
    else:
        outcome = post_signed(target.url, target.address, claim, settings)
    _finish(factory, settings, claim, outcome)
