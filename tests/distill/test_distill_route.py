"""POST /v1/runs/{id}/distill over real HTTP: a scored teacher gets a student (a network candidate of the run, the
teacher its parent, with its `distill` job published), asking again gives the same student, a completed run runs
again for it, and bad input is refused with a problem: 404 (run, candidate, another key's run), 409 (a teacher with
no score, a run that cannot evaluate a student), 422 (a malformed body). The executor records what it is handed and
runs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import select

from service.db import session_scope
from service.db.models import Candidate, Job, Run
from service.keys import create_key
from service.runs.orchestrator import create_run
from service.runs.spec import RunSpec
from tests.api.conftest import ApiServer
from tests.conftest import process_env
from workers.vocabulary import CandidateKind, CandidateStatus, JobKind, Outcome, RunStatus, TaskKind


def scored_run(recording_server: ApiServer, owner_key_id: str,
               status: RunStatus = RunStatus.RUNNING) -> tuple[str, str, str]:
    """(run, its scored warm start, a pending proposal) in a run with `status`."""
    with session_scope(recording_server.runtime.factory) as session:
        run, _ = create_run(session, RunSpec(profile="smoke", budget={"candidates": 1}), owner_key_id=owner_key_id)
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run.id))
        warm.status, warm.outcome, warm.score = CandidateStatus.EVALUATED, Outcome.ok, 1.0
        pending = Candidate(run_id=run.id, index=1, name="pending", code=warm.code, parent_ids=[], ast_hash="p" * 64)
        session.add(pending)
        session.flush()
        run.status, run.best_candidate_id, run.best_score = status, warm.id, 1.0
        return run.id, warm.id, pending.id


def test_a_scored_teacher_gets_a_student_of_the_run(recording_server: ApiServer) -> None:
    with session_scope(recording_server.runtime.factory) as session:
        key, row = create_key(session, "owner")
    run_id, warm_id, _ = scored_run(recording_server, row.id)
    executor = recording_server.runtime.executor
    with recording_server.client(key) as client:
        made = client.post(f"/v1/runs/{run_id}/distill", json={"candidate_id": warm_id,
                                                               "student": {"kind": "network", "width": 64}})
        assert made.status_code == 202, made.text
        student = made.json()
        assert student["parent_ids"] == [warm_id] and student["kind"] == CandidateKind.NETWORK
        assert student["network"] == "lpo_network-64" and student["status"] == "pending"
        assert student["index"] > 100_000 and student["operator"] == "distill"
        assert student["distillation"]["width"] == 64 and student["distillation"]["teacher_id"] == warm_id
        again = client.post(f"/v1/runs/{run_id}/distill", json={"candidate_id": warm_id,
                                                                "student": {"kind": "network", "width": 64}})
        assert again.status_code == 200 and again.json()["id"] == student["id"]
        other = client.post(f"/v1/runs/{run_id}/distill", json={"candidate_id": warm_id})  # width 128: ES's network
        assert other.status_code == 202 and other.json()["network"] == "lpo_network"
        assert other.json()["index"] == student["index"] + 1
        formula = client.post(f"/v1/runs/{run_id}/distill", json={"candidate_id": warm_id,
                                                                  "student": {"kind": "formula", "children": 4}})
        assert formula.status_code == 202, formula.text
        assert formula.json()["kind"] == CandidateKind.CODE and formula.json()["network"] is None
        assert formula.json()["parent_ids"] == [warm_id] and "being searched" in client.get(
            f"/v1/candidates/{formula.json()['id']}").json()["code"]
    with session_scope(recording_server.runtime.factory) as session:
        jobs = session.scalars(select(Job).where(Job.run_id == run_id, Job.kind == JobKind.DISTILL)).all()
        assert sorted(j.candidate_id for j in jobs) == sorted([student["id"], other.json()["id"], formula.json()["id"]])
    assert {(t.id, t.kind) for t in executor.published} >= {(j.id, TaskKind.DISTILL) for j in jobs}


def test_a_completed_run_runs_again_for_its_student(recording_server: ApiServer) -> None:
    with session_scope(recording_server.runtime.factory) as session:
        key, row = create_key(session, "owner")
    run_id, warm_id, _ = scored_run(recording_server, row.id, RunStatus.COMPLETED)
    with recording_server.client(key) as client:
        made = client.post(f"/v1/runs/{run_id}/distill", json={"candidate_id": warm_id})
        assert made.status_code == 202, made.text
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == RunStatus.RUNNING


def _problem(response, status: int, words: str = "") -> None:  # noqa: ANN001 - an httpx response
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert words in response.json()["detail"], response.json()


def test_bad_input_is_refused_with_a_problem(recording_server: ApiServer) -> None:
    with session_scope(recording_server.runtime.factory) as session:
        key, row = create_key(session, "owner")
        stranger, _ = create_key(session, "someone else")
    run_id, warm_id, pending_id = scored_run(recording_server, row.id)
    failed_id, failed_warm, _ = scored_run(recording_server, row.id, RunStatus.FAILED)
    url = f"/v1/runs/{run_id}/distill"
    with recording_server.client(key) as client:
        _problem(client.post("/v1/runs/no-such-run/distill", json={"candidate_id": warm_id}), 404, "no run")
        _problem(client.post(url, json={"candidate_id": "no-such-candidate"}), 404, "no candidate")
        _problem(client.post(url, json={"candidate_id": failed_warm}), 404, "no candidate")  # another run's
        _problem(client.post(url, json={"candidate_id": pending_id}), 409, "has no score yet")
        _problem(client.post(f"/v1/runs/{failed_id}/distill", json={"candidate_id": failed_warm}), 409, "failed")
        for body in ({}, {"candidate_id": warm_id, "student": {"kind": "network", "width": 0}},
                     {"candidate_id": warm_id, "student": {"kind": "network", "width": 4096}},
                     {"candidate_id": warm_id, "student": {"kind": "network", "grid": 8}},
                     {"candidate_id": warm_id, "student": {"kind": "tree"}}, [warm_id]):
            _problem(client.post(url, json=body), 422)
        _problem(client.post(url, json={"candidate_id": warm_id, "student": {"kind": "formula", "children": 0}}), 422)
    with recording_server.client(stranger) as client:
        _problem(client.post(url, json={"candidate_id": warm_id}), 404, "no run")
    with session_scope(recording_server.runtime.factory) as session:
        assert session.scalars(select(Job).where(Job.kind == JobKind.DISTILL)).all() == []
        assert session.get(Run, failed_id).status == RunStatus.FAILED


def test_discovery_runs_distill_asks_the_server(recording_server: ApiServer) -> None:
    with session_scope(recording_server.runtime.factory) as session:
        key, row = create_key(session, "owner")
    run_id, warm_id, pending_id = scored_run(recording_server, row.id)
    env = process_env()
    env.update(DISCOVERY_API_URL=recording_server.url, DISCOVERY_API_KEY=key, COLUMNS="200")

    def discovery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "runs", "distill", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    made = discovery(run_id, warm_id, "--width", "16", "--steps", "50", "--learning-rate", "1e-2")
    assert made.returncode == 0, made.stderr
    assert "lpo_network-16" in made.stdout and "pending" in made.stdout and warm_id in made.stdout
    as_json = json.loads(discovery(run_id, warm_id, "--width", "16", "--steps", "50", "--learning-rate", "1e-2",
                                   "--json").stdout)
    assert as_json["distillation"]["learning_rate"] == 1e-2 and as_json["distillation"]["steps"] == 50
    refused = discovery(run_id, pending_id)
    assert refused.returncode == 2 and "409" in refused.stderr and "has no score yet" in refused.stderr
