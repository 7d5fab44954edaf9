"""PPO's plug-in slots, one per slot that a target of the registry fills, and the warm starts that fill them.

`Plugins` is built from `workers.targets.TARGETS` (each card's `plugin_field`), so a new target brings its
slot with it; `workers.rl.ppo` has the one line where a slot is called. The warm starts are the project's
own source (PPO's clip, Adam, GAE), loaded once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

from workers.targets import TARGETS, load_function

SLOTS: tuple[str, ...] = tuple(dict.fromkeys(target.plugin_field for target in TARGETS.values()))

# A NamedTuple with one callable field per slot, in the registry's order: `plugins.drift`, `plugins.update`, ...
Plugins = NamedTuple("Plugins", [(slot, Callable[..., Any]) for slot in SLOTS])  # type: ignore[misc]


@cache
def warm_start_plugins() -> Plugins:
    """Every slot filled with the warm start of the first target that names it."""
    functions: dict[str, Callable[..., Any]] = {}
    for target in TARGETS.values():
        if target.plugin_field not in functions:
            functions[target.plugin_field] = load_function(target.warm_start, target)
    return Plugins(**functions)
