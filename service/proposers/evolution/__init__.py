"""The evolution proposer: AST mutation and crossover, an offline baseline with no network.

It is in the spirit of symbolic evolution, but it is not the paper's symbolic method (which distils an
ES-trained network into a formula with PySR): it edits the candidate's source directly.

- `proposer.py` — `EvolutionProposer`: the population, tournament selection, the static check, the AST-hash
  and probe checks that resample a child before it costs a training run, and the count of every child
  tried by operator and fate;
- `mutations.py` — the mutation operators (constant, swap, function, wrap, delete, duplicate, crossover) and
  `make_child`, one child of a parent's code;
- `sites.py` — where those operators may act: the arithmetic subexpressions of the target function.
"""

from __future__ import annotations

from service.proposers.evolution.proposer import (
    BEHAVIOURAL_DUPLICATE,
    BROKE_A_RULE,
    FAILED_PROBE,
    TRIED,
    EvolutionProposer,
)

__all__ = ["BEHAVIOURAL_DUPLICATE", "BROKE_A_RULE", "FAILED_PROBE", "TRIED", "EvolutionProposer"]
