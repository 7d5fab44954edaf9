"""Admission: at most `api_threads` requests of one API process run their route at once; the rest wait.

A route runs in a worker thread with a database session, and FastAPI needs a thread again to check the
route's response. Left alone, a burst could leave every thread waiting for a connection held by requests
that are themselves waiting for a thread: the process hangs until the pool times out and answers 500.
Admitting no more requests than there are threads (and pooled connections) keeps each admitted request
able to finish. A request leaves as soon as its response starts, so a live event stream holds no place.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Admission:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.places = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.places.acquire()
        admitted = True

        def leave() -> None:
            nonlocal admitted
            if admitted:
                admitted = False
                self.places.release()

        async def send_and_leave(message: Message) -> None:
            if message["type"] == "http.response.start":
                leave()
            await send(message)

        try:
            await self.app(scope, receive, send_and_leave)
        finally:
            leave()
