"""Cost on one axis: the environment steps and trainer seconds a candidate and a run consumed, by phase.

Summed at read time from what each evaluation row recorded (`Evaluation.env_steps`, `trainer_seconds`: written
where the evaluation is stored, `service/runs/jobs/evaluate.py`) and, for an es run's search, from its
generations (`es_generations`): nothing is stored twice. Rows recorded before migration 0010 count as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, ScalarSelect, bindparam, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Label

from service.db.models import Candidate, ESGeneration, Evaluation
from service.runs.views import PhaseCost, RunCost
from workers.vocabulary import EvalPhase


def _candidate_sum(column: object, name: str) -> Label[object]:
    """A correlated sum over the evaluations of the candidate of the enclosing query, 0 when it has none."""
    total: ScalarSelect[object] = select(func.coalesce(func.sum(column), 0)).where(
        Evaluation.candidate_id == Candidate.id).correlate(Candidate).scalar_subquery()
    return total.label(name)


# Beside a candidate's columns in a list (`queries.candidates.SUMMARY_COLUMNS`): its cost over every phase.
CANDIDATE_COST = (_candidate_sum(Evaluation.env_steps, "env_steps"),
                  _candidate_sum(Evaluation.trainer_seconds, "trainer_seconds"))


PHASES = (EvalPhase.TRAIN, EvalPhase.REEVAL, EvalPhase.TEST)


def cost_columns(run_id: BindParameter[str]) -> list[ScalarSelect[object]]:
    """The run's cost as scalar subqueries, for a statement that reads other figures beside it (`run_out`'s): steps
    and seconds per phase of its evaluations, then its ES generations' steps and seconds (`cost_of` reads them)."""
    columns: list[ScalarSelect[object]] = []
    for phase in PHASES:
        rows = select().select_from(Evaluation).join(Candidate).where(Candidate.run_id == run_id,
                                                                       Evaluation.phase == phase)
        columns += [rows.with_only_columns(func.sum(Evaluation.env_steps)).scalar_subquery(),
                    rows.with_only_columns(func.sum(Evaluation.trainer_seconds)).scalar_subquery()]
    generations = select().select_from(ESGeneration).where(ESGeneration.run_id == run_id)
    return columns + [generations.with_only_columns(func.sum(ESGeneration.env_steps)).scalar_subquery(),
                      generations.with_only_columns(func.sum(ESGeneration.trainer_seconds)).scalar_subquery()]


COST_VALUES = 2 * len(PHASES) + 2  # what `cost_columns` reads


def cost_of(values: Sequence[Any]) -> RunCost:
    """RunCost from the values of `cost_columns` (None: nothing recorded, 0); the generations count in the search."""
    numbers = [value or 0 for value in values]
    parts = [PhaseCost(env_steps=int(numbers[2 * i]), trainer_seconds=float(numbers[2 * i + 1]))
             for i in range(len(PHASES))]
    parts[0] = PhaseCost(env_steps=parts[0].env_steps + int(numbers[-2]),
                         trainer_seconds=parts[0].trainer_seconds + float(numbers[-1]))
    search, verification, meta_test = parts
    return RunCost(search=search, verification=verification, meta_test=meta_test,
                   total=PhaseCost(env_steps=sum(p.env_steps for p in parts),
                                   trainer_seconds=sum(p.trainer_seconds for p in parts)))


_RUN = bindparam("run_id")
RUN_COST = select(*cost_columns(_RUN))  # built once, bound per call


def run_cost(session: Session, run_id: str) -> RunCost:
    """The run's cost by phase: its candidates' evaluations (references and the anchor included) and, in the
    search, its ES generations."""
    return cost_of(session.execute(RUN_COST, {"run_id": run_id}).one())
