"""An es run's told generations: each one's fitness with its uncertainty, the strategy's sigma and learning rate
after it, and what it cost, read from `es_generations` (written by `service/runs/jobs/es.py`).

The summary is computed at read time from the stored per-member fitness (nothing is stored twice). The interval of
the population's expected fitness is Student's t over the antithetic pairs' means: a pair's two members share
their noise, so the pairs, not the members, are the independent draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import ESGeneration
from service.runs.queries.ownership import OWNED_RUN_ID, owns_run
from service.runs.views import GenerationOut

# Student's t, two-sided 95% (the 0.975 quantile), for 1 to 30 degrees of freedom.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

GENERATION_COLUMNS = (ESGeneration.generation, ESGeneration.fitness, ESGeneration.seeds, ESGeneration.env_steps,
                      ESGeneration.trainer_seconds, ESGeneration.created_at,
                      ESGeneration.state["sigma"].as_float().label("sigma"),
                      ESGeneration.state["lr"].as_float().label("learning_rate"))


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile: the table to 30 degrees of freedom, then the Cornish-Fisher expansion."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = NormalDist().inv_cdf(0.975)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def pair_interval(fitness: Sequence[float | None]) -> tuple[float, float] | None:
    """95% interval of the expected fitness from the means of the antithetic pairs (2i, 2i + 1) whose members both
    have a finite fitness; None with fewer than two such pairs."""
    pairs = [(a + b) / 2 for a, b in zip(fitness[0::2], fitness[1::2], strict=False)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 2:
        return None
    mean = sum(pairs) / len(pairs)
    spread = math.sqrt(sum((p - mean) ** 2 for p in pairs) / (len(pairs) - 1))
    half = t_quantile_975(len(pairs) - 1) * spread / math.sqrt(len(pairs))
    return mean - half, mean + half


def fitness_summary(fitness: Sequence[float | None]) -> dict[str, Any]:
    """Members, diverged, mean (95% interval), spread, min and max of a generation's stored fitness."""
    finite = [f for f in fitness if f is not None and math.isfinite(f)]
    mean = sum(finite) / len(finite) if finite else None
    std = (math.sqrt(sum((f - mean) ** 2 for f in finite) / (len(finite) - 1))
           if mean is not None and len(finite) > 1 else None)
    return {"members": len(fitness), "diverged": len(fitness) - len(finite), "fitness_mean": mean,
            "fitness_ci": pair_interval(fitness), "fitness_std": std, "fitness_min": min(finite, default=None),
            "fitness_max": max(finite, default=None)}


def generation_out(row: Any) -> GenerationOut:
    """A result row of GENERATION_COLUMNS as the API shows it."""
    values = row._asdict()
    return GenerationOut.model_validate({**values, **fitness_summary(values["fitness"])})


@dataclass
class GenerationsPage:
    items: list[GenerationOut]
    next_position: int | None  # the last generation shown when more follow; None: the end
    run_owned: bool  # False only when the page is empty because the owner has no such run


def generations_page(session: Session, owner_key_id: str, run_id: str, limit: int,
                     after: int | None = None) -> GenerationsPage:
    """The run's told generations in order, after generation `after`, up to `limit`; the ownership check is in the
    same statement (a run of another key reads as absent). Another proposer's run has none."""
    query = select(*GENERATION_COLUMNS).where(ESGeneration.run_id == OWNED_RUN_ID.scalar_subquery())
    if after is not None:
        query = query.where(ESGeneration.generation > after)
    rows = session.execute(query.order_by(ESGeneration.generation).limit(limit + 1),
                           {"run_id": run_id, "owner_key_id": owner_key_id}).all()
    run_owned = bool(rows) or owns_run(session, owner_key_id, run_id)
    items = [generation_out(row) for row in rows[:limit]]
    return GenerationsPage(items, items[-1].generation if len(rows) > limit else None, run_owned)


def all_generations(session: Session, run_id: str) -> list[GenerationOut]:
    """Every told generation of a run the caller already owns (the run page's chart and table)."""
    rows = session.execute(select(*GENERATION_COLUMNS).where(ESGeneration.run_id == run_id)
                           .order_by(ESGeneration.generation)).all()
    return [generation_out(row) for row in rows]


def generations_told(session: Session, run_id: str) -> int:
    """How many generations of the run are told (its progress)."""
    return session.scalar(select(func.count()).select_from(ESGeneration).where(ESGeneration.run_id == run_id)) or 0
