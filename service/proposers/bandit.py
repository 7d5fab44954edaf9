"""Which model of an ensemble makes the next proposal: a bandit on improvement.

Each evaluated proposal is one pull of its model's arm, rewarded 1 when it beat its parent (the
candidate its code was derived from; the warm start when it had none) and 0 otherwise (a lower score,
a failure, a duplicate). Thompson sampling draws from each arm's Beta posterior; UCB1 adds an
exploration bonus to each arm's mean. Both try every model before trusting any, and both are
deterministic for a given random generator, so a resumed run picks as the first attempt did.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

BanditKind = Literal["thompson", "ucb"]


def choose_model(models: Sequence[str], pulls: Sequence[tuple[str, bool]], kind: BanditKind,
                 rng: random.Random) -> str:
    """The model for the next proposal, given the earlier proposals' (model, improved) pairs."""
    if len(models) == 1:
        return models[0]
    tries = {m: 0 for m in models}
    wins = {m: 0 for m in models}
    for model, improved in pulls:
        if model in tries:
            tries[model] += 1
            wins[model] += int(improved)
    untried = [m for m in models if tries[m] == 0]
    if untried:
        return untried[0]
    if kind == "thompson":
        draws = {m: rng.betavariate(1 + wins[m], 1 + tries[m] - wins[m]) for m in models}
        return max(models, key=lambda m: draws[m])
    total = sum(tries.values())
    return max(models, key=lambda m: wins[m] / tries[m] + math.sqrt(2 * math.log(total) / tries[m]))
