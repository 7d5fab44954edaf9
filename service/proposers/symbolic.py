"""Symbolic distillation without PySR: our AST evolution (`evolution/`) with a distillation fitness.

PySR needs Julia, which cannot be installed here, and `pyoperon` pulls scikit-learn, pandas and SciPy; so a formula
student is searched by the evolution engine's own mutations (constants, operators, smooth functions, wraps,
deletions, duplications), starting from the warm start, with a fitness that is the MSE of a child's gradient map
against the teacher's on a small grid. `fitness(code)` is the caller's: it computes the child's map in the sandbox
(the tracer's `grid` mode, with the target's rules checked first, so a child that breaks them has no fitness) and
returns the MSE, or None. Each generation takes a parent by tournament (lower MSE wins) and keeps the child when it
computes something (it joins the population); the best child is the student's code. Pure Python: no JAX, no numpy.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pydantic import BaseModel

from service.proposers.base import EvolutionSettings, HistoryEntry, ProposerConfig, ast_hash
from service.proposers.evolution import EvolutionProposer
from workers.sandbox.static_check import check_source
from workers.targets import get_target

Fitness = Callable[[str], float | None]  # code -> MSE of its map against the teacher's (None: no map)


class SymbolicResult(BaseModel):
    """The best expression found, its MSE, the start's (the warm start's), and what the search tried."""

    code: str
    mse: float
    start_mse: float
    mutations: list[str]
    tried: int  # children made
    scored: int  # children whose map was computed (the others failed the static check, the rules or the grid)


def search(target_name: str, start_code: str, fitness: Fitness, children: int, seed: int,
           tournament_size: int = 3) -> SymbolicResult | None:
    """Evolve `children` children from `start_code`; None when the start itself has no fitness."""
    target = get_target(target_name)
    start_mse = fitness(start_code)
    if start_mse is None:
        return None
    engine = EvolutionProposer(ProposerConfig(evolution=EvolutionSettings(max_mutations=2)))
    rng = random.Random(f"symbolic:{seed}")
    start = HistoryEntry(candidate_id="start", index=0, name="the warm start", code=start_code)
    population: list[tuple[float, HistoryEntry, list[str]]] = [(start_mse, start, [])]
    seen = {ast_hash(start_code)}
    tried = scored = 0
    for k in range(children):
        mse, parent, history = min((rng.choice(population) for _ in range(tournament_size)), key=lambda p: p[0])
        child = engine.mutate(rng, target, parent)
        tried += 1
        if child is None:
            continue
        code, changes, _ = child
        digest = ast_hash(code)
        if digest in seen or check_source(code, target):
            continue
        seen.add(digest)
        value = fitness(code)
        if value is None:
            continue
        scored += 1
        entry = HistoryEntry(candidate_id=f"child-{k}", index=k + 1, name=f"child {k + 1}", code=code)
        population.append((value, entry, [*history, *changes]))
    best_mse, best, mutations = min(population, key=lambda p: p[0])
    return SymbolicResult(code=best.code, mse=best_mse, start_mse=start_mse, mutations=mutations, tried=tried,
                          scored=scored)
