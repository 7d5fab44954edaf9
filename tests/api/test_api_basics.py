"""The REST API over real HTTP: auth, problem+json errors, targets and environments, run creation rules."""

from __future__ import annotations

import base64
import json
import platform
import re
import time
from datetime import timedelta
from importlib import metadata
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from service.db import session_scope, utcnow
from service.db.models import ApiKey, Event, Job, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.keys import hash_key
from tests.api.conftest import ApiServer

SMALL_RUN = {"target": "lpo", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]}, "profile": "smoke",
             "proposer": {"kind": "evolution"}, "budget": {"candidates": 1}, "concurrency": 1, "seed": 0,
             "seeds_per_eval": 1, "metatest_seeds": 1}


def test_every_request_needs_a_key_and_errors_are_problem_json(api: ApiServer) -> None:
    response = api.client(None).get("/v1/runs")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401 and "Bearer" in response.json()["detail"]
    assert api.client("dsk_not-a-key").get("/v1/runs").status_code == 401


def test_a_revoked_key_is_refused_within_the_key_cache_time(api: ApiServer) -> None:
    key = api.new_key("soon-revoked")
    client = api.client(key)
    assert client.get("/v1/runs").status_code == 200  # verified, and now trusted for a few seconds
    with session_scope(api.runtime.factory) as session:
        session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).revoked_at = utcnow()
    revoked = time.monotonic()
    while (response := client.get("/v1/runs")).status_code == 200:
        assert time.monotonic() - revoked < api.runtime.settings.api_key_cache_seconds + 1.0
        time.sleep(0.2)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    # An unknown key is never remembered: a near miss of a trusted key is refused at once.
    trusted = api.new_key("trusted")
    assert api.client(trusted).get("/v1/runs").status_code == 200
    assert api.client(trusted[:-1] + ("A" if trusted[-1] != "A" else "B")).get("/v1/runs").status_code == 401


def test_targets_and_environments_are_listed_with_their_warm_starts(api: ApiServer) -> None:
    client = api.client(api.new_key())
    targets = client.get("/v1/targets").json()
    assert {t["name"] for t in targets} == {"lpo", "optimizer", "advantage", "open"}
    training = {t["name"]: t["training"] for t in targets}
    assert training["open"]["learning_rates"]["Breakout-MinAtar"] == 7e-3  # OPEN's own, not PPO's
    assert training["optimizer"]["learning_rates"]["Breakout-MinAtar"] == 1e-2
    assert (training["open"]["optimizer_noise"], training["open"]["gradient_clipping"]) == ("actor", "per_network")
    lpo = client.get("/v1/targets/lpo").json()
    assert lpo["signature"] == "def drift(ratio, advantage, epsilon):"
    assert "jnp.clip" in lpo["warm_start"] and any("ratio = 1" in r for r in lpo["rules"])
    # DPO (Lu et al. 2022) is lpo's reference algorithm, with its code, as every meta-test trains it.
    [dpo] = lpo["references"]
    assert dpo["name"] == "DPO" and "def drift(ratio, advantage, epsilon):" in dpo["code"]
    assert "alpha, beta = 2.0, 0.6" in dpo["code"] and "tanh" in dpo["code"]
    missing = client.get("/v1/targets/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    envs = {e["name"]: e for e in client.get("/v1/environments").json()}
    assert envs["CartPole-v1"]["profiles"]["full"]["total_timesteps"] == 500_000


@pytest.mark.parametrize(("change", "field"), [
    ({"target": "nope"}, "target"),
    ({"environments": {"train": ["Nope-v0"]}}, "environments.train"),
    ({"budget": {"candidates": 0}}, "budget.candidates"),
    ({"budget": {"candidates": 10**6}}, "budget.candidates"),
    ({"concurrency": 0}, "concurrency"),
    ({"proposer": {"kind": "llm"}}, "proposer"),
    ({"webhook": {"url": "not a url"}}, "webhook.url"),
])
def test_bad_runs_are_refused_naming_the_field(api: ApiServer, change: dict, field: str) -> None:
    response = api.client(api.new_key()).post("/v1/runs", json={**SMALL_RUN, **change})
    assert response.status_code == 422
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"].startswith(field) for e in body["errors"]), body


def test_a_preset_gives_the_defaults_and_every_field_given_wins(api: ApiServer) -> None:
    client = api.client(api.new_key())
    body = {"preset": "quick", "profile": "smoke", "environments": {"train": ["CartPole-v1"]},
            "budget": {"candidates": 1}, "seeds_per_eval": 1, "metatest_seeds": 1}
    run = client.post("/v1/runs", json=body).json()
    assert run["preset"] == "quick" and run["profile"] == "smoke" and run["metatest_seeds"] == 1
    assert run["learning_rate"] == "fixed" and run["budget"]["candidates"] == 1
    # No test environment named: the target's held-out environments are used.
    assert run["environments"] == {"train": ["CartPole-v1"], "test": ["Acrobot-v1"]}
    assert run["meta_test"][0]["references"] == {"DPO": None}  # to be meta-tested at the end
    made_with = run["provenance"]  # recorded at creation, for whoever reproduces the run
    assert made_with["jax"] == metadata.version("jax") and made_with["gymnax"] == metadata.version("gymnax")
    assert made_with["python"] == platform.python_version() and made_with["host"] == platform.node()
    assert made_with["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", made_with["git_sha"])
    client.post(f"/v1/runs/{run['id']}/cancel")
    unknown = client.post("/v1/runs", json={**body, "preset": "nope"})
    assert unknown.status_code == 422 and "preset" in unknown.text


def test_llm_without_endpoint_and_private_webhooks_are_refused(api: ApiServer) -> None:
    client = api.client(api.new_key())
    llm = client.post("/v1/runs", json={**SMALL_RUN, "proposer": {"kind": "llm", "model": "m"}})
    assert llm.status_code == 422 and "DISCOVERY_OPENAI_BASE_URL" in llm.json()["detail"]
    private = client.post("/v1/runs", json={**SMALL_RUN, "webhook": {"url": "http://10.0.0.1/hook"}})
    assert private.status_code == 422 and "webhook.url" in private.json()["detail"]


def test_idempotency_key_gives_the_same_run_and_refuses_a_different_body(api: ApiServer) -> None:
    client = api.client(api.new_key())
    first = client.post("/v1/runs", json=SMALL_RUN, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/runs", json=SMALL_RUN, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/runs", json={**SMALL_RUN, "seed": 1}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    listed = client.get("/v1/runs").json()["items"]
    assert [r["id"] for r in listed] == [first.json()["id"]]
    assert client.post(f"/v1/runs/{first.json()['id']}/cancel").json()["status"] == "cancelled"


def test_a_key_sees_only_its_own_runs(api: ApiServer) -> None:
    alice, bob = api.client(api.new_key("alice")), api.client(api.new_key("bob"))
    run = alice.post("/v1/runs", json=SMALL_RUN).json()
    assert bob.get(f"/v1/runs/{run['id']}").status_code == 404
    assert bob.get(f"/v1/runs/{run['id']}/candidates").status_code == 404
    assert bob.post(f"/v1/runs/{run['id']}/cancel").status_code == 404
    assert bob.get("/v1/runs").json()["items"] == []
    cancelled = alice.post(f"/v1/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert alice.post(f"/v1/runs/{run['id']}/cancel").status_code == 409
    assert bob.post(f"/v1/runs/{run['id']}/extend", json={"candidates": 1}).status_code == 404
    refused = alice.post(f"/v1/runs/{run['id']}/extend", json={"candidates": 1})
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("application/problem+json")
    assert "only a completed run can be extended" in refused.json()["detail"]
    for bad in ({}, {"candidates": 0}, {"candidates": 1, "islands": 2}):
        assert alice.post(f"/v1/runs/{run['id']}/extend", json=bad).status_code == 422


def test_run_list_pages_with_a_cursor_and_filters(api: ApiServer) -> None:
    client = api.client(api.new_key())
    ids = [client.post("/v1/runs", json={**SMALL_RUN, "seed": i}).json()["id"] for i in range(3)]
    for run_id in ids:
        client.post(f"/v1/runs/{run_id}/cancel")
    page1 = client.get("/v1/runs", params={"limit": 2}).json()
    page2 = client.get("/v1/runs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [r["id"] for r in page1["items"] + page2["items"]] == ids[::-1]
    assert page2["next_cursor"] is None
    assert client.get("/v1/runs", params={"status": "running"}).json()["items"] == []
    assert len(client.get("/v1/runs", params={"status": "cancelled"}).json()["items"]) == 3
    assert client.get("/v1/runs", params={"cursor": "garbage"}).status_code == 400


WRONG_SHAPES = [[1], ["x"], [None], {"created": "x"}, ["2026-01-01T00:00:00", "id", 3], [True], [-1], "text", 5]


@pytest.mark.parametrize("shape", WRONG_SHAPES, ids=[json.dumps(s) for s in WRONG_SHAPES])
def test_cursors_of_the_wrong_shape_are_400_problems(api: ApiServer, shape: object) -> None:
    client = api.client(api.new_key())
    run_id = client.post("/v1/runs", json=SMALL_RUN).json()["id"]
    client.post(f"/v1/runs/{run_id}/cancel")
    cursor = base64.urlsafe_b64encode(json.dumps(shape).encode()).decode()
    for path, params in (("/v1/runs", {}), (f"/v1/runs/{run_id}/candidates", {"sort": "time"}),
                         (f"/v1/runs/{run_id}/candidates", {"sort": "score"})):
        response = client.get(path, params={**params, "cursor": cursor})
        if path == "/v1/runs" or shape not in ([1],):  # [1] is a well-formed candidate cursor
            assert response.status_code == 400, (path, params, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "cursor" in response.json()["detail"]


def test_health_readiness_and_metrics(api: ApiServer) -> None:
    client = api.client(None)
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["checks"]["database"] == "ok"
    metrics = client.get("/metrics").text
    assert "discovery_http_requests_total" in metrics and "discovery_runs" in metrics


def test_openapi_declares_every_route_and_problem_responses(api: ApiServer) -> None:
    spec = api.client(None).get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events", "/v1/runs/{run_id}/candidates",
                 "/v1/candidates/{candidate_id}", "/v1/runs/{run_id}/best.py", "/v1/targets", "/v1/environments"):
        assert path in paths, path
    assert "404" in paths["/v1/runs/{run_id}"]["get"]["responses"]
    assert "401" in paths["/v1/runs"]["get"]["responses"]


def cancelled_run_with_a_webhook(client: httpx.Client) -> str:
    run_id = client.post("/v1/runs", json={**SMALL_RUN, "webhook": {"url": "http://127.0.0.1:9/hook"}}).json()["id"]
    client.post(f"/v1/runs/{run_id}/cancel")
    return run_id


def wait_until_idle(api: ApiServer, timeout: float = 300.0) -> None:
    """Wait until the local executor holds no job and no webhook delivery is due within a minute (runs of earlier
    tests go on in the background, and their deliveries retry)."""
    deadline = time.monotonic() + timeout
    while True:
        soon = utcnow() + timedelta(seconds=60)
        with session_scope(api.runtime.factory) as session:
            busy = session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(["pending", "claimed"])))
            busy += session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.status.in_(["pending", "delivering"]), WebhookDelivery.next_attempt_at < soon))
        if not busy:
            return
        assert time.monotonic() < deadline, f"{busy} jobs still open"
        time.sleep(0.5)


def get_counting_selects(api: ApiServer, client: httpx.Client, path: str) -> tuple[Any, int]:
    """GET `path` and count the SELECT statements the API sent to the database meanwhile (once the executor is
    idle, so no background job's query is counted, and once the key is verified and cached)."""
    wait_until_idle(api)
    assert client.get(path).status_code == 200
    engines = [api.runtime.factory.kw["bind"], api.runtime.read_factory.kw["bind"].sync_engine]
    selects: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        body = client.get(path).json()
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    return body, len(selects)


def _add_delivery(session: Session, run_id: str, endpoint_id: str, tag: str, attempts: int) -> None:
    row = Event(run_id=run_id, type="candidate.new_best", payload={"tag": tag})
    session.add(row)
    session.flush()
    delivery = WebhookDelivery(endpoint_id=endpoint_id, event_id=row.id, message_id=f"msg_{run_id}_{tag}",
                               status="failed")  # done with: no deliverer touches it while queries are counted
    session.add(delivery)
    session.flush()
    session.add_all([WebhookAttempt(delivery_id=delivery.id, status_code=500, latency_ms=1.0)
                     for _ in range(attempts)])


def test_webhook_deliveries_are_read_in_a_fixed_number_of_queries(api: ApiServer) -> None:
    client = api.client(api.new_key())
    run_id = cancelled_run_with_a_webhook(client)
    path = f"/v1/runs/{run_id}/webhook-deliveries"
    with session_scope(api.runtime.factory) as session:
        endpoint_id = session.scalar(select(WebhookEndpoint.id).where(WebhookEndpoint.run_id == run_id))
        for i in range(6):
            _add_delivery(session, run_id, endpoint_id, str(i), attempts=i)
    many, with_many = get_counting_selects(api, client, path)
    assert len(many) >= 6  # the six above, and the run's own run.cancelled
    with session_scope(api.runtime.factory) as session:
        _add_delivery(session, run_id, endpoint_id, "extra", attempts=1)
    more, with_more = get_counting_selects(api, client, path)
    assert len(more) == len(many) + 1
    assert with_more == with_many  # not one query per delivery


def test_a_run_is_read_in_a_few_queries(api: ApiServer) -> None:
    """GET /v1/runs/{id}: the run, its figures and its meta-test rows, whatever the run holds (the key is cached)."""
    client = api.client(api.new_key())
    run_id = cancelled_run_with_a_webhook(client)
    shown, selects = get_counting_selects(api, client, f"/v1/runs/{run_id}")
    assert shown["webhook"]["url"] == "http://127.0.0.1:9/hook" and shown["webhook"]["events"]
    # The warm start (the anchor, cached per host) may have set the scale before the cancel.
    assert shown["progress"]["candidates_done"] == 0 and (shown["best"] is None or shown["best"]["index"] == 0)
    assert selects <= 4  # run, figures, meta-test rows, the devices it was trained on


def test_a_read_survives_the_database_dropping_its_connections(api: ApiServer) -> None:
    """The read pool does not ping its connections: a read that finds its connection dead is tried again on a
    fresh one, so a database restart costs the client nothing."""
    client = api.client(api.new_key())
    run_id = cancelled_run_with_a_webhook(client)
    for _ in range(4):  # put a few connections into the read pool
        assert client.get(f"/v1/runs/{run_id}").status_code == 200
    read_engine = api.runtime.read_factory.kw["bind"].sync_engine
    assert read_engine.pool.checkedin() >= 1
    with api.runtime.factory() as session:  # what a restart does to every open connection
        killed = session.scalar(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                     " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert killed >= 1
    for path in (f"/v1/runs/{run_id}", "/v1/runs", f"/v1/runs/{run_id}/candidates?sort=score"):
        response = client.get(path)
        assert response.status_code == 200, response.text
    assert client.get(f"/v1/runs/{'0' * 32}").status_code == 404  # a refusal is not retried into something else
