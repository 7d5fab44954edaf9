"""`runs list`, `runs show`, `runs generations` and `runs resume` on this machine's database (the embedded SQLite
default or DISCOVERY_DATABASE_URL) when no DISCOVERY_API_URL is set: a local user reads and continues their runs
without a server. They see what the API would show the CLI's identity (DISCOVERY_API_KEY, else this
machine's local identity): the same read models (`service/runs/queries.py`), as the same JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from service.cli.common import EXIT_FAILED, console, exit_interrupted, fail
from service.settings import get_settings

T = TypeVar("T")


def api_configured() -> bool:
    """Whether DISCOVERY_API_URL is set (in the environment or `.env`): then `runs ...` talk to that server."""
    return "api_url" in get_settings().model_fields_set


@contextmanager
def _local_session() -> Iterator[tuple[Session, str]]:
    """A session on this machine's database, migrated to head, and the id of the CLI's identity there."""
    from service.db import make_engine, make_session_factory, session_scope, upgrade_database
    from service.keys import UnknownKey, cli_owner

    settings = get_settings()
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            try:
                owner = cli_owner(session, settings).id
            except UnknownKey as exc:
                fail(str(exc))
            yield session, owner
    finally:
        engine.dispose()


def _read(reader: Callable[[Session, str], T]) -> T:
    with _local_session() as (session, owner):
        return reader(session, owner)


def runs_page(status: str | None, limit: int) -> dict[str, Any]:
    """The first page of the identity's runs, as GET /v1/runs answers."""
    from service.runs.queries.runs import runs_page as page

    items, _ = _read(lambda session, owner: page(session, owner, status, None, limit))
    return {"items": [item.model_dump(mode="json") for item in items], "next_cursor": None}


def run(run_id: str) -> dict[str, Any]:
    """The run as GET /v1/runs/{id} answers, or one line saying it is not the identity's."""
    from service.db.models import Run
    from service.runs.queries.runs import run_out

    def read(session: Session, owner: str) -> dict[str, Any] | None:
        found = session.get(Run, run_id)
        return run_out(session, found).model_dump(mode="json") if found and found.owner_key_id == owner else None

    shown = _read(read)
    if shown is None:
        fail(f"no run {run_id!r} of yours in {get_settings().database_url.split('@')[-1]}")
    return shown


def generations(run_id: str) -> list[dict[str, Any]]:
    """The run's told generations as GET /v1/runs/{id}/generations lists them (every page), or one line saying the
    run is not the identity's."""
    from service.runs.queries.generations import generations_page

    page = _read(lambda session, owner: generations_page(session, owner, run_id, limit=10**6))
    if not page.run_owned:
        fail(f"no run {run_id!r} of yours in {get_settings().database_url.split('@')[-1]}")
    return [item.model_dump(mode="json") for item in page.items]


def resume(run_id: str, as_json: bool) -> None:
    """Continue an interrupted run here, with a progress bar and the report at the end, as `discovery run` does."""
    from service.cli.common import require_sandbox
    from service.runs.runner import RunInterrupted, RunRefused, resume_to_completion, run_result

    settings = get_settings()
    if not settings.broker_url:
        require_sandbox(as_json)
    try:
        status = resume_to_completion(settings, run_id, Console(stderr=True, markup=False) if as_json else console)
    except RunRefused as exc:
        fail(str(exc))
    except RunInterrupted as exc:
        exit_interrupted(exc.run_id)
    if as_json:
        print(run_result(settings, run_id).model_dump_json())
    if status != "completed":
        raise typer.Exit(EXIT_FAILED)
