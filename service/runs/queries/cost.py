"""Cost on one axis: the environment steps and trainer seconds a candidate and a run consumed, by phase.

Summed at read time from what each evaluation row recorded (`Evaluation.env_steps`, `trainer_seconds`: written
where the evaluation is stored, `service/runs/jobs/evaluate.py`) and, for an es run's search, from its
generations (`es_generations`): nothing is stored twice. Rows recorded before migration 0010 count as 0.
"""

from __future__ import annotations

from sqlalchemy import Float, ScalarSelect, func, literal, select, union_all
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


def run_cost(session: Session, run_id: str) -> RunCost:
    """The run's cost by phase: its candidates' evaluations (references and the anchor included) and, in the
    search, its ES generations."""
    evaluations = select(Evaluation.phase.label("phase"), Evaluation.env_steps.label("steps"),
                         Evaluation.trainer_seconds.label("seconds")
                         ).join(Candidate).where(Candidate.run_id == run_id)
    generations = select(literal(EvalPhase.TRAIN.value).label("phase"), ESGeneration.env_steps.label("steps"),
                         ESGeneration.trainer_seconds.cast(Float).label("seconds")
                         ).where(ESGeneration.run_id == run_id)
    rows = union_all(evaluations, generations).subquery()
    sums = {phase: PhaseCost(env_steps=int(steps or 0), trainer_seconds=float(seconds or 0.0))
            for phase, steps, seconds in session.execute(
                select(rows.c.phase, func.sum(rows.c.steps), func.sum(rows.c.seconds)).group_by(rows.c.phase))}
    none = PhaseCost(env_steps=0, trainer_seconds=0.0)
    search, verification, meta_test = (sums.get(phase, none) for phase in (EvalPhase.TRAIN, EvalPhase.REEVAL,
                                                                            EvalPhase.TEST))
    parts = (search, verification, meta_test)
    return RunCost(search=search, verification=verification, meta_test=meta_test,
                   total=PhaseCost(env_steps=sum(p.env_steps for p in parts),
                                   trainer_seconds=sum(p.trainer_seconds for p in parts)))
