"""Dependencies of the API routes: the runtime, a database session and the caller's API key; `read` (a read
route's database work, on the event loop) and `found` (a read model's None as a 404 problem)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.db.models import ApiKey
from service.keys import KeyCache
from service.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="an API key from `discovery keys create NAME`")


async def get_runtime_dep(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_session(runtime: Annotated[Runtime, Depends(get_runtime_dep)]) -> AsyncIterator[Session]:
    """The route's session, committed (or rolled back) and closed on the event loop as soon as the route
    function returns (`scope="function"`: before its response is serialized).

    So a request holds a connection only while its route runs in a worker thread. Were it to keep it while
    waiting for a thread (to serialize the response, or to close the session in), every thread could end up
    waiting for a connection held by requests waiting for a thread: the process would hang.
    """
    session = runtime.factory()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


async def require_key(request: Request, runtime: Annotated[Runtime, Depends(get_runtime_dep)],
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiKey:
    """The caller's key: from the process's cache of recently verified keys (`DISCOVERY_API_KEY_CACHE_SECONDS`),
    else looked up in a session of its own, closed before the route runs (so no connection is held while the
    route waits for a thread)."""
    if credentials is None:
        raise HTTPException(401, "send an API key as 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    keys: KeyCache = request.app.state.keys
    key = keys.cached(credentials.credentials)
    if key is None:
        key = await run_in_threadpool(keys.find, runtime.factory, credentials.credentials)
    if key is None:
        raise HTTPException(401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
    return key


T = TypeVar("T")


async def read(runtime: Runtime, query: Callable[..., T], *args: Any) -> T:
    """`query(session, *args)` on an async read session (`Runtime.read_factory`), on the event loop.

    `query` is the plain synchronous read model the web UI uses too; SQLAlchemy's `run_sync` runs it in
    a greenlet whose database waits yield to the event loop, so a read takes no worker thread (and FastAPI
    checks an async route's response in place). The session reads outside a transaction and its pool does
    not ping connections: a read is idempotent, so one that finds its connection dead (the database
    restarted) is tried once more, on a fresh connection.
    """
    async def once() -> T:
        async with runtime.read_factory() as session:
            return await session.run_sync(query, *args)

    try:
        return await once()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return await once()


def found(value: T | None, what: str, ident: str) -> T:
    """`value`, or a 404 problem naming what was asked for (another key's run is as absent as a missing one)."""
    if value is None:
        raise HTTPException(404, f"no {what} {ident!r}")
    return value


RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
KeyDep = Annotated[ApiKey, Depends(require_key)]
