"""Refuse requests the service could not handle before any route runs (RFC 9457 problems).

`BodyLimit`: a body over a size, before it is read whole (413). A declared `Content-Length` over the
limit is answered at once, without reading a byte of the body; a body without one (chunked) is counted
as it arrives and refused when it passes the limit. `NoNulInUrl`: a NUL character in the path or the
query (400), which no database column can hold, so a lookup by it would fail as a server error. Every
route is covered, the web UI's included, since both wrap the whole app.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        seen, started, refused = 0, False, False

        async def counted() -> Message:
            """The body as it arrives; past the limit the 413 goes out and the app is told the client left."""
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 is out: whatever the app says after it is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(send, scope, 413, "Content Too Large", f"the request body is over {self.max_bytes} bytes")


class NoNulInUrl:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if scope["type"] == "http" and ("\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query):
            await send_problem(send, scope, 400, "Bad Request", "a NUL character is not allowed in a URL")
            return
        await self.app(scope, receive, send)


async def send_problem(send: Send, scope: Scope, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                       "instance": scope.get("path", "").replace("\x00", "")}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
