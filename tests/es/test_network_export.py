"""A network candidate's `best.py`: the target's network in plain JAX and its parameters, standalone (it imports
nothing of ours), computing exactly the kernel's drift with exactly the stored float32 vector."""

from __future__ import annotations

import ast

import jax.numpy as jnp
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Candidate, ParameterVector, Run
from service.proposers.es import ESSettings, initial_state
from service.runs.export import best_download
from service.runs.jobs.es import add_network_candidate
from service.runs.orchestrator import create_run
from service.runs.spec import RunSpec
from workers.targets.kernels import lpo_network
from workers.vocabulary import CandidateKind


def _run_with_network(factory: sessionmaker[Session], vector: np.ndarray) -> str:
    spec = RunSpec.model_validate({"profile": "smoke", "proposer": {"kind": "es", "es": {"population": 4}}})
    with session_scope(factory) as session:
        run, _ = create_run(session, spec)
        state = initial_state(ESSettings(population=4), lpo_network.PARAMETER_COUNT, 0, mean=vector)
        candidate = add_network_candidate(session, run, state, 7)
        run.best_candidate_id, run.best_score = candidate.id, 1.2
        return run.id


def test_best_py_of_a_network_candidate_is_the_network_and_its_parameters(
        session_factory: sessionmaker[Session]) -> None:
    vector = (np.random.default_rng(3).standard_normal(lpo_network.PARAMETER_COUNT) * 0.3).astype(np.float32)
    run_id = _run_with_network(session_factory, vector)
    with session_scope(session_factory) as session:
        run = session.get(Run, run_id)
        candidate = session.get(Candidate, run.best_candidate_id)
        assert candidate.kind == CandidateKind.NETWORK and candidate.es_generation == 7
        stored = session.get(ParameterVector, candidate.parameters_sha256)
        assert np.array_equal(np.frombuffer(stored.data, dtype="<f4"), vector)
        download = best_download(session, run, "inconclusive")
    assert download is not None
    text, name = download
    assert name.endswith(".py") and "ES mean, generation 7" in text
    tree = ast.parse(text)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"jax", "jax.numpy"} and not any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    namespace: dict[str, object] = {}
    exec(compile(tree, "best.py", "exec"), namespace)  # noqa: S102 - our own export, under test
    assert np.array_equal(np.asarray(namespace["PARAMETERS"], dtype=np.float32), vector)  # exact round trip
    ratio, advantage = np.meshgrid(np.exp(np.linspace(-1.0, 1.0, 41)), np.linspace(-3.0, 3.0, 17))
    ratio, advantage = jnp.asarray(ratio.ravel(), jnp.float32), jnp.asarray(advantage.ravel(), jnp.float32)
    exported = np.asarray(namespace["drift"](ratio, advantage, 0.2))  # type: ignore[operator]
    kernel = np.asarray(lpo_network.network_drift(jnp.asarray(vector), ratio, advantage, 0.2))
    np.testing.assert_allclose(exported, kernel, rtol=1e-6, atol=1e-7)
    assert exported.max() > 0.0


def test_a_code_candidates_best_py_is_unchanged(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run, _ = create_run(session, RunSpec())
        warm = session.scalar(select(Candidate).where(Candidate.run_id == run.id, Candidate.is_warm_start))
        run.best_candidate_id = warm.id
        text, _ = best_download(session, run, "inconclusive") or ("", "")
    assert text.endswith(warm.code) and "PARAMETERS" not in text

