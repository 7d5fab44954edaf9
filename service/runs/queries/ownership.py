"""Ownership: a key sees only the runs it owns (Run.owner_key_id); anything else reads as absent (None)."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Candidate, Run, WebhookDelivery, WebhookEndpoint


def owned_run(session: Session, key: ApiKey, run_id: str) -> Run | None:
    """The run if `key` owns it, else None (a run of another key is as absent as a missing one)."""
    run = session.get(Run, run_id)
    return run if run is not None and run.owner_key_id == key.id else None


# The run's id if the key owns it (`run_id`, `owner_key_id` bound per call): a page's ownership check, as a
# subquery of the page's own statement, or alone to tell an empty page of the key's run from no run of the key's.
OWNED_RUN_ID = select(Run.id).where(Run.id == bindparam("run_id"), Run.owner_key_id == bindparam("owner_key_id"))


def owns_run(session: Session, owner_key_id: str, run_id: str) -> bool:
    """Whether the key `owner_key_id` owns the run `run_id`."""
    return session.connection().scalar(OWNED_RUN_ID, {"run_id": run_id, "owner_key_id": owner_key_id}) is not None


OWNED_CANDIDATE = select(Candidate).join(Run, Run.id == Candidate.run_id).where(
    Candidate.id == bindparam("candidate_id"), Run.owner_key_id == bindparam("owner_key_id"))  # built once


def owned_candidate(session: Session, key: ApiKey, candidate_id: str) -> Candidate | None:
    """The candidate if `key` owns its run, else None."""
    return session.scalar(OWNED_CANDIDATE, {"candidate_id": candidate_id, "owner_key_id": key.id})


def owns_delivery(session: Session, key: ApiKey, delivery_id: str) -> bool:
    """Whether `key` owns the run whose webhook made this delivery."""
    owner = session.scalar(select(WebhookEndpoint.owner_key_id)
                           .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
                           .where(WebhookDelivery.id == delivery_id))
    return owner is not None and owner == key.id
