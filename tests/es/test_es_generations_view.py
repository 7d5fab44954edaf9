"""An es run's generations, shown and extended, over real HTTP (the executor records what it is handed and runs
nothing; the generations are written as the ES job writes them): GET /v1/runs/{id}/generations pages each
generation's fitness with its interval, sigma, learning rate and cost, and only to the run's owner; the run's
progress counts generations; POST /v1/runs/{id}/extend takes `generations` for an es run (and the next generation
asks from the state the last one told), refuses it for another run and refuses bad values with a problem; the CLI
shows and extends; the run page draws and lists them; `discovery run`'s bar counts generations."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import select

from service.client import DiscoveryClient
from service.db import session_scope
from service.db.models import Candidate, ESGeneration, Job, Run
from service.keys import create_key
from service.proposers.es import ESSettings, ESState, ask, initial_state, tell
from service.runs.jobs import es as es_job
from service.runs.orchestrator import add_job, create_run
from service.runs.queries.generations import fitness_summary, t_quantile_975
from service.runs.runner import _progress
from service.runs.spec import RunSpec
from service.settings import Settings
from tests.api.conftest import ApiServer
from tests.conftest import process_env
from tests.es.test_es_generation import Recorder
from workers.vocabulary import CandidateStatus, JobKind, JobStatus, Outcome, RunStatus

DIM = 1152
POPULATION = 6
# Generation 1's fitness: member 4 diverged; the complete pairs' means are 1.1 and 0.9.
FITNESS = [[1.0, 1.0, 0.9, 1.1, 1.0, 1.0], [1.3, 0.9, 1.0, 0.8, None, 1.2], [1.2, 1.1, 1.0, 1.3, 0.9, 1.4]]


def es_run(server: ApiServer, owner_key_id: str, status: RunStatus = RunStatus.COMPLETED) -> str:
    """A `status` es run of 3 generations, each told as the ES job tells it (its row, its propose job done)."""
    spec = RunSpec.model_validate({"profile": "smoke", "environments": {"train": ["CartPole-v1"]}, "seed": 5,
                                   "proposer": {"kind": "es", "every_k": 2,
                                                "es": {"population": POPULATION, "generations": 3}}})
    es = ESSettings(population=POPULATION, generations=3)
    with session_scope(server.runtime.factory) as session:
        run, _ = create_run(session, spec, owner_key_id=owner_key_id)
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run.id))
        warm.status, warm.outcome, warm.score = CandidateStatus.EVALUATED, Outcome.ok, 1.0
        run.status, run.best_candidate_id, run.best_score = status, warm.id, 1.0
        state = initial_state(es, DIM, run.seed)
        for generation, fitness in enumerate(FITNESS):
            population = ask(state, es)
            state = tell(state, es, population, np.array([np.nan if f is None else f for f in fitness]))
            session.add(ESGeneration(run_id=run.id, generation=generation, state=state.to_dict(), fitness=fitness,
                                     seeds=[2**30 + generation], env_steps=6 * 16_384, trainer_seconds=1.5))
            job = add_job(session, run, JobKind.PROPOSE, f"propose:{run.id}:{generation + 1}",
                          proposal_index=generation + 1)
            job.status = JobStatus.DONE
        for job in session.scalars(select(Job).where(Job.run_id == run.id)):
            job.status = JobStatus.DONE
        return run.id


def evolution_run(server: ApiServer, owner_key_id: str) -> str:
    with session_scope(server.runtime.factory) as session:
        run, _ = create_run(session, RunSpec(profile="smoke", budget={"candidates": 1}), owner_key_id=owner_key_id)
        run.status = RunStatus.COMPLETED
        return run.id


def keys(server: ApiServer) -> tuple[str, str, str]:
    with session_scope(server.runtime.factory) as session:
        key, row = create_key(session, "owner")
        stranger, _ = create_key(session, "someone else")
        return key, row.id, stranger


def problem(response: httpx.Response, status: int, words: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert words in response.json()["detail"], response.json()


def test_the_generations_route_pages_each_generations_fitness_to_the_owner_only(
        recording_server: ApiServer) -> None:
    key, owner, stranger = keys(recording_server)
    run_id, other_id = es_run(recording_server, owner), evolution_run(recording_server, owner)
    url = f"/v1/runs/{run_id}/generations"
    with recording_server.client(key) as client:
        first = client.get(url, params={"limit": 2})
        assert first.status_code == 200, first.text
        assert [g["generation"] for g in first.json()["items"]] == [0, 1] and first.json()["next_cursor"]
        rest = client.get(url, params={"limit": 2, "cursor": first.json()["next_cursor"]}).json()
        assert [g["generation"] for g in rest["items"]] == [2] and rest["next_cursor"] is None
        one = first.json()["items"][1]
        assert one["fitness"] == FITNESS[1] and one["members"] == 6 and one["diverged"] == 1
        assert one["fitness_mean"] == pytest.approx(1.04) and one["fitness_min"] == 0.8
        assert one["fitness_max"] == 1.3 and one["fitness_std"] == pytest.approx(np.std([1.3, .9, 1, .8, 1.2], ddof=1))
        half = 12.706 * np.std([1.1, 0.9], ddof=1) / np.sqrt(2)  # the two complete pairs, one degree of freedom
        assert one["fitness_ci"] == pytest.approx([1.0 - half, 1.0 + half])
        assert one["env_steps"] == 6 * 16_384 and one["trainer_seconds"] == 1.5 and one["seeds"] == [2**30 + 1]
        with session_scope(recording_server.runtime.factory) as session:
            told = ESState.from_dict(session.get(ESGeneration, (run_id, 1)).state)
        assert one["sigma"] == pytest.approx(told.sigma) and one["learning_rate"] == pytest.approx(told.lr)
        with DiscoveryClient(recording_server.url, key) as python:  # the Python client reads every page
            assert [g.generation for g in python.generations(run_id)] == [0, 1, 2]
        run = client.get(f"/v1/runs/{run_id}").json()
        assert run["progress"]["generations_done"] == 3 and run["progress"]["generations_budget"] == 3
        assert run["links"]["generations"] == url
        other = client.get(f"/v1/runs/{other_id}")
        assert other.json()["progress"]["generations_budget"] is None
        assert client.get(f"/v1/runs/{other_id}/generations").json() == {"items": [], "next_cursor": None}
        problem(client.get("/v1/runs/no-such-run/generations"), 404, "no run")
        problem(client.get(url, params={"cursor": "garbage"}), 400)
        for limit in (0, -1, 501, "x"):
            problem(client.get(url, params={"limit": limit}), 422)
    with recording_server.client(stranger) as client:
        problem(client.get(url), 404, "no run")
        problem(client.get(url, params={"limit": 1, "cursor": first.json()["next_cursor"]}), 404, "no run")


def test_an_es_run_is_extended_by_generations_and_goes_on_from_its_last_state(
        recording_server: ApiServer, tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    key, owner, stranger = keys(recording_server)
    run_id = es_run(recording_server, owner)
    with recording_server.client(stranger) as client:
        problem(client.post(f"/v1/runs/{run_id}/extend", json={"generations": 2}), 404, "no run")
    with recording_server.client(key) as client:
        extended = client.post(f"/v1/runs/{run_id}/extend", json={"generations": 2})
        assert extended.status_code == 200, extended.text
        assert extended.json()["status"] == RunStatus.RUNNING
        progress = extended.json()["progress"]
        assert (progress["generations_done"], progress["generations_budget"]) == (3, 5)
        assert extended.json()["proposer"]["es"]["generations"] == 5
        problem(client.post(f"/v1/runs/{run_id}/extend", json={"generations": 1}), 409, "only a completed run")
    with session_scope(recording_server.runtime.factory) as session:
        job = session.scalar(select(Job).where(Job.run_id == run_id, Job.kind == JobKind.PROPOSE,
                                               Job.status == JobStatus.PENDING))
        assert job is not None and job.proposal_index == 4  # generation 3, the first of the two added
        last = ESState.from_dict(session.get(ESGeneration, (run_id, 2)).state)
    evaluate = Recorder()
    settings = Settings(database_url="sqlite://", broker_url=None, cache_dir=tmp_path)
    es_job.run_generation(recording_server.runtime.factory, settings, job.id, evaluate)
    (asked, _), = evaluate.calls
    assert np.array_equal(asked, ask(last, ESSettings(population=POPULATION, generations=5)))
    with session_scope(recording_server.runtime.factory) as session:
        assert ESState.from_dict(session.get(ESGeneration, (run_id, 3)).state).generation == 4
        assert session.get(Run, run_id).proposer["es"]["generations"] == 5


def test_bad_extensions_are_refused_with_a_problem(recording_server: ApiServer) -> None:
    key, owner, stranger = keys(recording_server)
    run_id, other_id = es_run(recording_server, owner), evolution_run(recording_server, owner)
    url = f"/v1/runs/{run_id}/extend"
    with recording_server.client(key) as client:
        problem(client.post(url, json={"candidates": 1}), 422, "extend it with generations")
        problem(client.post(f"/v1/runs/{other_id}/extend", json={"generations": 1}), 422, "only an es run")
        for body in ({}, {"generations": 0}, {"generations": -3}, {"generations": 10**9}, {"generations": "many"},
                     {"generations": 1.5}, {"generations": None}, {"candidates": 1, "generations": 1}):
            problem(client.post(url, json=body), 422)
        problem(client.post(url, json={"generations": 100_000}), 409, "at most 100000 generations")
    with recording_server.client(stranger) as client:
        problem(client.post(f"/v1/runs/{other_id}/extend", json={"generations": 1}), 404, "no run")
    with session_scope(recording_server.runtime.factory) as session:
        for unchanged, candidates in ((run_id, 12), (other_id, 1)):
            run = session.get(Run, unchanged)
            assert run.status == RunStatus.COMPLETED and run.budget["candidates"] == candidates
        assert session.get(Run, run_id).proposer["es"]["generations"] == 3
        pending = select(Job).where(Job.kind == JobKind.PROPOSE, Job.status == JobStatus.PENDING)
        assert session.scalars(pending).all() == []  # nothing was scheduled


def test_the_cli_shows_and_extends_an_es_runs_generations(recording_server: ApiServer) -> None:
    key, owner, _ = keys(recording_server)
    run_id = es_run(recording_server, owner)
    env = process_env()
    env.update(DISCOVERY_API_URL=recording_server.url, DISCOVERY_API_KEY=key, COLUMNS="200")

    def discovery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "runs", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    shown = discovery("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "generations 3/3" in shown.stdout and "ES generations (all 3)" in shown.stdout
    assert "1.040 [-0.27, 2.27]" in shown.stdout and "1/6" in shown.stdout  # generation 1: mean [CI], diverged
    listed = json.loads(discovery("generations", run_id, "--last", "2", "--json").stdout)
    assert [g["generation"] for g in listed] == [1, 2]
    neither = discovery("extend", run_id)
    assert neither.returncode == 2 and neither.stderr.strip().count("\n") == 0 and "--generations" in neither.stderr
    zero = discovery("extend", run_id, "--generations", "0")
    assert zero.returncode == 2 and zero.stderr.strip().count("\n") == 0 and "422" in zero.stderr
    extended = discovery("extend", run_id, "--generations", "2")
    assert extended.returncode == 0, extended.stderr
    assert "running, generations 3/5" in extended.stdout


def test_the_run_page_draws_and_lists_the_generations(recording_server: ApiServer) -> None:
    key, owner, stranger = keys(recording_server)
    run_id, other_id = es_run(recording_server, owner), evolution_run(recording_server, owner)
    form = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=recording_server.url) as browser:
        browser.post("/login", content=f"api_key={key}", headers=form)
        page = browser.get(f"/runs/{run_id}").text
        assert 'id="generations"' in page and "Fitness of each ES generation" in page
        assert "3 / 3" in page and "1.040" in page and "[-0.27, 2.27]" in page and "1 / 6" in page
        assert 'id="generations"' not in browser.get(f"/runs/{other_id}").text
    with httpx.Client(base_url=recording_server.url) as browser:
        browser.post("/login", content=f"api_key={stranger}", headers=form)
        assert browser.get(f"/runs/{run_id}").status_code == 404


def test_discovery_runs_progress_bar_counts_generations(recording_server: ApiServer) -> None:
    _, owner, _ = keys(recording_server)
    run_id = es_run(recording_server, owner)
    console = Console(record=True, width=160, force_terminal=False)
    assert _progress(recording_server.runtime, run_id, console) == RunStatus.COMPLETED
    assert "3/3 generations" in console.export_text()


def test_the_fitness_summary_of_a_generation() -> None:
    assert fitness_summary([None, None]) == {"members": 2, "diverged": 2, "fitness_mean": None, "fitness_ci": None,
                                             "fitness_std": None, "fitness_min": None, "fitness_max": None}
    lone = fitness_summary([1.0, 3.0])  # one pair: a mean, no interval
    assert lone["fitness_mean"] == 2.0 and lone["fitness_ci"] is None
    assert t_quantile_975(30) == 2.042 and t_quantile_975(31) == pytest.approx(2.0395, abs=5e-4)
    assert t_quantile_975(200) == pytest.approx(1.9719, abs=5e-4)
