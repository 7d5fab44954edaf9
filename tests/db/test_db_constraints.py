"""Constraints do what they promise, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from service.db import new_id, session_scope
from service.db.models import ApiKey, Candidate, Evaluation, Event, Job, Run
from workers.vocabulary import EventType, JobKind, Outcome, RunStatus


def add_run(session: Session, **fields: object) -> Run:
    run = Run(target="lpo", profile="smoke", seeds_per_eval=2, train_envs=["CartPole-v1"], **fields)
    session.add(run)
    session.flush()
    return run


def add_candidate(session: Session, run: Run, index: int, ast_hash: str) -> Candidate:
    candidate = Candidate(
        run_id=run.id, index=index, name=f"c{index}", code="def drift(): ...", ast_hash=ast_hash
    )
    session.add(candidate)
    session.flush()
    return candidate


def add_evaluation(session: Session, candidate: Candidate, env: str = "CartPole-v1") -> Evaluation:
    evaluation = Evaluation(
        candidate_id=candidate.id, env=env, phase="train", outcome=Outcome.ok, seeds=[0, 1]
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def test_defaults_and_round_trip(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run = add_run(session, proposer={"kind": "evolution"}, budget={"candidates": 4})
        candidate = add_candidate(session, run, 0, "h0")
        run_id, candidate_id = run.id, candidate.id
    with session_scope(session_factory) as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert len(run.id) == 32 and run.status == RunStatus.QUEUED == "queued"
        assert run.proposer == {"kind": "evolution"} and run.train_envs == ["CartPole-v1"]
        assert run.tokens_used == 0 and run.cost_usd == 0.0 and run.best_candidate_id is None
        assert run.created_at.tzinfo is UTC and run.updated_at.tzinfo is UTC
        candidate = session.get(Candidate, candidate_id)
        assert candidate.run_id == run_id and candidate.is_warm_start is False and candidate.parent_ids == []
        assert candidate.reference is None


def test_timestamps_are_stored_as_utc(session_factory: sessionmaker[Session]) -> None:
    paris = timezone(timedelta(hours=2))
    started = datetime(2026, 6, 1, 14, 0, tzinfo=paris)
    with session_scope(session_factory) as session:
        run_id = add_run(session, started_at=started).id
    with session_scope(session_factory) as session:
        stored = session.get(Run, run_id).started_at
    assert stored == started and stored.tzinfo is UTC and stored.hour == 12


def test_naive_timestamps_are_refused(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_scope(session_factory) as session:
        add_run(session, started_at=datetime(2026, 1, 1))


def test_second_evaluation_for_candidate_env_phase_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        candidate = add_candidate(session, add_run(session), 0, "h0")
        add_evaluation(session, candidate)
        add_evaluation(session, candidate, env="Acrobot-v1")  # another environment is fine
        candidate_id = candidate.id
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.add(Evaluation(candidate_id=candidate_id, env="CartPole-v1", phase="train", outcome="ok"))
    with session_scope(session_factory) as session:  # the same env in another phase is fine
        session.add(Evaluation(candidate_id=candidate_id, env="CartPole-v1", phase="reeval", outcome="ok"))


def test_duplicate_ast_hash_in_a_run_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run, other = add_run(session), add_run(session)
        add_candidate(session, run, 0, "same")
        add_candidate(session, other, 0, "same")  # the same code in another run is fine
        run_id = run.id
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.add(Candidate(run_id=run_id, index=1, name="dup", code="x", ast_hash="same"))


def test_duplicate_candidate_index_in_a_run_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run_id = add_candidate(session, add_run(session), 0, "h0").run_id
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.add(Candidate(run_id=run_id, index=0, name="dup", code="x", ast_hash="h1"))


def test_job_dedupe_key_is_unique(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run_id = add_run(session).id
        session.add(Job(run_id=run_id, kind=JobKind.PROPOSE, dedupe_key=f"propose:{run_id}:0"))
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.add(Job(run_id=run_id, kind=JobKind.PROPOSE, dedupe_key=f"propose:{run_id}:0"))


def test_idempotency_key_is_unique_per_owner(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        alice = ApiKey(name="alice", prefix="dk_a", key_hash="a" * 64)
        bob = ApiKey(name="bob", prefix="dk_b", key_hash="b" * 64)
        session.add_all([alice, bob])
        session.flush()
        add_run(session, owner_key_id=alice.id, idempotency_key="k1")
        add_run(session, owner_key_id=bob.id, idempotency_key="k1")  # another owner's key is fine
        alice_id = alice.id
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        add_run(session, owner_key_id=alice_id, idempotency_key="k1")


def test_status_values_are_checked(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        add_run(session, status="exploded")


def test_deleting_a_run_cascades_and_best_candidate_is_nulled(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run = add_run(session)
        candidate = add_candidate(session, run, 0, "h0")
        add_evaluation(session, candidate)
        run.best_candidate_id = candidate.id
        session.add(Event(run_id=run.id, type=EventType.RUN_STARTED, payload={}))
        run_id, candidate_id = run.id, candidate.id
    with session_scope(session_factory) as session:
        session.delete(session.get(Candidate, candidate_id))
    with session_scope(session_factory) as session:
        assert session.get(Run, run_id).best_candidate_id is None
        assert session.scalar(select(func.count()).select_from(Evaluation)) == 0
        session.delete(session.get(Run, run_id))
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_event_ids_increase(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run_id = add_run(session).id
        ids = []
        for _ in range(3):
            event = Event(run_id=run_id, type=EventType.CANDIDATE_PROPOSED, payload={"id": new_id()})
            session.add(event)
            session.flush()
            ids.append(event.id)
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids) and len(set(ids)) == 3
