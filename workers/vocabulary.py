"""The domain's words, shared by the service and the workers: the one home of every enumeration.

Statuses of runs, candidates, jobs and webhook deliveries; evaluation phases and the learning-rate
protocol; what a job or a published task is; the events a run emits; how an evaluation ended, how a
score was computed, which return it is made of, and what it says against the warm start. The database
constrains its columns to these values (`service/db/models/`); the models that cross process
boundaries (`workers/results.py`) use them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETING = "completing"  # budget spent, meta-testing the best candidate
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Stopped by Ctrl-C (or SIGTERM) of the `discovery run` that ran it: not final, but nothing moves it until
    # `discovery runs resume` (or POST /v1/runs/{id}/resume) does.
    INTERRUPTED = "interrupted"


RUN_FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
# Statuses in which nothing advances a run: the final ones, and `interrupted` until it is resumed.
RUN_STOPPED_STATUSES = RUN_FINAL_STATUSES | {RunStatus.INTERRUPTED}


class CandidateStatus(StrEnum):
    PENDING = "pending"
    EVALUATING = "evaluating"
    EVALUATED = "evaluated"
    FAILED = "failed"


# A candidate whose evaluation is over, trained or not: what counts against the budget and shows in a history.
CANDIDATE_FINISHED_STATUSES = frozenset({CandidateStatus.EVALUATED, CandidateStatus.FAILED})


class CandidateKind(StrEnum):
    """What a candidate is: code (proposed, traced, verified) or a network's parameters (ES; project code)."""

    CODE = "code"
    NETWORK = "network"


class EvalPhase(StrEnum):
    TRAIN = "train"  # meta-train environments, the run's fitness
    REEVAL = "reeval"  # the same environments on fresh seeds, in racing rounds: the verdict
    TEST = "test"  # held-out meta-test environments


class LearningRateProtocol(StrEnum):
    FIXED = "fixed"  # the environment's published learning rate (the paper's protocol)
    GRID = "grid"  # the best of a grid, chosen on the search seeds and scored on fresh ones


class JobKind(StrEnum):
    PROPOSE = "propose"
    EVALUATE = "evaluate"
    REEVALUATE = "reevaluate"
    METATEST = "metatest"
    DISTILL = "distill"  # fit a student to a teacher (`service/runs/jobs/distill.py`), then its `evaluate` job


class TaskKind(StrEnum):
    """What a published task carries: the id of a job of one of the `JobKind`s, or of a webhook delivery."""

    PROPOSE = "propose"
    EVALUATE = "evaluate"
    REEVALUATE = "reevaluate"
    METATEST = "metatest"
    DISTILL = "distill"
    WEBHOOK = "webhook"


class Task(NamedTuple):
    """What an executor carries to a worker: an id and what it is the id of."""

    id: str
    kind: TaskKind


class JobStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


class EventType(StrEnum):
    RUN_STARTED = "run.started"
    CANDIDATE_PROPOSED = "candidate.proposed"
    CANDIDATE_EVALUATED = "candidate.evaluated"
    CANDIDATE_NEW_BEST = "candidate.new_best"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_INTERRUPTED = "run.interrupted"  # resumed: `run.started` again, with `"resumed": true`


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


class Outcome(StrEnum):
    ok = "ok"
    invalid = "invalid"  # rejected by the static check or the probe on random inputs
    error = "error"  # an exception while tracing or running
    nan = "nan"  # NaN or Inf in the returns or parameters
    timeout = "timeout"  # wall-clock limit reached
    memory = "memory"  # memory limit reached
    killed = "killed"  # the child died from a signal or without a result
    refused = "refused"  # the trainer refused the artifact (forbidden operations, wrong signature)


class ScoreBasis(StrEnum):
    """How a normalised score was computed."""

    normalised = "normalised"  # (R - R_random) / (R_warm - R_random)
    return_ratio = "return_ratio"  # flagged: the warm start was within seed noise of random (see scoring.py)


class Verdict(StrEnum):
    """A candidate against the warm start, decided on seeds that did not select it."""

    better = "better"  # the whole interval is above the warm start
    worse = "worse"  # the whole interval is below it
    inconclusive = "inconclusive"  # the interval contains it: not distinguishable at this seed budget


class Metric(StrEnum):
    """Which per-seed return a score is made of (every evaluation stores both)."""

    final = "final"  # the mean return of the episodes that ended in the last tenth of training
    auc = "auc"  # the mean return of every episode of training: the area under the learning curve
