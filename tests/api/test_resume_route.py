"""POST /v1/runs/{id}/resume over real HTTP: an interrupted run is set going again (its jobs published), a run that
is not interrupted gets a 409 problem, another key's run a 404. The executor records what it is handed and runs
nothing, so no evaluation starts."""

from __future__ import annotations

from service.db import session_scope
from service.db.models import Event, Job, Run
from service.keys import create_key
from service.runs.orchestrator import create_run, interrupt
from service.runs.spec import RunSpec
from tests.api.conftest import ApiServer, RecordingExecutor


def stored_run(recording_server: ApiServer, owner_key_id: str) -> str:
    """A run as `discovery run` leaves it: created and started (its warm start's evaluation pending)."""
    with session_scope(recording_server.runtime.factory) as session:
        run, _ = create_run(session, RunSpec(profile="smoke", budget={"candidates": 1}), owner_key_id=owner_key_id)
        run.status = "running"
        return run.id


def test_resume_sets_an_interrupted_run_going_and_refuses_any_other(recording_server: ApiServer) -> None:
    with session_scope(recording_server.runtime.factory) as session:
        key, row = create_key(session, "owner")
        other, _ = create_key(session, "someone else")
    run_id = stored_run(recording_server, row.id)
    executor = recording_server.runtime.executor
    assert isinstance(executor, RecordingExecutor)

    with recording_server.client(key) as client:
        running = client.post(f"/v1/runs/{run_id}/resume")  # not interrupted: nothing to resume
        assert running.status_code == 409, running.text
        assert running.headers["content-type"].startswith("application/problem+json")
        assert "only an interrupted run can be resumed" in running.json()["detail"]

        assert interrupt(recording_server.runtime.factory, run_id)
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "interrupted"
        with recording_server.client(other) as stranger:  # ownership as on every run route: another key's run is absent
            assert stranger.post(f"/v1/runs/{run_id}/resume").status_code == 404
        assert client.post("/v1/runs/no-such-run/resume").status_code == 404
        assert executor.published == []

        resumed = client.post(f"/v1/runs/{run_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "running"
        again = client.post(f"/v1/runs/{run_id}/resume")
        assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")

    with session_scope(recording_server.runtime.factory) as session:
        [job] = session.query(Job).filter(Job.run_id == run_id).all()
        assert job.status == "pending" and job.published_at is None  # the recording executor marks nothing
        assert session.get(Run, run_id).status == "running"
        types = [e.type for e in session.query(Event).filter(Event.run_id == run_id).order_by(Event.id)]
        assert types[-2:] == ["run.interrupted", "run.started"]
    assert [task.id for task in executor.published] == [job.id]  # the resume published the run's pending job
