"""The browser UI, served by the API process: server-rendered pages, SVG charts, no build step.

`install(app, settings)` adds what the UI needs to the FastAPI app: the session middleware (a
signed cookie holding the logged-in key's id), the static files, the login redirect and the routes.
The session secret is the settings' `session_secret` when one is configured; otherwise a random
per-process secret, so sessions end when the process restarts and are not shared across processes.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles

from service.web.routes import HERE, LoginRequired, login_required, router

SESSION_MAX_AGE = 7 * 24 * 3600


def session_secret(settings: Any) -> str:
    """The configured secret (settings.session_secret, a str or SecretStr) or a random per-process one."""
    configured = getattr(settings, "session_secret", None)
    if hasattr(configured, "get_secret_value"):
        configured = configured.get_secret_value()
    return configured or secrets.token_urlsafe(32)


def install(app: FastAPI, settings: Any = None) -> None:
    app.add_middleware(SessionMiddleware, secret_key=session_secret(settings), session_cookie="discovery_session",
                       max_age=SESSION_MAX_AGE, same_site="lax", https_only=False)
    app.add_exception_handler(LoginRequired, login_required)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="web-static")
    app.include_router(router)
