# One image for the CLI, the Celery workers and the one-shot migration job.
# Build the GPU variant with: docker build --build-arg JAX_EXTRA=cuda12 .
FROM python:3.11-slim
ARG JAX_EXTRA=cpu
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap util-linux make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY workers workers
COPY prompts prompts
COPY migrations migrations
RUN pip install --no-cache-dir -e . && if [ "$JAX_EXTRA" != "cpu" ]; then pip install --no-cache-dir "jax[$JAX_EXTRA]==0.10.2"; fi
ENV DISCOVERY_CACHE_DIR=/cache
CMD ["discovery", "--help"]
