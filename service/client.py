"""Clients of the REST API: `request`, the CLI's (one request, one readable error line on failure), and
`DiscoveryClient`, a typed client for scripts and notebooks (create a run, wait for it with progress, read
its candidates, take its best algorithm and its results home; `examples/run_from_python.py`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from service.keys import local_key_file
from service.runs.views import CandidateDetail, CandidateSummary, GenerationOut, RunOut, StudentOut
from service.settings import Settings
from workers.vocabulary import RUN_FINAL_STATUSES, EventType


class RunEvent(BaseModel):
    """One frame of a run's event stream: its id (resume after it), type and payload."""

    id: int
    type: EventType
    data: dict[str, Any]


class ApiError(Exception):
    """The API refused the request (4xx: `bad_input`) or could not answer (unreachable, 5xx)."""

    def __init__(self, message: str, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def api_key(settings: Settings) -> str:
    """DISCOVERY_API_KEY, else this machine's local identity once it exists."""
    local = local_key_file(settings)
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if local.is_file():
        return local.read_text().strip()
    raise ApiError("set DISCOVERY_API_KEY (create one with `discovery keys create NAME`)", bad_input=True)


def request(settings: Settings, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
    """Call the API with `api_key(settings)`; the JSON answer, or with `raw` the body as text."""
    headers = {"Authorization": f"Bearer {api_key(settings)}"}
    try:
        response = httpx.request(method, settings.api_url.rstrip("/") + path, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(f"cannot reach the API at {settings.api_url}: {exc}", bad_input=False) from None
    _raise_for_problem(response)
    return response.text if raw else response.json()


def _raise_for_problem(response: httpx.Response) -> None:
    """ApiError with the problem's detail for a 4xx or 5xx answer."""
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail") or response.reason_phrase
    except ValueError:
        detail = response.text[:200]
    raise ApiError(f"{response.status_code}: {detail}", bad_input=response.status_code < 500)


class DiscoveryClient:
    """The API from Python: `with DiscoveryClient("http://127.0.0.1:8000", key) as client: ...`.

    Every method raises ApiError with the server's problem detail when the API refuses or fails.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> DiscoveryClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.http.base_url}: {exc}", bad_input=False) from None
        _raise_for_problem(response)
        return response

    def create(self, spec: dict[str, Any], idempotency_key: str | None = None) -> RunOut:
        """Start a run from a RunSpec (as the API takes it); with `idempotency_key`, a retry returns the same run."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return RunOut.model_validate(self._call("POST", "/v1/runs", json=spec, headers=headers).json())

    def get(self, run_id: str) -> RunOut:
        return RunOut.model_validate(self._call("GET", f"/v1/runs/{run_id}").json())

    def resume(self, run_id: str) -> RunOut:
        """Continue an interrupted run (its `discovery run` got Ctrl-C) on the server; ApiError (409) otherwise."""
        return RunOut.model_validate(self._call("POST", f"/v1/runs/{run_id}/resume").json())

    def extend(self, run_id: str, candidates: int | None = None, generations: int | None = None,
               **more: float | int) -> RunOut:
        """Give a completed run more budget: `candidates` (proposals), or for an es run `generations`; `tokens`,
        `cost_usd` and `wall_seconds` as the API takes them."""
        body = {"candidates": candidates, "generations": generations, **more}
        return RunOut.model_validate(self._call("POST", f"/v1/runs/{run_id}/extend",
                                                json={k: v for k, v in body.items() if v is not None}).json())

    def distill(self, run_id: str, candidate_id: str, student: dict[str, Any] | None = None) -> StudentOut:
        """Distil the run's scored candidate into a student (default: a network of 128 hidden units)."""
        body = {"candidate_id": candidate_id, **({"student": student} if student else {})}
        return StudentOut.model_validate(self._call("POST", f"/v1/runs/{run_id}/distill", json=body).json())

    def wait(self, run_id: str, timeout: float = 24 * 3600.0, poll_seconds: float = 2.0,
             progress: Callable[[RunOut], None] | None = None) -> RunOut:
        """Poll until the run is completed, failed or cancelled (calling `progress` with each new state); raise
        TimeoutError when it is not by `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen: tuple[str, int] | None = None
        while True:
            run = self.get(run_id)
            state = (run.status, run.progress.candidates_done)
            if progress is not None and state != seen:
                progress(run)
                seen = state
            if run.status in RUN_FINAL_STATUSES:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout:g} s")
            time.sleep(poll_seconds)

    def candidates(self, run_id: str, sort: Literal["time", "score"] = "time") -> list[CandidateSummary]:
        """Every candidate of the run (all pages)."""
        return list(self._candidates(run_id, sort))

    def _candidates(self, run_id: str, sort: str) -> Iterator[CandidateSummary]:
        cursor: str | None = None
        while True:
            params = {"sort": sort, **({"cursor": cursor} if cursor else {})}
            page = self._call("GET", f"/v1/runs/{run_id}/candidates", params=params).json()
            yield from (CandidateSummary.model_validate(item) for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def generations(self, run_id: str) -> list[GenerationOut]:
        """Every told generation of an es run (all pages): fitness per member, its mean with a 95% interval, spread,
        min and max, sigma and learning rate after it, seeds and cost. Another proposer's run has none."""
        items: list[GenerationOut] = []
        cursor: str | None = None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self._call("GET", f"/v1/runs/{run_id}/generations", params=params).json()
            items += [GenerationOut.model_validate(item) for item in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def candidate(self, candidate_id: str) -> CandidateDetail:
        """One candidate in full: code, lineage, every evaluation with its curves."""
        return CandidateDetail.model_validate(self._call("GET", f"/v1/candidates/{candidate_id}").json())

    def events(self, run_id: str, after: int = 0) -> Iterator[RunEvent]:
        """The run's events as they happen, from after event id `after`; ends after the run's final event."""
        headers = {"Last-Event-ID": str(after)} if after else {}
        try:
            with self.http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_problem(response)
                frame: dict[str, str] = {}
                for line in response.iter_lines():
                    if line:
                        name, _, value = line.partition(":")
                        frame[name] = value.removeprefix(" ")
                    elif "data" in frame and "id" in frame:
                        yield RunEvent(id=int(frame["id"]), type=frame["event"], data=json.loads(frame["data"]))
                        frame = {}
                    else:
                        frame = {}  # a keep-alive comment
        except httpx.HTTPError as exc:
            raise ApiError(f"the event stream of run {run_id} broke: {exc}", bad_input=False) from None

    def best_code(self, run_id: str) -> str:
        """The run's best algorithm as a standalone Python file (its provenance in the header's comments)."""
        return self._call("GET", f"/v1/runs/{run_id}/best.py").text

    def export(self, run_id: str, format: Literal["csv", "jsonl"] = "csv") -> str:  # noqa: A002 - the API's name
        """Every evaluation of the run, one row per candidate × environment × phase × seed."""
        return self._call("GET", f"/v1/runs/{run_id}/export", params={"format": format}).text
