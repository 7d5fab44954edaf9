"""Named run protocols: the fields a preset sets, under whatever fields a request gives.

`paper` is the LLM-LPO protocol of Goldie et al. (2025): meta-train on Breakout-MinAtar at the full
budget with 8 seeds and the published learning rate, 30 proposals from PPO's clip, meta-test on the
four MinAtar games and CartPole with 16 fresh seeds. `quick` is the service's everyday default.
The proposer is not part of a preset: pick `--proposer llm --model NAME` for the paper's method. `es-lpo` is the
exception, as it names a method: the paper's ES-LPO (OpenES over the lpo network, population 64, 800 generations,
sigma and learning rate 0.03 decaying x0.99 to 0.01 and 1e-3) under the `paper` protocol. `paper-open` is the
`paper` protocol on the `open` target: the learned optimiser trained as the paper's OPEN (its own learning rate per
environment, noise on the actor only, the batch proportion per epoch, the actor's and critic's gradients clipped
apart; `workers/targets/open.py`). A request's proposer of another kind replaces a preset's.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "target": "lpo",
        "environments": {
            "train": ["Breakout-MinAtar"],
            "test": ["Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar", "CartPole-v1"],
        },
        "profile": "full",
        "seeds_per_eval": 8,
        "metatest_seeds": 16,
        "verification_seeds": 32,
        "metric": "final",
        "learning_rate": "fixed",
        "budget": {"candidates": 30},
    },
    "quick": {
        "profile": "quick",
        "seeds_per_eval": 2,
        "metatest_seeds": 4,
        "verification_seeds": 16,
        "metric": "final",
        "learning_rate": "fixed",
        "budget": {"candidates": 12},
    },
}
PRESETS["paper-open"] = {**PRESETS["paper"], "target": "open"}
PRESETS["es-lpo"] = {
    **PRESETS["paper"],
    "proposer": {"kind": "es", "every_k": 50, "seeds_per_member": 1,
                 "es": {"population": 64, "generations": 800, "sigma_init": 0.03, "sigma_decay": 0.99,
                        "sigma_limit": 0.01, "lr_init": 0.03, "lr_decay": 0.99, "lr_limit": 1e-3}},
}


def _same_kind(base: dict[str, Any], override: dict[str, Any]) -> bool:
    """Whether `override` refines `base` (merged field by field) rather than replacing it: an object of another
    `kind` (a proposer) replaces the one it overrides."""
    return None in (base.get("kind"), override.get("kind")) or base.get("kind") == override.get("kind")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        inner = merged.get(key)
        if isinstance(value, dict) and isinstance(inner, dict) and _same_kind(inner, value):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_preset(name: str, request: dict[str, Any]) -> dict[str, Any]:
    """The request's fields over the preset's (nested objects merged field by field)."""
    return _merge(PRESETS[name], request)
