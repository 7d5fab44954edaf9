"""Sending one signed attempt (Standard Webhooks headers) over a connection pinned to the checked
address: no redirects, no proxies from the environment, the URL's host name kept for the Host
header, TLS SNI and certificate verification. Returns what happened as an `AttemptResult`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx
from standardwebhooks import Webhook

from service.db import utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 24 * 3600
ERROR_BODY_CHARS = 200  # how much of a failed response's body goes into the attempt log
USER_AGENT = "discovery-webhooks/1"


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
class AttemptResult:
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
        super().__init__(trust_env=False, retries=0)  # no proxy from the environment: the address is pinned
        self._pool = httpcore.ConnectionPool(
            # The CA bundle named by SSL_CERT_FILE or SSL_CERT_DIR when set (a private CA), else certifi's.
            ssl_context=httpx.create_ssl_context(trust_env=True),
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


def post_signed(url: str, address: str, claim: Claim, settings: Settings) -> AttemptResult:
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
    outcome = AttemptResult()
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
