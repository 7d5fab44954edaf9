"""A small client of the REST API for the CLI: one request, one readable error line on failure."""

from __future__ import annotations

from typing import Any

import httpx

from service.keys import local_key_file
from service.settings import Settings


class ApiError(Exception):
    """The API refused the request (4xx: `bad_input`) or could not answer (unreachable, 5xx)."""

    def __init__(self, message: str, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def request(settings: Settings, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
    """Call the API with DISCOVERY_API_KEY, else with this machine's local identity once it exists; the JSON
    answer, or with `raw` the body as text."""
    local = local_key_file(settings)
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
    elif local.is_file():
        key = local.read_text().strip()
    else:
        raise ApiError("set DISCOVERY_API_KEY (create one with `discovery keys create NAME`)", bad_input=True)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        response = httpx.request(method, settings.api_url.rstrip("/") + path, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(f"cannot reach the API at {settings.api_url}: {exc}", bad_input=False) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.reason_phrase
        except ValueError:
            detail = response.text[:200]
        raise ApiError(f"{response.status_code}: {detail}", bad_input=response.status_code < 500)
    return response.text if raw else response.json()
