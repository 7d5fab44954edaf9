"""The `distill` job end to end on the sandbox: a code teacher (the warm start) and a network teacher each give a
fitted student with its vector stored, its fit's report and its `evaluate` job; a teacher whose gradient is not
finite on the grid fails its student with the reason. A student trains as its width's network (`train_request`)
and its best.py is the network at that width with exactly its parameters. Symbolic distillation: the search from
the warm start, scored in the sandbox, finds for the warm start an expression (itself) that passes the lpo rules and
the probe; formula students of DPO and of a network teacher are searched, probed and recorded (code to evaluate, or
failed with the reason)."""

from __future__ import annotations

import ast

import jax.numpy as jnp
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Candidate, Job, ParameterVector, Run
from service.evaluation import trace_code, train_request
from service.proposers.symbolic import search
from service.runs.distill import DistillRequest, FormulaStudent, NetworkStudent, request_distillation
from service.runs.export import best_download
from service.runs.jobs.distill import run_distillation
from service.runs.jobs.es import store_vector
from service.runs.jobs.formula import teacher_map
from service.runs.orchestrator import create_run
from service.runs.spec import RunSpec
from service.settings import Settings
from workers.results import GridSpec
from workers.sandbox import check_source, probe_isolation
from workers.targets import get_target, lpo
from workers.targets.kernels import lpo_network
from workers.vocabulary import CandidateKind, CandidateStatus, JobKind, JobStatus, Outcome, RunStatus

SMALL = NetworkStudent(width=16, steps=20, grid=32)
NOT_FINITE = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    bump = jnp.square(ratio - 1.0) * jnp.sqrt(jnp.maximum(ratio - 0.3, 0.0))
    return jax.nn.relu((ratio - clipped) * advantage) + bump
"""  # fine on the probe (ratio near 1); below ratio 0.3 its gradient is NaN (0 * inf), on the grid's lower rows


@pytest.fixture(scope="module", autouse=True)
def require_bwrap() -> None:
    report = probe_isolation()
    if not report.bwrap:
        pytest.fail(f"bubblewrap does not work here: {report.bwrap_detail}")


def _run_with_teachers(factory: sessionmaker[Session]) -> dict[str, str]:
    """A running lpo run with scored teachers: the warm start, a network candidate, a non-finite one and DPO."""
    with session_scope(factory) as session:
        run, _ = create_run(session, RunSpec(profile="smoke", budget={"candidates": 4}))
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run.id))
        vector = (0.05 * np.random.default_rng(0).standard_normal(lpo_network.PARAMETER_COUNT)).astype(np.float32)
        digest = store_vector(session, "lpo_network", vector)
        network = Candidate(run_id=run.id, index=1, name="ES mean", code="# a network", parent_ids=[],
                            ast_hash="n" * 64, kind=CandidateKind.NETWORK, network="lpo_network",
                            parameters_sha256=digest)
        bad = Candidate(run_id=run.id, index=2, name="not finite", code=NOT_FINITE, parent_ids=[], ast_hash="b" * 64)
        dpo = Candidate(run_id=run.id, index=3, name="DPO", code=lpo.DPO, parent_ids=[], ast_hash="d" * 64)
        session.add_all([network, bad, dpo])
        for candidate in (warm, network, bad, dpo):
            candidate.status, candidate.outcome, candidate.score = CandidateStatus.EVALUATED, Outcome.ok, 1.0
        session.flush()
        run.status, run.best_candidate_id = RunStatus.RUNNING, warm.id
        return {"run": run.id, "warm": warm.id, "network": network.id, "bad": bad.id, "dpo": dpo.id}


def _distil(factory: sessionmaker[Session], run_id: str, teacher_id: str,
            student: NetworkStudent | FormulaStudent = SMALL) -> str:
    student_id, created = request_distillation(factory, run_id, DistillRequest(candidate_id=teacher_id,
                                                                               student=student))
    assert created
    with session_scope(factory) as session:
        job_id = session.scalar(select(Job.id).where(Job.candidate_id == student_id, Job.kind == JobKind.DISTILL))
    run_distillation(factory, Settings(), job_id)
    with session_scope(factory) as session:
        assert session.get(Job, job_id).status == JobStatus.DONE
    return student_id


def test_the_distill_job_fits_students_of_code_and_network_teachers(session_factory: sessionmaker[Session]) -> None:
    ids = _run_with_teachers(session_factory)
    for teacher in ("warm", "network"):
        student_id = _distil(session_factory, ids["run"], ids[teacher])
        with session_scope(session_factory) as session:
            student = session.get(Candidate, student_id)
            assert student.status == CandidateStatus.PENDING and student.error is None, student.error
            assert student.network == "lpo_network-16" and student.parent_ids == [ids[teacher]]
            stored = session.get(ParameterVector, student.parameters_sha256)
            assert stored.size == 144 and stored.network == "lpo_network-16"
            report = student.stats["distillation"]["report"]
            assert report["steps"] == 20 and report["final_mse"] <= report["initial_mse"] + 1e-9
            assert "Fitted in 20 Adam steps" in student.thought
            assert session.scalar(select(Job.id).where(Job.candidate_id == student_id,
                                                       Job.kind == JobKind.EVALUATE)) is not None
            if teacher == "warm":  # PPO's own map: the student (at PPO from the start) matches it
                assert report["final_mse"] <= 1e-8


def test_a_teacher_that_is_not_finite_on_the_grid_fails_its_student(session_factory: sessionmaker[Session]) -> None:
    ids = _run_with_teachers(session_factory)
    student_id = _distil(session_factory, ids["run"], ids["bad"])
    with session_scope(session_factory) as session:
        student = session.get(Candidate, student_id)
        assert student.status == CandidateStatus.FAILED and student.outcome == Outcome.invalid
        assert "gradient map could not be computed in the sandbox" in student.error
        assert student.parameters_sha256 is None
        assert session.scalar(select(Job.id).where(Job.candidate_id == student_id,
                                                   Job.kind == JobKind.EVALUATE)) is None


def test_a_student_trains_and_exports_as_its_widths_network(session_factory: sessionmaker[Session]) -> None:
    vector = (0.2 * np.random.default_rng(4).standard_normal(144)).astype(np.float32)
    request = train_request("lpo", "CartPole-v1", "smoke", [0], [2.5e-4], [vector, vector])
    assert request.network == "lpo_network-16" and len(request.parameters) == 2
    with pytest.raises(ValueError, match="1152"):
        train_request("lpo", "CartPole-v1", "smoke", [0], [2.5e-4], [vector, np.zeros(1152, np.float32)])
    ids = _run_with_teachers(session_factory)
    with session_scope(session_factory) as session:
        digest = store_vector(session, "lpo_network-16", vector)
        student = Candidate(run_id=ids["run"], index=100_001, name="student", code="# a student", parent_ids=[],
                            ast_hash="s" * 64, kind=CandidateKind.NETWORK, network="lpo_network-16",
                            parameters_sha256=digest, status=CandidateStatus.EVALUATED, score=1.0)
        session.add(student)
        session.flush()
        run = session.get(Run, ids["run"])
        run.best_candidate_id = student.id
        text, _ = best_download(session, run, "inconclusive")
    namespace: dict[str, object] = {}
    exec(compile(ast.parse(text), "best.py", "exec"), namespace)  # noqa: S102 - our own export, under test
    assert np.array_equal(np.asarray(namespace["PARAMETERS"], dtype=np.float32), vector)
    ratio, advantage = np.meshgrid(np.exp(np.linspace(-1.0, 1.0, 21)), np.linspace(-3.0, 3.0, 9))
    ratio, advantage = jnp.asarray(ratio.ravel(), jnp.float32), jnp.asarray(advantage.ravel(), jnp.float32)
    exported = np.asarray(namespace["drift"](ratio, advantage, 0.2))  # type: ignore[operator]
    kernel = np.asarray(lpo_network.network_drift(jnp.asarray(vector), ratio, advantage, 0.2, 16))
    np.testing.assert_allclose(exported, kernel, rtol=1e-6, atol=1e-7)


def test_symbolic_distillation_of_the_warm_start_passes_the_rules_and_the_probe() -> None:
    settings = Settings()
    grid = GridSpec(advantages=32, ratios=32)
    teacher = teacher_map(settings, "lpo", lpo.WARM_START, None, None, grid).values
    fitness_calls: list[str] = []

    def fitness(code: str) -> float | None:
        fitness_calls.append(code)
        got = teacher_map(settings, "lpo", code, None, None, grid)
        return float(np.mean((got.values - teacher) ** 2)) if got.values is not None else None

    result = search("lpo", lpo.WARM_START, fitness, children=3, seed=0)
    assert result is not None and result.mse == 0.0 and result.start_mse == 0.0 and len(fitness_calls) >= 1
    assert check_source(result.code, get_target("lpo")) == []
    probed = trace_code(settings, "lpo", result.code, check_rules=True)  # the probe and the rules, in the sandbox
    assert probed.outcome == Outcome.ok, probed.error


@pytest.mark.parametrize("teacher", ["dpo", "network"])
def test_a_formula_student_is_searched_probed_and_recorded(teacher: str,
                                                           session_factory: sessionmaker[Session]) -> None:
    ids = _run_with_teachers(session_factory)
    student_id = _distil(session_factory, ids["run"], ids[teacher],
                         FormulaStudent(kind="formula", children=3, grid=32, seed=1))
    with session_scope(session_factory) as session:
        student = session.get(Candidate, student_id)
        assert student.kind == CandidateKind.CODE and student.parent_ids == [ids[teacher]]
        report = student.stats["distillation"]["report"]
        assert report["mse"] <= report["start_mse"] and report["children_tried"] == 3
        assert "being searched" not in student.code and check_source(student.code, get_target("lpo")) == []
        evaluate = session.scalar(select(Job.id).where(Job.candidate_id == student_id, Job.kind == JobKind.EVALUATE))
        if student.status == CandidateStatus.PENDING:  # a new expression: traced, fingerprinted, to be trained
            assert evaluate is not None and student.fingerprint and student.artifact_sha256
        else:  # nothing beat the warm start: the expression is the warm start, which the run already has
            assert student.status == CandidateStatus.FAILED and evaluate is None
            assert "already in this run" in student.error or "same function" in student.error, student.error
