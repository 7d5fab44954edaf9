"""The registry of targets: the parts of the RL pipeline a candidate can replace."""

from __future__ import annotations

from workers.targets import advantage, lpo, open, optimizer
from workers.targets.base import CandidateError, Target, TargetInput, load_function

TARGETS: dict[str, Target] = {t.name: t for t in (lpo.TARGET, optimizer.TARGET, advantage.TARGET, open.TARGET)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}") from None


__all__ = ["TARGETS", "CandidateError", "Target", "TargetInput", "get_target", "load_function"]
