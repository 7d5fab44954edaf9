"""The search policy: where proposal `index` of a run goes and which model makes it.

Islands (`islands.py`) decide what of the run's history the proposal sees; with an ensemble, a bandit
(`bandit.py`) picks the model, rewarded when a model's earlier proposals beat their parents
(`improvements`). Everything here is a pure function of the run's records and its seed, so a resumed
run places a proposal as the first attempt did.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from pydantic import BaseModel

from service.proposers.bandit import BanditKind, choose_model
from service.proposers.base import HistoryEntry
from service.proposers.islands import island_history, island_of


class ProposalRecord(NamedTuple):
    """One candidate of the run, as the bandit's reward reads it."""

    candidate_id: str
    is_warm_start: bool
    model: str | None  # the model that made it (None: not made by a model)
    parent_ids: list[str]
    finished: bool  # evaluated, or failed
    ok: bool  # its outcome is ok
    score: float | None  # its search score


class Placement(BaseModel):
    """Where proposal `index` goes: its island, what it sees of the history, and its model (None: no model)."""

    island: int
    history: list[HistoryEntry]
    model: str | None


def improvements(records: list[ProposalRecord]) -> list[tuple[str, bool]]:
    """Each finished proposal's model and whether it beat its parent (the warm start when it has none, or when its
    parent has no score): the ensemble bandit's pulls and rewards, in the records' order."""
    scores = {r.candidate_id: r.score for r in records}
    warm = next((r.score for r in records if r.is_warm_start), None)
    pulls = []
    for r in records:
        if r.model is None or not r.finished:
            continue
        parent = scores.get(r.parent_ids[0]) if r.parent_ids else None
        parent = warm if parent is None else parent
        pulls.append((r.model, r.ok and r.score is not None and (parent is None or r.score > parent)))
    return pulls


def place_proposal(index: int, seed: int, history: list[HistoryEntry], islands: int, migration_interval: int,
                   models: list[str], bandit: BanditKind, records: list[ProposalRecord]) -> Placement:
    """Proposal `index` of a run with random seed `seed`: its island and view of `history`, and with `models`
    (an LLM proposer's ensemble; empty for evolution) the model the bandit picks from the earlier `records`."""
    model = None
    if len(models) == 1:
        model = models[0]
    elif models:  # only an ensemble reads the earlier pulls
        model = choose_model(models, improvements(records), bandit, random.Random(f"{seed}:{index}"))
    return Placement(island=island_of(index, islands), model=model,
                     history=island_history(history, index, islands, migration_interval))
