"""Executors run jobs: `local` (a thread pool in this process) or `celery` (workers over Redis)."""
