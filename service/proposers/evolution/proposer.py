"""The evolution proposer: tournament selection, a mutated child, and the checks it passes before training.

A parent is picked from the population (the warm start and every candidate that finished `ok`) by a
tournament on score, and mutated (`mutations.py`). Every child passes the static check and is new to the
run (normalised AST hash); then, given a `probe`, the sandbox calls it on the target's fixed inputs: a
child that breaks a rule of the target (for lpo: a drift that is negative, or not zero with a zero
gradient at ratio 1) or computes a function already in the run (the same behaviour fingerprint, such
as a wrapper that changes nothing) is resampled instead of costing a training run. Every child tried is
counted by operator and fate (`Proposal.attempts`). The random generator is seeded from (run seed,
proposal index), so the same context gives the same child.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from service.proposers.base import (
    HistoryEntry,
    Probe,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
)
from service.proposers.evolution.mutations import make_child
from workers.sandbox.static_check import check_source
from workers.targets import Target, get_target
from workers.vocabulary import Outcome

# What became of a child before training, as counted in `Proposal.attempts` and the run's operator table.
TRIED, BROKE_A_RULE, FAILED_PROBE, BEHAVIOURAL_DUPLICATE = "tried", "broke a rule", "failed the probe", \
    "behavioural duplicate"


def _score(entry: HistoryEntry, warm: HistoryEntry) -> float:
    if entry.score is not None:
        return entry.score
    return 1.0 if entry is warm else float("-inf")


class EvolutionProposer:
    """Tournament selection and AST mutation; see the package and module docstrings."""

    def __init__(self, config: ProposerConfig, check: Callable[[str, Target], list] = check_source,
                 probe: Probe | None = None) -> None:
        self.config = config
        self.settings = config.evolution
        self.check = check
        self.probe = probe

    def population(self, context: ProposalContext) -> list[HistoryEntry]:
        """The warm start, then every candidate that finished ok with a score, in index order."""
        warm_id = context.warm_start.candidate_id
        members = [
            e
            for e in context.history
            if e.outcome == Outcome.ok and e.score is not None and e.candidate_id != warm_id
        ]
        return [context.warm_start, *sorted(members, key=lambda e: (e.index, e.candidate_id))]

    def _tournament(
        self, rng: random.Random, population: list[HistoryEntry], warm: HistoryEntry
    ) -> HistoryEntry:
        entrants = [rng.choice(population) for _ in range(self.settings.tournament_size)]
        return max(entrants, key=lambda e: (_score(e, warm), -e.index))

    def propose(self, context: ProposalContext) -> Proposal:
        target = get_target(context.target)
        rng = random.Random(f"{context.seed}:{context.index}")
        population = self.population(context)
        warm = context.warm_start
        duplicates = 0
        problems: list[str] = []
        attempts: dict[str, dict[str, int]] = {}
        probed: Proposal | None = None  # the last child the probe turned down (proposed if nothing better)
        probes = 0

        def count(operator: str, fate: str) -> None:
            attempts.setdefault(operator, {}).setdefault(fate, 0)
            attempts[operator][fate] += 1

        for _ in range(self.settings.max_attempts):
            parent = self._tournament(rng, population, warm)
            second: HistoryEntry | None = None
            if rng.random() < self.settings.crossover_probability:
                second = self._tournament(rng, population, warm)
            child = make_child(rng, target, self.settings, parent, second)
            if child is None:
                continue
            code, changes, operator = child
            count(operator, TRIED)
            issues = self.check(code, target)
            if issues:
                problems.append(str(issues[0].message))
                count(operator, "static check")
                continue
            digest = ast_hash(code)
            if digest in context.known_hashes or digest == ast_hash(parent.code):
                duplicates += 1
                count(operator, "same code")
                continue
            parent_ids = [parent.candidate_id] + (
                [second.candidate_id] if second and second is not parent else []
            )
            parents = parent.name + (f" and {second.name}" if second and second is not parent else "")
            proposal = Proposal(
                name=f"evo{context.index}_{operator}",
                thought=f"Mutation of {parents}: " + "; ".join(changes) + ".",
                code=code,
                parent_ids=parent_ids,
                ast_hash=digest,
                operator=operator,
            )
            if self.probe is None:
                return self._done(proposal, duplicates, attempts)
            proposal.trace = self.probe(code)
            probes += 1
            fingerprint = proposal.trace.fingerprint
            if proposal.trace.outcome == Outcome.ok and fingerprint not in context.known_fingerprints:
                return self._done(proposal, duplicates, attempts)
            if proposal.trace.outcome == Outcome.ok:
                duplicates += 1
                count(operator, BEHAVIOURAL_DUPLICATE)
            else:
                broke = "breaks a rule" in (proposal.trace.error or "")
                count(operator, BROKE_A_RULE if broke else FAILED_PROBE)
            probed = proposal
            if probes >= self.settings.max_probes:
                break
        if probed is not None:  # the service records it as invalid or as a duplicate: it is never trained
            return self._done(probed, duplicates, attempts)
        detail = f"; last static-check problem: {problems[-1]}" if problems else ""
        raise ProposerUnavailable(
            f"evolution found no new valid child in {self.settings.max_attempts} attempts "
            f"({duplicates} duplicates){detail}"
        )

    def mutate(self, rng: random.Random, target: Target, parent: HistoryEntry, second: HistoryEntry | None = None
               ) -> tuple[str, list[str], str] | None:
        """A mutated copy of `parent`'s code (crossed with `second`'s when given): its code, its changes and its
        operator, or None (what symbolic distillation, `symbolic.py`, evolves with)."""
        return make_child(rng, target, self.settings, parent, second)

    @staticmethod
    def _done(proposal: Proposal, duplicates: int, attempts: dict[str, dict[str, int]]) -> Proposal:
        proposal.duplicates_skipped, proposal.attempts = duplicates, attempts
        return proposal
