"""Attacks on the API by a hostile tenant or another site, over real HTTP: each is refused with a clear problem,
and nothing of the service is lost (the key's runs still list, the server still answers)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx

from tests.api.conftest import ApiServer

SMALL_RUN = {"target": "lpo", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]}, "profile": "smoke",
             "proposer": {"kind": "evolution"}, "budget": {"candidates": 1}, "concurrency": 1, "seed": 0,
             "seeds_per_eval": 1, "metatest_seeds": 1}


def test_infinity_and_nan_in_a_body_are_refused_and_the_list_keeps_answering(api: ApiServer) -> None:
    client = api.client(api.new_key())
    for body in ('{"budget": {"candidates": 1, "cost_usd": Infinity}}', '{"confidence": NaN}',
                 '{"proposer": {"kind": "llm", "model": "m", "temperature": -Infinity}}'):
        refused = client.post("/v1/runs", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "finite" in refused.json()["detail"]
    assert client.get("/v1/runs").status_code == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: ApiServer) -> None:
    """An 800 MB declared body gets its 413 at once, on the API and on the login form; the server stays up."""
    host, port = urlsplit(api.url).hostname, urlsplit(api.url).port
    for path in ("/v1/runs", "/login"):
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {800 * 1024 * 1024}\r\n\r\n".encode() + b"{" * 1024)
            started = time.monotonic()
            head = conn.recv(65536).decode("latin-1")
            assert time.monotonic() - started < 5
        assert head.startswith("HTTP/1.1 413"), head
        assert "application/problem+json" in head and "over 1048576 bytes" in head
    chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MB with no declared length: counted as it arrives
    refused = httpx.post(f"{api.url}/v1/runs", content=chunks, headers={"content-type": "application/json"})
    assert refused.status_code == 413
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_a_nul_in_a_url_is_a_clear_400_not_a_database_error(api: ApiServer) -> None:
    """Found by schemathesis: a NUL reached PostgreSQL through a path or query parameter and came back as a 500."""
    client = api.client(api.new_key("nul"))
    for url in ("/v1/runs/%00/candidates", "/v1/runs/x%00y", "/v1/candidates/%00", "/v1/runs?status=%00",
                "/runs/%00"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"] == "a NUL character is not allowed in a URL"
    assert client.get("/v1/runs").status_code == 200


def test_another_site_cannot_log_a_browser_in(api: ApiServer) -> None:
    """Login CSRF: a form on another site posting the attacker's key must not set the victim's session."""
    key = api.new_key("attacker")
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        with httpx.Client(base_url=api.url) as browser:
            refused = browser.post("/login", data={"api_key": key}, headers=headers)
            assert refused.status_code == 403 and "discovery_session" not in browser.cookies
    with httpx.Client(base_url=api.url) as browser:  # the same site still logs in
        done = browser.post("/login", data={"api_key": key}, headers={"origin": api.url})
        assert done.status_code == 303 and "discovery_session" in browser.cookies


def test_a_run_cannot_send_the_operators_llm_key_to_its_own_endpoint(api: ApiServer) -> None:
    client = api.client(api.new_key())
    for url in ("https://tenant.example/v1", "http://127.0.0.1:9/v1", "http://169.254.169.254/latest"):
        refused = client.post("/v1/runs", json={**SMALL_RUN, "proposer": {"kind": "llm", "model": "m",
                                                                            "base_url": url}})
        assert refused.status_code == 422, refused.text
        assert "not an endpoint this server's operator allows" in refused.json()["detail"]
    assert client.get("/v1/runs").json()["items"] == []  # nothing was created
