"""Delivery over real HTTP on loopback: signatures, retries, 410, Retry-After, timeouts, redirects, caps."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_session_factory, session_scope, utcnow
from service.db.models import ApiKey, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.settings import Settings
from service.webhooks import Claim, deliver, due_deliveries, enqueue_deliveries, post_signed, resend
from tests.webhooks.conftest import (
    Receiver,
    Reply,
    drive,
    expected_signature,
    make_endpoint,
    make_event,
    make_run,
)
from workers.vocabulary import DeliveryStatus, EventType


def delivery_state(factory: sessionmaker[Session], delivery_id: str) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    with session_scope(factory) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        attempts = list(
            session.scalars(
                select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
            )
        )
        return delivery, attempts


def is_final(factory: sessionmaker[Session], delivery_id: str) -> bool:
    status = delivery_state(factory, delivery_id)[0].status
    return status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


def test_signed_delivery(session_factory: sessionmaker[Session], receiver: Receiver,
                         webhook_settings: Settings) -> None:
    run_id = make_run(session_factory)
    endpoint = make_endpoint(session_factory, run_id, receiver.url)
    payload = {"run_id": run_id, "best_score": 0.75, "api_key": "sk-must-not-leak"}
    [delivery_id] = make_event(session_factory, run_id, EventType.RUN_COMPLETED, payload)

    drive(session_factory, webhook_settings, lambda: is_final(session_factory, delivery_id))

    [request] = receiver.requests
    headers = request.headers
    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert headers["webhook-id"] == delivery.message_id
    assert headers["content-type"] == "application/json"
    versions = dict(part.split(",", 1) for part in headers["webhook-signature"].split())
    assert versions["v1"] == expected_signature(endpoint.secret, headers["webhook-id"], headers["webhook-timestamp"],
                                                request.body)
    sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=5)

    body = json.loads(request.body)
    assert body["type"] == "run.completed"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["data"] == {"run_id": run_id, "best_score": 0.75}
    assert endpoint.secret.encode() not in request.body and b"sk-must-not-leak" not in request.body

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert (attempt.status_code, attempt.error) == (200, None) and attempt.latency_ms > 0


def test_fails_twice_then_delivered(session_factory: sessionmaker[Session], receiver: Receiver,
                                    webhook_settings: Settings) -> None:
    receiver.responses = [Reply(500, b"boom"), Reply(500, b"boom"), Reply(200)]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    drive(session_factory, webhook_settings, lambda: is_final(session_factory, delivery_id))
    time.sleep(0.5)  # longer than the schedule: nothing more is sent
    drive(session_factory, webhook_settings, lambda: True)

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    delivery, attempts = delivery_state(session_factory, delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert attempts[0].error == "HTTP 500: boom"
    gap = (attempts[1].attempted_at - attempts[0].attempted_at).total_seconds()
    assert gap >= 0.2


def test_gives_up_after_the_schedule(sqlite_engine: Engine, receiver: Receiver, webhook_settings: Settings) -> None:
    factory = make_session_factory(sqlite_engine)
    receiver.responses = [Reply(500)]
    settings = webhook_settings.model_copy(update={"webhook_retry_schedule": [0.1]})
    run_id = make_run(factory)
    make_endpoint(factory, run_id, receiver.url)
    [delivery_id] = make_event(factory, run_id)

    drive(factory, settings, lambda: is_final(factory, delivery_id))

    delivery, attempts = delivery_state(factory, delivery_id)
    assert (delivery.status, delivery.attempts, len(attempts)) == (DeliveryStatus.FAILED, 2, 2)
    assert len(receiver.requests) == 2


def test_410_disables_the_endpoint(session_factory: sessionmaker[Session], receiver: Receiver,
                                   webhook_settings: Settings) -> None:
    receiver.responses = [Reply(410, b"gone")]
    run_id = make_run(session_factory)
    endpoint = make_endpoint(session_factory, run_id, receiver.url)
    [first] = make_event(session_factory, run_id)
    [second] = make_event(session_factory, run_id, EventType.RUN_STARTED)

    deliver(session_factory, webhook_settings, first)

    with session_scope(session_factory) as session:
        assert session.get(WebhookEndpoint, endpoint.id).disabled_at is not None
        assert due_deliveries(session) == []
    assert delivery_state(session_factory, first)[0].status == DeliveryStatus.FAILED
    assert delivery_state(session_factory, second)[0].status == DeliveryStatus.FAILED  # never sent
    assert make_event(session_factory, run_id) == []  # a disabled endpoint gets nothing new
    assert len(receiver.requests) == 1


def test_retry_after_is_honoured(session_factory: sessionmaker[Session], receiver: Receiver,
                                 webhook_settings: Settings) -> None:
    receiver.responses = [Reply(503, headers={"Retry-After": "30"}), Reply(429, headers={"Retry-After": "bogus"})]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    deliver(session_factory, webhook_settings, delivery_id)
    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert (delivery.status, attempt.status_code) == (DeliveryStatus.PENDING, 503)
    wait = (delivery.next_attempt_at - attempt.attempted_at).total_seconds()
    assert 29 <= wait <= 31
    deliver(session_factory, webhook_settings, delivery_id)  # not due: no request
    assert len(receiver.requests) == 1

    with session_scope(session_factory) as session:
        assert due_deliveries(session, now=utcnow() + timedelta(seconds=31)) == [delivery_id]
        session.get(WebhookDelivery, delivery_id).next_attempt_at = utcnow()
    deliver(session_factory, webhook_settings, delivery_id)  # 429 with an unparseable Retry-After: schedule
    delivery, attempts = delivery_state(session_factory, delivery_id)
    assert attempts[-1].status_code == 429
    assert (delivery.next_attempt_at - attempts[-1].attempted_at).total_seconds() < 1


def test_timeout_is_a_failed_attempt(session_factory: sessionmaker[Session], receiver: Receiver,
                                     webhook_settings: Settings) -> None:
    receiver.responses = [Reply(200, sleep=1.5)]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    started = time.monotonic()
    deliver(session_factory, webhook_settings, delivery_id)
    assert time.monotonic() - started < 1.4

    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert attempt.status_code is None and "Timeout" in attempt.error
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert delivery.next_attempt_at > attempt.attempted_at


def test_redirects_are_not_followed(session_factory: sessionmaker[Session], receiver: Receiver,
                                    webhook_settings: Settings) -> None:
    receiver.responses = [Reply(302, headers={"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    deliver(session_factory, webhook_settings, delivery_id)

    assert [r.path for r in receiver.requests] == ["/hook"]
    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert attempt.status_code == 302 and "redirect" in attempt.error
    assert delivery.status == DeliveryStatus.PENDING


def test_huge_response_is_not_read_past_the_cap(session_factory: sessionmaker[Session], receiver: Receiver,
                                                webhook_settings: Settings) -> None:
    size = 256 * 1024 * 1024
    receiver.responses = [Reply(500, stream_bytes=size)]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    started = time.monotonic()
    deliver(session_factory, webhook_settings, delivery_id)
    assert time.monotonic() - started < 2

    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert attempt.status_code == 500 and attempt.error.startswith("HTTP 500: xxx")
    assert delivery.status == DeliveryStatus.PENDING
    deadline = time.monotonic() + 5
    while not receiver.streamed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.streamed and receiver.streamed[0] < size  # we hung up: the receiver could not send it all


def test_connects_to_the_checked_address_with_the_original_host(receiver: Receiver,
                                                                webhook_settings: Settings) -> None:
    """No DNS at send time: the connection goes to the pinned address; Host keeps the URL's name."""
    claim = Claim(delivery_id="d", attempt=1, endpoint_id="e", url="", secret="whsec_" + "A" * 32,
                  message_id="msg_1_x", body='{"type":"run.completed"}')
    outcome = post_signed(f"http://hooks.example.invalid:{receiver.port}/hook", "127.0.0.1", claim, webhook_settings)
    assert (outcome.status_code, outcome.error) == (200, None)
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example.invalid:{receiver.port}"


def test_unsafe_address_at_send_time_is_refused(session_factory: sessionmaker[Session], receiver: Receiver,
                                                webhook_settings: Settings) -> None:
    strict = webhook_settings.model_copy(update={"webhook_allowed_hosts": ""})
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    deliver(session_factory, strict, delivery_id)

    assert receiver.requests == []
    delivery, [attempt] = delivery_state(session_factory, delivery_id)
    assert attempt.status_code is None and attempt.error.startswith("refused: ")
    assert delivery.status == DeliveryStatus.PENDING


def test_enqueue_is_idempotent_and_filters(session_factory: sessionmaker[Session], receiver: Receiver) -> None:
    with session_scope(session_factory) as session:
        key = ApiKey(name="k", prefix="dk_", key_hash="0" * 64)
        session.add(key)
        session.flush()
        key_id = key.id
    run_id = make_run(session_factory, owner_key_id=key_id)
    other_run = make_run(session_factory, owner_key_id=key_id)
    everything = make_endpoint(session_factory, run_id, receiver.url)
    make_endpoint(session_factory, run_id, receiver.url, events=["run.failed"])
    owner_wide = make_endpoint(session_factory, None, receiver.url, owner_key_id=key_id)
    make_endpoint(session_factory, other_run, receiver.url)
    disabled = make_endpoint(session_factory, run_id, receiver.url)
    with session_scope(session_factory) as session:
        session.get(WebhookEndpoint, disabled.id).disabled_at = utcnow()

    with session_scope(session_factory) as session:
        event = Event(run_id=run_id, type=EventType.RUN_COMPLETED, payload={})
        session.add(event)
        first = enqueue_deliveries(session, event)
        again = enqueue_deliveries(session, event)
        event_id = event.id
    assert len(first) == 2 and again == []
    with session_scope(session_factory) as session:
        rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)).all()
        assert {r.endpoint_id for r in rows} == {everything.id, owner_wide.id}
        assert all(r.status == DeliveryStatus.PENDING and r.attempts == 0 for r in rows)
        assert set(due_deliveries(session)) == set(first)


def test_concurrent_deliverers_send_once(session_factory: sessionmaker[Session], receiver: Receiver,
                                         webhook_settings: Settings) -> None:
    receiver.responses = [Reply(200, sleep=0.2)]
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)

    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        deliver(session_factory, webhook_settings, delivery_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(receiver.requests) == 1
    delivery, attempts = delivery_state(session_factory, delivery_id)
    assert (delivery.status, delivery.attempts, len(attempts)) == (DeliveryStatus.DELIVERED, 1, 1)


def test_crashed_deliverer_is_retried_after_its_lease(session_factory: sessionmaker[Session], receiver: Receiver,
                                                      webhook_settings: Settings) -> None:
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)
    with session_scope(session_factory) as session:  # a deliverer claimed it, then died
        delivery = session.get(WebhookDelivery, delivery_id)
        delivery.status, delivery.attempts = DeliveryStatus.DELIVERING, 1
        delivery.next_attempt_at = utcnow() + timedelta(seconds=2 * webhook_settings.webhook_timeout_seconds)

    with session_scope(session_factory) as session:
        assert due_deliveries(session) == []
    deliver(session_factory, webhook_settings, delivery_id)
    assert receiver.requests == []  # still leased

    time.sleep(1.1)
    drive(session_factory, webhook_settings, lambda: is_final(session_factory, delivery_id))
    delivery, attempts = delivery_state(session_factory, delivery_id)
    assert (delivery.status, delivery.attempts, len(attempts)) == (DeliveryStatus.DELIVERED, 2, 1)


def test_resend_sends_the_same_message_again(session_factory: sessionmaker[Session], receiver: Receiver,
                                             webhook_settings: Settings) -> None:
    run_id = make_run(session_factory)
    make_endpoint(session_factory, run_id, receiver.url)
    [delivery_id] = make_event(session_factory, run_id)
    drive(session_factory, webhook_settings, lambda: is_final(session_factory, delivery_id))

    assert resend(session_factory, delivery_id) == delivery_id
    delivery, _ = delivery_state(session_factory, delivery_id)
    assert delivery.status == DeliveryStatus.PENDING
    drive(session_factory, webhook_settings, lambda: is_final(session_factory, delivery_id))

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    delivery, attempts = delivery_state(session_factory, delivery_id)
    assert (delivery.status, len(attempts)) == (DeliveryStatus.DELIVERED, 2)


def test_https_is_pinned_with_sni_and_certificate_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         webhook_settings: Settings) -> None:
    """HTTPS to the pinned address: SNI and certificate verification use the URL's host name, against the CA
    bundle the operator names in SSL_CERT_FILE."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=hooks.example.invalid",
         "-addext", "subjectAltName=DNS:hooks.example.invalid"],
        check=True, capture_output=True,
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how an operator trusts a private CA

    tls_receiver = Receiver(tls=server_context)
    try:
        claim = Claim(delivery_id="d", attempt=1, endpoint_id="e", url="", secret="whsec_" + "A" * 32,
                      message_id="msg_1_x", body="{}")
        good = post_signed(f"https://hooks.example.invalid:{tls_receiver.port}/hook", "127.0.0.1", claim,
                           webhook_settings)
        wrong = post_signed(f"https://other.example.invalid:{tls_receiver.port}/hook", "127.0.0.1", claim,
                            webhook_settings)
    finally:
        tls_receiver.close()
    assert (good.status_code, good.error) == (200, None)
    assert wrong.status_code is None and "certificate" in wrong.error.lower()
    assert server_names[0] == "hooks.example.invalid"
    assert len(tls_receiver.requests) == 1
