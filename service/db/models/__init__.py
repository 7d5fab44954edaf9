"""SQLAlchemy models: the schema of the service's single source of truth.

One module per responsibility, every public name re-exported here (`from service.db.models import Run`), and
importing this package registers every table on `Base.metadata` (what Alembic's env.py compares against):
- `base` — the declarative base, naming convention, `new_id`, `utcnow`, `UTCDateTime`, `one_of`;
- `keys` — `ApiKey`;
- `runs` — `Run`, `LlmCall` (a run's language-model calls), `ESGeneration` (an es run's told generations);
- `candidates` — `Candidate` (and `is_proposal`), `Evaluation`, `Artifact`, `ParameterVector`;
- `jobs` — `Job` (claimed by `service.db.jobs`);
- `events` — `Event` (the outbox), `WebhookEndpoint`, `WebhookDelivery`, `WebhookAttempt`.

Conventions:
- Entities that the API exposes or the broker carries (runs, candidates, jobs, ...) have string
  primary keys made by `new_id()` (uuid4 hex); append-only logs (events, webhook attempts) have
  integer autoincrement keys.
- Every timestamp is timezone-aware UTC (`UTCDateTime`), on SQLite as on PostgreSQL.
- Statuses are plain strings guarded by CHECK constraints; the allowed values are the StrEnums of
  `workers/vocabulary.py`
  (a StrEnum member compares equal to its string, so `run.status == RunStatus.RUNNING` works).
- JSON columns use the portable `sqlalchemy.JSON`. In-place mutation of a loaded JSON value is not
  tracked: assign a new list or dict.
- Schema changes go through Alembic (migrations/versions); tests/db checks the two agree.
"""

from __future__ import annotations

from service.db.models.base import (
    ID_LENGTH,
    NAMING_CONVENTION,
    Base,
    BigIntId,
    UTCDateTime,
    new_id,
    one_of,
    utcnow,
)
from service.db.models.candidates import Artifact, Candidate, Evaluation, ParameterVector, is_proposal
from service.db.models.events import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.db.models.jobs import Job
from service.db.models.keys import ApiKey
from service.db.models.runs import ESGeneration, LlmCall, Run

__all__ = [
    "ID_LENGTH",
    "NAMING_CONVENTION",
    "ApiKey",
    "Artifact",
    "Base",
    "BigIntId",
    "Candidate",
    "ESGeneration",
    "Evaluation",
    "Event",
    "Job",
    "LlmCall",
    "ParameterVector",
    "Run",
    "UTCDateTime",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "is_proposal",
    "new_id",
    "one_of",
    "utcnow",
]
