"""Islands: sub-populations of one run, each with its own history and best, that migrate now and then.

Proposal i (1, 2, ...) belongs to island (i - 1) mod N, so the assignment needs no state and a resumed
or extended run continues it exactly. An island's proposer sees the warm start, its own candidates and,
after each migration, the best candidate each other island had by then (FunSearch/OpenEvolve style):
migrations happen every `migration_interval` proposals per island, i.e. at every multiple of
N * migration_interval proposals.
"""

from __future__ import annotations

from service.proposers.base import HistoryEntry


def island_of(index: int, islands: int) -> int:
    """The island of proposal `index` (1-based); every proposal is on island 0 when there is one island."""
    return (index - 1) % islands


def island_history(history: list[HistoryEntry], index: int, islands: int,
                   migration_interval: int) -> list[HistoryEntry]:
    """What the proposer of proposal `index` sees of the run's earlier proposals: its island's own candidates
    and the other islands' bests at the last migration, in index order."""
    if islands == 1:
        return history
    home = island_of(index, islands)
    last_migration = (index - 1) // (islands * migration_interval) * (islands * migration_interval)
    own = [e for e in history if island_of(e.index, islands) == home]
    migrants = []
    for island in range(islands):
        if island == home:
            continue
        scored = [e for e in history if island_of(e.index, islands) == island and e.index <= last_migration
                  and e.score is not None]
        if scored:
            migrants.append(max(scored, key=lambda e: (e.score, -e.index)))
    return sorted(own + migrants, key=lambda e: e.index)
