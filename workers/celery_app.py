"""The Celery app: broker, queues and the reliability settings that keep a run's jobs from being lost.

Queues: `propose` (network-bound), `evaluate` (CPU/GPU-bound, one task per worker process at a time;
route it to GPU hosts by starting those workers with `-Q evaluate`), `webhooks`. Tasks carry only job
ids; the database decides what a job is and whether it is already done.
"""

from __future__ import annotations

from celery import Celery

from workers.vocabulary import TaskKind

QUEUE_OF_KIND = {TaskKind.PROPOSE: "propose", TaskKind.EVALUATE: "evaluate", TaskKind.REEVALUATE: "evaluate",
                 TaskKind.METATEST: "evaluate", TaskKind.DISTILL: "evaluate", TaskKind.WEBHOOK: "webhooks"}
RUN_JOB_TASK = "discovery.run_job"
DELIVER_WEBHOOK_TASK = "discovery.deliver_webhook"
HARD_TIME_LIMIT_SECONDS = 3600


def make_celery(broker_url: str) -> Celery:
    app = Celery("discovery", broker=broker_url)
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged after it ran, so a killed worker's task comes back
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=HARD_TIME_LIMIT_SECONDS,
        task_soft_time_limit=HARD_TIME_LIMIT_SECONDS - 60,
        worker_max_tasks_per_child=50,
        task_default_queue="evaluate",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the longest hard time limit, or long tasks would be delivered twice.
            "visibility_timeout": HARD_TIME_LIMIT_SECONDS + 600,
            # Restore a dead worker's unacked tasks quickly (kombu's defaults take ~100 s).
            "unacked_restore_interval": 5,
        },
        broker_pool_limit=4,
        task_ignore_result=True,
    )
    return app
