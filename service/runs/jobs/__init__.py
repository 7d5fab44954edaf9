"""The jobs a run is made of, and how a worker runs one: claim, heartbeat, do the work, advance.

Every handler is idempotent and keyed by database rows: results already recorded are not produced
again (an evaluation row per candidate, environment and phase; a candidate per proposal index; an
artifact per candidate), and the job is marked done in the same transaction that records its last
result. A worker that claims an evaluation also claims the compatible evaluations waiting beside it
(same run, kind and environment, up to `evaluate_batch_size`) and trains them as one batch.

`claim.py` (leases, heartbeat, failures), `propose.py`, `evaluate.py`, `es.py` and `distill.py` (the work of each
kind).
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from service.proposers import ProposerUnavailable
from service.runs.jobs.claim import Heartbeat, claim_batch, fail_job, fail_run, worker_id
from service.runs.jobs.distill import run_distillation
from service.runs.jobs.es import GenerationFailed, is_es_run, run_generation
from service.runs.jobs.evaluate import evaluate_jobs
from service.runs.jobs.propose import propose
from service.runs.orchestrator import Publish, advance
from service.settings import Settings
from workers.anchor import AnchorError
from workers.sandbox.host import IsolationUnavailable
from workers.vocabulary import JobKind

log = logging.getLogger(__name__)


def run_job(factory: sessionmaker[Session], settings: Settings, job_id: str, publish: Publish) -> None:
    """Claim and run one job (with its batch companions), then advance its run; a job another worker holds, or
    that is done, is left alone."""
    owner = worker_id()
    claimed = claim_batch(factory, job_id, owner, settings.evaluate_batch_size)
    if claimed is None:
        return
    run_id, kind, job_ids = claimed
    with Heartbeat(factory, job_ids, owner):
        try:
            if kind == JobKind.PROPOSE:
                (run_generation if is_es_run(factory, run_id) else propose)(factory, settings, job_id)
            elif kind == JobKind.DISTILL:
                run_distillation(factory, settings, job_id)
            else:
                evaluate_jobs(factory, settings, job_ids)
        except ProposerUnavailable as exc:
            fail_run(factory, run_id, job_ids, f"the proposer is unavailable: {exc.reason}", exc.llm_calls)
        except (AnchorError, IsolationUnavailable, GenerationFailed) as exc:
            fail_run(factory, run_id, job_ids, str(exc), [])
        except Exception as exc:
            log.exception("jobs %s (%s) failed", job_ids, kind)
            for failed in job_ids:
                fail_job(factory, failed, f"the {kind} job crashed: {type(exc).__name__}: {exc}")
    advance(factory, run_id, publish)
