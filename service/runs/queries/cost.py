"""Cost on one axis: the environment steps and trainer seconds a candidate and a run consumed, by phase.

Summed at read time from what each evaluation row recorded (`Evaluation.env_steps`, `trainer_seconds`: written
where the evaluation is stored, `service/runs/jobs/evaluate.py`) and, for an es run's search, from its
generations (`es_generations`): nothing is stored twice. Rows recorded before migration 0010 count as 0.
"""

from __future__ import annotations

from sqlalchemy import ScalarSelect, bindparam, func, literal, select, union_all
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


_RUN = bindparam("run_id")
_EVALUATIONS = select(Evaluation.phase.label("phase"), Evaluation.env_steps.label("steps"),
                      Evaluation.trainer_seconds.label("seconds")).join(Candidate).where(Candidate.run_id == _RUN)
_GENERATIONS = select(literal(EvalPhase.TRAIN.value).label("phase"), ESGeneration.env_steps.label("steps"),
                      ESGeneration.trainer_seconds.label("seconds")).where(ESGeneration.run_id == _RUN)
_ROWS = union_all(_EVALUATIONS, _GENERATIONS).subquery()
# Built once, bound per call (as run_out's statements): a run's steps and seconds per phase.
RUN_COST = select(_ROWS.c.phase, func.sum(_ROWS.c.steps), func.sum(_ROWS.c.seconds)).group_by(_ROWS.c.phase)


def run_cost(session: Session, run_id: str) -> RunCost:
    """The run's cost by phase: its candidates' evaluations (references and the anchor included) and, in the
    search, its ES generations."""
    sums = {phase: PhaseCost(env_steps=int(steps or 0), trainer_seconds=float(seconds or 0.0))
            for phase, steps, seconds in session.execute(RUN_COST, {"run_id": run_id})}
    none = PhaseCost(env_steps=0, trainer_seconds=0.0)
    search, verification, meta_test = (sums.get(phase, none) for phase in (EvalPhase.TRAIN, EvalPhase.REEVAL,
                                                                            EvalPhase.TEST))
    parts = (search, verification, meta_test)
    return RunCost(search=search, verification=verification, meta_test=meta_test,
                   total=PhaseCost(env_steps=sum(p.env_steps for p in parts),
                                   trainer_seconds=sum(p.trainer_seconds for p in parts)))
