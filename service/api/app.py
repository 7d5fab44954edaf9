"""The FastAPI application: factory, RFC 9457 error handlers, request metrics."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import metrics
from service.api.admission import Admission
from service.api.request_limits import BodyLimit, NoNulInUrl
from service.api.routes import candidates, distill, health, runs, targets
from service.keys import KeyCache
from service.runtime import Runtime, build_runtime
from service.settings import Settings, get_settings
from service.web import install as install_web_ui

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, detail: str | None, request: Request, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail, "instance": request.url.path}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def create_app(runtime: Runtime | None = None, settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        owned = runtime is None
        app.state.runtime = runtime or build_runtime(settings or get_settings())
        app.state.keys = KeyCache(app.state.runtime.settings.api_key_cache_seconds)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic collector. With JAX in
        # the process (some 400,000 objects) each full pass stopped a worker for 235-295 ms under
        # bench/api_load.py; without it (about 140,000 objects) a full pass still takes about 80 ms, and after
        # the freeze a few.
        gc.freeze()
        yield
        await app.state.runtime.close_reads()
        if owned:
            app.state.runtime.executor.close()

    app = FastAPI(title="Discovery", version="0.1.0", lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name,  # operation ids: the handlers' names
                  description="Discover reinforcement-learning algorithms with a language model in the loop.",
                  responses={401: {"model": None}})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), request, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, detail, request, errors=errors)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "an internal error; it has been logged", request)

    for module in (runs, distill, candidates, targets, health):
        app.include_router(module.router)
    resolved = runtime.settings if runtime else (settings or get_settings())
    install_web_ui(app, resolved)
    app.add_middleware(Admission, limit=resolved.api_threads)
    app.add_middleware(metrics.RequestMetrics)
    app.add_middleware(BodyLimit, max_bytes=resolved.api_max_body_bytes)  # outer: before a slot is taken
    app.add_middleware(NoNulInUrl)
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    return app


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every error response declared as application/problem+json."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for operation in (op for path in spec["paths"].values() for op in path.values()):
            responses = operation.setdefault("responses", {})
            if "parameters" in operation or "requestBody" in operation:
                responses.setdefault("422", {"description": "Validation Error"})
            if operation.get("security") or any(p.get("in") == "query" and p["name"] == "cursor"
                                                for p in operation.get("parameters", [])):
                responses.setdefault("400", {"description": "Bad Request"})
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    response["content"] = {PROBLEM: {"schema": problem_ref}}
            responses.setdefault("500", {"description": "Internal Server Error",
                                         "content": {PROBLEM: {"schema": problem_ref}}})
        spec["components"]["schemas"].pop("HTTPValidationError", None)
        spec["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = spec
    return app.openapi_schema
