"""Celery tasks: thin wrappers that open the service's runtime and run one job by its id."""

from __future__ import annotations

from service.runtime import get_runtime
from workers.celery_app import RUN_JOB_TASK, make_celery

runtime = get_runtime()
app = make_celery(runtime.settings.broker_url or "redis://127.0.0.1:6379/0")


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    runtime.run_job(job_id)
