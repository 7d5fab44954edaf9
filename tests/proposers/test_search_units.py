"""The search's pure parts: the ensemble bandit and the islands' views of a run's history."""

from __future__ import annotations

import random

import pytest

from service.proposers.bandit import choose_model
from service.proposers.base import HistoryEntry
from service.proposers.islands import island_history, island_of
from workers.vocabulary import Outcome


@pytest.mark.parametrize("kind", ["thompson", "ucb"])
def test_the_bandit_tries_every_model_then_shifts_to_the_one_that_improves(kind: str) -> None:
    models = ["weak", "strong"]
    rng, world = random.Random(7), random.Random(11)
    pulls: list[tuple[str, bool]] = []
    chosen = []
    for _ in range(60):
        model = choose_model(models, pulls, kind, rng)  # type: ignore[arg-type]
        chosen.append(model)
        pulls.append((model, world.random() < (0.6 if model == "strong" else 0.1)))
    assert set(chosen[:2]) == {"weak", "strong"}  # each tried once before any is trusted
    assert chosen[30:].count("strong") >= 22, chosen  # most of the later pulls go to the better model
    assert "weak" in chosen[2:]  # and it keeps exploring


def test_the_bandit_is_deterministic_for_a_seed_and_ignores_models_it_does_not_offer() -> None:
    pulls = [("a", True), ("b", False), ("gone", True), ("a", False), ("b", True)]
    picks = [choose_model(["a", "b"], pulls, "thompson", random.Random(f"3:{i}")) for i in range(20)]
    assert picks == [choose_model(["a", "b"], pulls, "thompson", random.Random(f"3:{i}")) for i in range(20)]
    assert set(picks) <= {"a", "b"}
    assert choose_model(["only"], pulls, "ucb", random.Random(0)) == "only"


def entry(index: int, score: float | None) -> HistoryEntry:
    return HistoryEntry(candidate_id=f"c{index}", index=index, name=f"n{index}", code="x",
                        outcome=Outcome.ok if score is not None else None, score=score)


def test_islands_see_their_own_candidates_and_after_a_migration_the_other_islands_best() -> None:
    assert [island_of(i, 3) for i in range(1, 8)] == [0, 1, 2, 0, 1, 2, 0]
    history = [entry(i, float(i % 5)) for i in range(1, 9)]  # 8 proposals on 2 islands, migration every 2 each
    # Proposal 3 (island 0), before the first migration (at 4 proposals): its own island only.
    assert [e.index for e in island_history(history[:2], 3, 2, 2)] == [1]
    # Proposal 5 (island 0): after the migration, island 1's best among proposals 1..4 (#4 scores 4) joins.
    assert [e.index for e in island_history(history[:4], 5, 2, 2)] == [1, 3, 4]
    # Proposal 6 (island 1): island 0's best by then is #3.
    assert [e.index for e in island_history(history[:5], 6, 2, 2)] == [2, 3, 4]
    # An unscored candidate never migrates; one island is the whole history.
    unscored = [entry(1, 1.0), entry(2, None)]
    assert [e.index for e in island_history(unscored, 5, 2, 2)] == [1]
    assert island_history(history, 9, 1, 2) == history
