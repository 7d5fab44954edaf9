"""Cost on one axis: what every evaluation records (environment steps, its share of the trainer's seconds) adds up,
per candidate and per run and phase, to what the read side shows; an es run's generations count in its search.

Fast: rows inserted directly (both backends), and the worker's split of one program's seconds on made-up arrays.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_session_factory, session_scope
from service.db.models import Candidate, ESGeneration, Evaluation, Run
from service.keys import create_key
from service.runs.queries.candidates import SUMMARY_COLUMNS, candidate_detail
from service.runs.queries.runs import run_out
from service.runs.views import CandidateSummary
from workers.evaluate import _results
from workers.results import DIAGNOSTICS
from workers.rl.envs import get_config
from workers.trainer.protocol import EncodedArray, TrainRequest, TrainResponse
from workers.vocabulary import Outcome

# (candidate index, env, phase, env steps, trainer seconds); None: a row recorded before migration 0010.
ROWS = [
    (0, "CartPole-v1", "train", 64 * 16_384, 30.0),  # the warm start's search row: the anchor
    (1, "CartPole-v1", "train", 3 * 16_384, 4.0),
    (1, "CartPole-v1", "reeval", 2 * 16_384, 2.5),
    (1, "CartPole-v1", "reeval", 6 * 16_384, 3.5),
    (1, "Acrobot-v1", "test", 4 * 16_384, 5.0),
    (0, "Acrobot-v1", "test", 4 * 16_384, 5.0),
    (2, "CartPole-v1", "train", 0, 0.0),  # a failed trace: never trained
    (3, "CartPole-v1", "train", None, None),
]
GENERATIONS = [(0, 16 * 2 * 16_384, 12.0), (1, 16 * 2 * 16_384, 11.0)]


def build(factory: sessionmaker[Session], proposer: str = "es") -> tuple[str, list[str]]:
    with session_scope(factory) as session:
        _, key = create_key(session, "cost")
        run = Run(owner_key_id=key.id, status="completed", target="lpo", train_envs=["CartPole-v1"],
                  test_envs=["Acrobot-v1"], profile="smoke", proposer={"kind": proposer}, budget={"candidates": 3},
                  concurrency=1, seed=0, seeds_per_eval=1, metatest_seeds=4, lr_protocol="fixed", config={})
        session.add(run)
        session.flush()
        candidates = [Candidate(run_id=run.id, index=i, is_warm_start=i == 0, name=f"c{i}", code="x", ast_hash=f"h{i}",
                                status="evaluated", kind="network" if i == 1 else "code") for i in range(4)]
        session.add_all(candidates)
        session.flush()
        for n, (index, env, phase, steps, seconds) in enumerate(ROWS):
            session.add(Evaluation(candidate_id=candidates[index].id, env=env, phase=phase, outcome="ok",
                                   round=n if phase == "reeval" else 0, env_steps=steps, trainer_seconds=seconds))
        for generation, steps, seconds in GENERATIONS:
            session.add(ESGeneration(run_id=run.id, generation=generation, state={}, fitness=[], seeds=[],
                                     env_steps=steps, trainer_seconds=seconds))
        run.best_candidate_id, run.best_score, run.best_verdict = candidates[1].id, 1.1, "inconclusive"
        return run.id, [c.id for c in candidates]


def phase_sum(phase: str) -> tuple[int, float]:
    rows = [r for r in ROWS if r[2] == phase]
    return sum(r[3] or 0 for r in rows), sum(r[4] or 0.0 for r in rows)


def test_a_runs_cost_is_its_rows_and_generations_by_phase(session_factory: sessionmaker[Session]) -> None:
    run_id, ids = build(session_factory)
    with session_scope(session_factory) as session:
        out = run_out(session, session.get(Run, run_id))
        summaries = {row.id: CandidateSummary.model_validate(row)
                     for row in session.execute(select(*SUMMARY_COLUMNS).where(Candidate.run_id == run_id))}
        details = {i: candidate_detail(session, session.get(Candidate, i)) for i in ids}
    steps, seconds = phase_sum("train")
    generation_steps = sum(g[1] for g in GENERATIONS)
    assert out.cost.search.env_steps == steps + generation_steps
    assert out.cost.search.trainer_seconds == pytest.approx(seconds + sum(g[2] for g in GENERATIONS))
    for part, phase in ((out.cost.verification, "reeval"), (out.cost.meta_test, "test")):
        assert (part.env_steps, part.trainer_seconds) == pytest.approx(phase_sum(phase))
    assert out.cost.total.env_steps == sum(r[3] or 0 for r in ROWS) + generation_steps
    assert out.cost.total.trainer_seconds == pytest.approx(sum(p.trainer_seconds for p in (
        out.cost.search, out.cost.verification, out.cost.meta_test)))
    for index, candidate_id in enumerate(ids):
        mine = [r for r in ROWS if r[0] == index]
        expected = (sum(r[3] or 0 for r in mine), sum(r[4] or 0.0 for r in mine))
        for shown in (summaries[candidate_id], details[candidate_id]):
            assert (shown.env_steps, shown.trainer_seconds) == pytest.approx(expected)
    assert out.best is not None and out.best.kind == "network" and not out.best.readable
    assert out.best.made_by == "distilled"  # a network no ES generation made: a student
    assert summaries[ids[1]].kind == "network" and summaries[ids[2]].kind == "code"


def test_a_run_with_no_rows_costs_nothing(sqlite_engine: Engine) -> None:
    factory = make_session_factory(sqlite_engine)
    with session_scope(factory) as session:
        _, key = create_key(session, "empty")
        run = Run(owner_key_id=key.id, status="queued", target="lpo", train_envs=["CartPole-v1"], test_envs=[],
                  profile="smoke", proposer={"kind": "evolution"}, budget={"candidates": 1}, concurrency=1, seed=0,
                  seeds_per_eval=1, metatest_seeds=2, lr_protocol="fixed", config={})
        session.add(run)
        session.flush()
        cost = run_out(session, run).cost
    assert cost.total.env_steps == 0 and cost.total.trainer_seconds == 0.0


def test_one_programs_seconds_are_split_between_the_candidates_it_trained() -> None:
    """Three candidates in one request: one refused, one trained to NaN, one trained well. The two trained ones
    each cost their lanes' steps and half the program's seconds; the refused one costs nothing."""
    seeds, rates = [0, 1], [1e-3]
    config = get_config("CartPole-v1", "smoke")
    updates = config.num_updates
    request = TrainRequest(target="lpo", env="CartPole-v1", profile="smoke", seeds=seeds, learning_rates=rates,
                           artifacts=[base64.b64encode(bytes([i])).decode() for i in range(3)])
    shape = (2, len(rates), len(seeds), updates)
    finite = np.ones(shape[:3], dtype=bool)
    finite[0] = False  # candidate 0 diverged
    response = TrainResponse(
        trained=[0, 2], refused={1: "breaks a rule"}, compile_seconds=3.0, train_seconds=9.0,
        return_sum=EncodedArray.of(np.full(shape, 20.0, dtype=np.float32)),
        episodes=EncodedArray.of(np.ones(shape, dtype=np.float32)), finite=EncodedArray.of(finite),
        diagnostics=EncodedArray.of(np.zeros((*shape, len(DIAGNOSTICS)), dtype=np.float32)))
    nan, refused, ok = _results(request, response, seconds=14.0)
    assert (nan.outcome, refused.outcome, ok.outcome) == (Outcome.nan, Outcome.refused, Outcome.ok)
    lanes_steps = len(seeds) * len(rates) * config.env_steps
    assert (nan.env_steps, nan.trainer_seconds) == (lanes_steps, 6.0)
    assert (ok.env_steps, ok.trainer_seconds) == (lanes_steps, 6.0)
    assert (refused.env_steps, refused.trainer_seconds) == (0, 0.0)
