"""A whole run through the API over real HTTP, PostgreSQL, Redis and a real Celery worker process:
create, watch the events, browse candidates, fetch the best file, receive the signed webhook."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from service.client import DiscoveryClient
from service.settings import Settings
from tests.api.conftest import ApiServer, serve
from tests.api.export_checks import check_the_export_has_a_row_per_seed_of_every_evaluation_stored
from tests.api.wandb_checks import check_the_wandb_bridge_logs_every_evaluated_candidate
from tests.runs.conftest import REPO, WorkerProcess, worker_env


class Receiver:
    """A webhook receiver on loopback that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, event_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.requests if json.loads(b)["type"] == event_type]


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification written out by hand (not with the project's signing code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(hmac.compare_digest(expected, g) for g in given)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def celery_api(postgres_database: Callable[[], str], cache_dir: Path, broker_url: str,  # noqa: F811
               tmp_path: Path) -> Iterator[ApiServer]:
    database_url = postgres_database()
    settings = Settings(database_url=database_url, broker_url=broker_url, cache_dir=cache_dir,
                        webhook_allowed_hosts="127.0.0.1")
    env = {**worker_env(database_url, cache_dir, broker_url),
           "DISCOVERY_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    for server in serve(settings):
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"],
                                       cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        worker = WorkerProcess(process, log)
        try:
            deadline = time.monotonic() + 60
            while b"ready." not in log.read_bytes():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            yield server
        finally:
            worker.kill()


def read_events(client: httpx.Client, run_id: str, last_event_id: int | None = None,
                timeout: float = 400) -> list[tuple[int, str, dict]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[tuple[int, str, dict]] = []
    current: dict[str, str] = {}
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, value = line.split(":", 1)
                current[field] = value.strip()
            elif line == "" and current:
                events.append((int(current["id"]), current["event"], json.loads(current["data"])))
                current = {}
    return events


def test_a_whole_run_over_http_with_celery_and_a_signed_webhook(
        celery_api: ApiServer, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = celery_api.new_key()
    client = celery_api.client(key)
    created = client.post("/v1/runs", json={
        "target": "lpo", "environments": {"train": ["CartPole-v1"], "test": ["Acrobot-v1"]}, "profile": "smoke",
        "proposer": {"kind": "evolution"}, "budget": {"candidates": 3}, "concurrency": 2, "seed": 0,
        "seeds_per_eval": 1, "metatest_seeds": 1, "verification_seeds": 2,
        "webhook": {"url": receiver.url, "events": ["run.completed", "candidate.new_best"]},
    })
    assert created.status_code == 201, created.text
    run = created.json()
    secret = run["webhook"]["secret"]
    assert secret.startswith("whsec_") and run["status"] in ("queued", "running")
    assert client.get(f"/v1/runs/{run['id']}").json()["webhook"]["secret"] is None  # shown once only

    events = read_events(client, run["id"])
    types = [t for _, t, _ in events]
    assert types[0] == "run.started" and types[-1] == "run.completed"
    assert "candidate.proposed" in types and "candidate.evaluated" in types and "candidate.new_best" in types
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    middle = ids[len(ids) // 2]
    assert [i for i, _, _ in read_events(client, run["id"], last_event_id=middle)] == [i for i in ids if i > middle]

    final = client.get(f"/v1/runs/{run['id']}").json()
    assert final["status"] == "completed" and final["progress"]["candidates_done"] == 3
    assert final["best"] is not None and [row["env"] for row in final["meta_test"]] == ["Acrobot-v1"]
    # The warm start is meta-tested fresh against its anchor: an interval around 1, never a discovery of its own.
    warm_cell = final["meta_test"][0]["warm_start"]
    assert warm_cell["score_ci"] is not None and warm_cell["verdict"] != "better"
    assert final["discovery"]["found"] == (final["best"]["verdict"] == "better")
    assert final["discovery"]["message"].startswith("a discovery" if final["discovery"]["found"] else "no candidate")

    candidates = client.get(f"/v1/runs/{run['id']}/candidates", params={"sort": "score"}).json()["items"]
    assert [c["reference"] for c in candidates if c["reference"]] == ["DPO"]  # meta-tested, listed, no score
    candidates = [c for c in candidates if not c["reference"]]
    assert len(candidates) == 4 and all(c["outcome"] for c in candidates)
    scores = [c["verified_score"] if c["verified_score"] is not None else c["score"] for c in candidates]
    known = [s for s in scores if s is not None]
    assert known == sorted(known, reverse=True)
    # Every proposal is some operator's: the operators' proposals add up to the run's, tried >= proposed.
    operators = {o["operator"]: o for o in final["operators"]}
    assert sum(o["proposed"] for o in operators.values()) == 3
    assert all(o["tried"] >= max(o["proposed"], o["broke_a_rule"] + o["behavioural_duplicates"])
               for o in operators.values())
    made = [c["operator"] for c in candidates if not c["is_warm_start"]]
    assert sorted(made) == sorted(op for op, o in operators.items() for _ in range(o["proposed"]))
    child = next(c for c in candidates if not c["is_warm_start"])
    detail = client.get(f"/v1/candidates/{child['id']}").json()
    assert "def drift(ratio, advantage, epsilon)" in detail["code"] and detail["parent_ids"]
    assert detail["diff"].startswith("---")
    train = [e for e in detail["evaluations"] if e["phase"] == "train"]
    if detail["outcome"] == "ok":
        assert train[0]["curves"]["returns"] and train[0]["final_return"] is not None

    best = client.get(f"/v1/runs/{run['id']}/best.py")
    assert best.status_code == 200 and best.headers["content-type"].startswith("text/x-python")
    assert run["id"] in best.text and f"Verdict: {final['discovery']['message']}." in best.text
    module = ast.parse(best.text)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "drift" for n in module.body)
    check_the_export_has_a_row_per_seed_of_every_evaluation_stored(celery_api, key, run["id"])
    check_the_wandb_bridge_logs_every_evaluated_candidate(celery_api, key, run["id"], tmp_path, monkeypatch)
    with DiscoveryClient(celery_api.url, key) as python:  # what a notebook sees of the same run
        seen: list[str] = []
        assert python.wait(run["id"], timeout=60, progress=lambda r: seen.append(r.status)).status == "completed"
        assert seen == ["completed"] and python.best_code(run["id"]) == best.text
        assert [c.id for c in python.candidates(run["id"], sort="score")] == [
            c["id"] for c in client.get(f"/v1/runs/{run['id']}/candidates", params={"sort": "score"}).json()["items"]]

    deadline = time.monotonic() + 60
    while not receiver.of_type("run.completed") and time.monotonic() < deadline:
        time.sleep(0.5)
    completed = receiver.of_type("run.completed")
    assert len(completed) == 1, [json.loads(b)["type"] for _, b in receiver.requests]
    headers, body = completed[0]
    assert verify_signature(secret, headers, body)
    assert not verify_signature("whsec_" + base64.b64encode(b"x" * 24).decode(), headers, body)
    payload = json.loads(body)
    assert payload["data"]["run_id"] == run["id"] and payload["data"]["status"] == "completed"
    assert payload["data"]["links"]["best"] == f"/v1/runs/{run['id']}/best.py"
    assert payload["data"]["discovery_message"] == final["discovery"]["message"]
    assert payload["data"]["best_verdict"] == final["best"]["verdict"]

    def completed_delivery() -> dict:  # recorded once the receiver's answer is back (just after it got the body)
        deliveries = client.get(f"/v1/runs/{run['id']}/webhook-deliveries").json()
        return next(d for d in deliveries if d["event_type"] == "run.completed")

    deadline = time.monotonic() + 30
    while completed_delivery()["status"] == "delivering" and time.monotonic() < deadline:
        time.sleep(0.2)
    done = [completed_delivery()]
    assert done[0]["status"] == "delivered" and done[0]["attempt_log"][0]["status_code"] == 200
    assert done[0]["message_id"] == headers["webhook-id"]

    # More budget: the completed run goes on from its history, with exactly the proposals asked for.
    extended = client.post(f"/v1/runs/{run['id']}/extend", json={"candidates": 1})
    assert extended.status_code == 200, extended.text
    assert extended.json()["status"] == "running" and extended.json()["progress"]["candidates_budget"] == 4
    deadline = time.monotonic() + 240
    while client.get(f"/v1/runs/{run['id']}").json()["status"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    again = client.get(f"/v1/runs/{run['id']}").json()
    assert again["status"] == "completed" and again["progress"]["candidates_done"] == 4
    indices = sorted(c["index"] for c in client.get(f"/v1/runs/{run['id']}/candidates").json()["items"]
                     if not c["reference"])
    assert indices == [0, 1, 2, 3, 4]
    assert client.post(f"/v1/runs/{run['id']}/extend", json={"candidates": 0}).status_code == 422
