"""Fixtures for the proposer tests: a scripted OpenAI-compatible server and an LLM config for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from service.proposers.base import LLMSettings, ProposerConfig
from tests.proposers.scripted_llm import ScriptedLLM, handler


@pytest.fixture(scope="session")
def _scripted_server() -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(llm))
    llm.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield llm
    server.shutdown()
    server.server_close()


@pytest.fixture
def llm_server(_scripted_server: ScriptedLLM) -> ScriptedLLM:
    _scripted_server.reset()
    return _scripted_server


@pytest.fixture
def llm_config(llm_server: ScriptedLLM) -> ProposerConfig:
    return ProposerConfig(
        kind="llm",
        llm=LLMSettings(
            model="scripted-model",
            base_url=llm_server.url,
            temperature=0.8,
            max_tokens=2048,
            price_per_1k_prompt_tokens=0.5,
            price_per_1k_completion_tokens=2.0,
            request_timeout_seconds=5.0,
            max_attempts=3,
            backoff_seconds=0.01,
            backoff_max_seconds=0.05,
        ),
    )
