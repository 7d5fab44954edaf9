"""Webhook test fixtures: a real HTTP receiver on loopback, settings, and database rows.

- `receiver`: an http.server in a thread on a free 127.0.0.1 port that records every request and
  answers with whatever `receiver.responses` says (a list consumed in order; the last one repeats).
- `webhook_settings`: Settings allowing 127.0.0.1, a fast retry schedule and a 0.5 s timeout.
- `make_endpoint` / `make_event`: rows in a migrated database (both backends via `session_factory`).
- `drive(...)`: the sweeper loop: due_deliveries + deliver until a condition holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Event, Run, WebhookEndpoint
from service.settings import Settings
from service.webhooks import deliver, due_deliveries, enqueue_deliveries, new_secret
from workers.vocabulary import EventType


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    sleep: float = 0.0  # before answering
    stream_bytes: int = 0  # if set: send this many bytes of body in chunks, counting what got out


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Request] = []
        self.responses: list[Reply] = [Reply()]
        self.streamed: list[int] = []  # bytes actually written by each streamed reply
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = receiver.responses.pop(0) if len(receiver.responses) > 1 else receiver.responses[0]
                if reply.sleep:
                    time.sleep(reply.sleep)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    size = reply.stream_bytes or len(reply.body)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if reply.stream_bytes:
                        self._stream(reply.stream_bytes)
                    else:
                        self.wfile.write(reply.body)
                except OSError:
                    pass
                self.close_connection = True

            def _stream(self, size: int) -> None:
                chunk = b"x" * 65536
                written = 0
                try:
                    while written < size:
                        self.wfile.write(chunk)
                        written += len(chunk)
                finally:
                    receiver.streamed.append(written)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def webhook_settings() -> Settings:
    return Settings(
        webhook_allowed_hosts="127.0.0.1",
        webhook_retry_schedule=[0.2, 0.2, 0.2],
        webhook_timeout_seconds=0.5,
        webhook_max_response_bytes=65536,
    )


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks' v1 signature, computed here without the standardwebhooks package."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def make_run(factory: sessionmaker[Session], owner_key_id: str | None = None) -> str:
    with session_scope(factory) as session:
        run = Run(target="lpo", profile="smoke", seeds_per_eval=1, owner_key_id=owner_key_id)
        session.add(run)
        session.flush()
        return run.id


def make_endpoint(factory: sessionmaker[Session], run_id: str | None, url: str, events: list[str] | None = None,
                  owner_key_id: str | None = None) -> WebhookEndpoint:
    with session_scope(factory) as session:
        endpoint = WebhookEndpoint(run_id=run_id, owner_key_id=owner_key_id, url=url, secret=new_secret(),
                                   events=events or [])
        session.add(endpoint)
        session.flush()
        return endpoint


def make_event(factory: sessionmaker[Session], run_id: str, type_: str = EventType.RUN_COMPLETED,
               payload: dict[str, Any] | None = None) -> list[str]:
    """An event emitted the way the orchestrator does (outbox): returns the deliveries enqueued."""
    with session_scope(factory) as session:
        event = Event(run_id=run_id, type=type_, payload=payload if payload is not None else {"run_id": run_id})
        session.add(event)
        session.flush()
        return enqueue_deliveries(session, event)


def drive(factory: sessionmaker[Session], settings: Settings, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """The sweeper: deliver whatever is due until `until()` holds (or fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out driving webhook deliveries"
        with session_scope(factory) as session:
            ids = due_deliveries(session)
        for delivery_id in ids:
            deliver(factory, settings, delivery_id)
        time.sleep(0.02)
