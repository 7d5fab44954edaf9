"""Celery tasks: thin wrappers that run one job by its id through the service's runtime.

The runtime (database engine, executor for follow-up jobs, sweeper) is built lazily in each worker
process, after the prefork pool has forked, so no connection is shared across processes.
"""

from __future__ import annotations

from service.runtime import get_runtime
from service.settings import get_settings
from service.webhooks import deliver
from workers.celery_app import DELIVER_WEBHOOK_TASK, RUN_JOB_TASK, make_celery

app = make_celery(get_settings().broker_url or "redis://127.0.0.1:6379/0")


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    get_runtime().run_job(job_id)


@app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook_task(delivery_id: str) -> None:
    runtime = get_runtime()
    deliver(runtime.factory, runtime.settings, delivery_id)
