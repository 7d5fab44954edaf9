"""The browser UI's routes: login, runs, a new run (preset or fields), one run (with live updates), one
candidate, a comparison.

Auth: the login form takes the same API key as the REST API. The session (a signed cookie, see
service.web.install) keeps only the key's id, never the key itself; every request re-reads the key
row, so revoking a key ends its browser sessions too. Pages show only runs the key owns.

Live updates: GET /runs/{id}/events streams the run's events (the same outbox rows as the API's SSE
stream) to a cookie-authenticated EventSource; the page then re-fetches /runs/{id}/live, the run's
body rendered on the server, and swaps it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from service.api.deps import RuntimeDep, SessionDep
from service.db.models import ApiKey
from service.keys import find_key
from service.runs import export
from service.runs.events import event_stream
from service.runs.presets import PRESETS
from service.runs.provenance import provenance_text, trained_on_text
from service.runs.queries.ownership import owned_candidate, owned_run
from service.runs.queries.runs import discovery_of
from service.runs.runner import RunRefused, start_run
from service.web import data, forms
from workers.rl.envs import ENVIRONMENTS, PROFILES
from workers.targets import TARGETS
from workers.vocabulary import RUN_FINAL_STATUSES

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """Raised by `web_key` when the browser session holds no valid key; answered with a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def score(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def when(value: Any) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                        trim_blocks=True, lstrip_blocks=True)
templates.filters.update(score=score, number=number, when=when, duration=duration, provenance=provenance_text,
                         trained_on=lambda items: trained_on_text((t.platform, t.device) for t in items))
templates.globals.update(final_statuses=RUN_FINAL_STATUSES)


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered into an HTML response with the UI's security headers."""
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code,
                        headers=SECURITY_HEADERS)


def safe_next(value: str | None) -> str:
    """A same-site path to go to after login (never another origin)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def current_key(request: Request, session: SessionDep) -> ApiKey | None:
    key_id = request.session.get("key_id")
    key = session.get(ApiKey, key_id) if isinstance(key_id, str) else None
    if key is None or key.revoked_at is not None:
        return None
    return key


def web_key(request: Request, runtime: RuntimeDep) -> ApiKey:
    """The logged-in key, read in a session of its own (closed before the page's route runs; see get_session)."""
    with runtime.factory() as session:
        key = current_key(request, session)
    if key is None:
        request.session.clear()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return key


WebKey = Annotated[ApiKey, Depends(web_key)]


def not_found(key: ApiKey, what: str) -> HTMLResponse:
    return page("not_found.html", status_code=404, key=key, what=what)


@router.get("/login")
def login_form(request: Request, session: SessionDep, next: str = "/") -> Response:
    if current_key(request, session) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page("login.html", key=None, next=safe_next(next), error=None)


def cross_site(request: Request) -> bool:
    """A form post another site made the browser send (login CSRF and the like): its Origin is not ours, or the
    browser says so (Sec-Fetch-Site)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return True
    return request.headers.get("sec-fetch-site") == "cross-site"


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    if cross_site(request):  # or another site could log the victim in as the attacker, and own their new runs
        return HTMLResponse("cross-origin form posts are refused", status_code=403, headers=SECURITY_HEADERS)
    body = await request.body()
    fields = parse_qs(body[:8192].decode("utf-8", "replace"))
    secret = (fields.get("api_key") or [""])[0].strip()
    target = safe_next((fields.get("next") or ["/"])[0])

    def check() -> tuple[str, str] | None:
        with runtime.factory() as s:
            row = find_key(s, secret) if secret else None
            return (row.id, row.name) if row else None

    found = await run_in_threadpool(check)
    if found is None:
        return page("login.html", status_code=401, key=None, next=target, error="That API key is unknown or revoked.")
    request.session.clear()
    request.session["key_id"], request.session["key_name"] = found
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def runs_page(key: WebKey, session: SessionDep) -> Response:
    return page("runs.html", key=key, rows=data.list_runs(session, key))


def new_run_page(key: ApiKey, fields: dict[str, list[str]], status_code: int = 200, problems: list[str] | None = None,
                 resolved: str | None = None) -> HTMLResponse:
    form = {name: forms.first(fields, name) for name in ("preset", "target", "profile", "learning_rate", "proposer",
                                                         "model", "history", *forms.NUMBERS)}
    form.update(train_envs=fields.get("train_envs", []), test_envs=fields.get("test_envs", []))
    return page("new_run.html", status_code=status_code, key=key, form=form, problems=problems or [],
                resolved=resolved, presets=list(PRESETS), targets=list(TARGETS), profiles=list(PROFILES),
                environments=list(ENVIRONMENTS))


@router.get("/runs/new")
def new_run_form(key: WebKey, preset: str = "") -> Response:
    return new_run_page(key, {"preset": [preset]} if preset in PRESETS else {})


@router.post("/runs/new")
async def new_run(request: Request, key: WebKey, runtime: RuntimeDep) -> Response:
    """Preview the resolved run spec, or start the run as the logged-in key (like POST /v1/runs)."""
    if cross_site(request):
        return HTMLResponse("cross-origin form posts are refused", status_code=403, headers=SECURITY_HEADERS)
    fields = parse_qs((await request.body())[:65536].decode("utf-8", "replace"))
    try:
        spec = forms.run_spec(fields)
    except forms.FormError as exc:
        return new_run_page(key, fields, 422, exc.problems)
    if forms.first(fields, "action") != "start":
        return new_run_page(key, fields, resolved=spec.model_dump_json(indent=2))
    try:
        run_id = await run_in_threadpool(start_run, runtime, spec, key.id)
    except RunRefused as exc:
        return new_run_page(key, fields, 422, [str(exc)])
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@router.get("/runs/{run_id}")
def run_view(run_id: str, key: WebKey, session: SessionDep, sort: str = "score", order: str = "desc") -> Response:
    run = owned_run(session, key, run_id)
    if run is None:
        return not_found(key, "run")
    return page("run.html", key=key, view=data.run_page(session, run, sort, order))


@router.get("/runs/{run_id}/best.py")
def best_download(run_id: str, key: WebKey, session: SessionDep) -> Response:
    """The run's best algorithm, for the browser's session (the API's needs a Bearer key)."""
    run = owned_run(session, key, run_id)
    download = export.best_download(session, run, discovery_of(run).message) if run is not None else None
    if download is None:
        return not_found(key, "best algorithm")
    body, name = download
    return Response(body, media_type="text/x-python", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/runs/{run_id}/export.{format}")
def table_download(run_id: str, format: Literal["csv", "jsonl"], key: WebKey,  # noqa: A002 - the file's suffix
                   session: SessionDep) -> Response:
    """The run's evaluations as CSV or JSONL, for the browser's session."""
    run = owned_run(session, key, run_id)
    if run is None:
        return not_found(key, "run")
    body, media_type, name = export.table_download(session, run, format)
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/runs/{run_id}/live")
def run_live(run_id: str, key: WebKey, session: SessionDep, sort: str = "score", order: str = "desc") -> Response:
    """The run page's body alone: what the page's script swaps in when an event arrives."""
    run = owned_run(session, key, run_id)
    if run is None:
        return not_found(key, "run")
    return page("_run_body.html", key=key, view=data.run_page(session, run, sort, order))


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, runtime: RuntimeDep, after: int = 0) -> Response:
    """The run's events as Server-Sent Events, for the page's EventSource (cookie-authenticated).

    Starts after event id `after` (the last event the page was rendered with); a reconnecting
    EventSource's Last-Event-ID header takes precedence.
    """

    def authorise() -> bool:
        with runtime.factory() as s:
            key = current_key(request, s)
            return key is not None and owned_run(s, key, run_id) is not None

    if not await run_in_threadpool(authorise):
        return Response("not found", status_code=404, media_type="text/plain")
    resume = request.headers.get("last-event-id", "")
    after = int(resume) if resume.isdigit() else max(after, 0)

    return event_stream(runtime.factory, run_id, after, request.is_disconnected)


@router.get("/candidates/{candidate_id}")
def candidate_view(candidate_id: str, key: WebKey, session: SessionDep) -> Response:
    candidate = owned_candidate(session, key, candidate_id)
    if candidate is None:
        return not_found(key, "candidate")
    return page("candidate.html", key=key, view=data.candidate_page(session, candidate))


@router.get("/compare")
def compare_view(key: WebKey, session: SessionDep,
                 run: Annotated[list[str] | None, Query()] = None) -> Response:
    return page("compare.html", key=key, view=data.compare_page(session, key, (run or [])[:12]))


async def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)
