"""Results leave the service as a table: `GET /v1/runs/{id}/export` and `discovery runs export`, checked on the
completed run of `tests/api/test_api_run_e2e.py`."""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select

from service.db import session_scope
from service.db.models import Candidate, Evaluation
from service.runs.export import EXPORT_COLUMNS
from tests.api.conftest import ApiServer
from tests.api.test_cli_client import discovery


def check_the_export_has_a_row_per_seed_of_every_evaluation_stored(api: ApiServer, key: str, run_id: str) -> None:
    """Called on a completed run by tests/api/test_api_run_e2e.py (a run is too dear to make twice)."""
    client = api.client(key)
    with session_scope(api.runtime.factory) as session:
        stored = session.scalars(select(Evaluation).join(Candidate).where(Candidate.run_id == run_id)).all()
        expected = sum(len(e.seeds) if e.returns is not None else 1 for e in stored)
        phases = {e.phase for e in stored}
    assert expected > 0 and {"train", "test"} <= phases

    response = client.get(f"/v1/runs/{run_id}/export", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) == expected
    scored = [r for r in rows if r["outcome"] == "ok"]
    assert scored and all(r["return"] and r["score"] and r["artifact_sha256"] for r in scored)

    lines = client.get(f"/v1/runs/{run_id}/export", params={"format": "jsonl"}).text.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == expected
    assert all(isinstance(r["curve"], list) and r["curve"] for r in records if r["outcome"] == "ok")

    printed = discovery(api, key, "runs", "export", run_id, "--format", "csv")
    assert printed.returncode == 0 and printed.stdout == response.text
    bad = discovery(api, key, "runs", "export", run_id, "--format", "xlsx")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --format must be csv or jsonl, got 'xlsx'"
    assert client.get(f"/v1/runs/{run_id}/export", params={"format": "xlsx"}).status_code == 422
    assert api.client(api.new_key("stranger")).get(f"/v1/runs/{run_id}/export").status_code == 404
