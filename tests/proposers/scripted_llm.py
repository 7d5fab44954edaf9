"""A scripted OpenAI-compatible chat server on loopback, for driving the real `openai` client.

Each test appends the responses it wants (`server.script`), in order; when the script runs out the
server repeats `server.forever` (or answers 500). A model named in `server.by_model` is answered by its
own reply maker instead (an ensemble whose models answer differently). Every request body is kept in `server.requests`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from service.proposers.base import HistoryEntry
from workers.targets import get_target
from workers.vocabulary import Outcome


def completion(content: str, prompt_tokens: int = 1000, completion_tokens: int = 200) -> dict[str, Any]:
    return {
        "status": 200,
        "body": {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    }


def failure(status: int, message: str = "scripted failure", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "body": {"error": {"message": message, "type": "test"}},
        "headers": headers or {},
    }


class ScriptedLLM:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.forever: dict[str, Any] | None = None
        self.by_model: dict[str, Callable[[], dict[str, Any]]] = {}  # a model's replies, before the script
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def reset(self) -> None:
        with self.lock:
            self.script.clear()
            self.requests.clear()
            self.forever = None
            self.by_model.clear()

    def next_response(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(body)
            if body.get("model") in self.by_model:
                return self.by_model[body["model"]]()
            if self.script:
                return self.script.pop(0)
            return self.forever or failure(500, "script exhausted")

    def user_messages(self, request: int) -> list[str]:
        return [m["content"] for m in self.requests[request]["messages"] if m["role"] == "user"]


def handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            response = llm.next_response(body)
            payload = json.dumps(response["body"]).encode()
            self.send_response(response["status"])
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for key, value in response.get("headers", {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

    return Handler


def warm_entry(target: str = "lpo") -> HistoryEntry:
    return HistoryEntry(
        candidate_id="warm",
        index=0,
        name="warm_start",
        thought="The hand-made algorithm.",
        code=get_target(target).warm_start,
        outcome=Outcome.ok,
        score=1.0,
    )
