"""The read side's per-request statements stay cheap to send: psycopg parses a statement's placeholders once and
caches the result only for a statement under 4,096 characters (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH);
a longer one is parsed again at every execution."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from service.runs.queries.candidates import CHILDREN, EVALUATIONS, _page_statement
from service.runs.queries.ownership import OWNED_CANDIDATE
from service.runs.queries.runs import OWNED_RUN_AND_FIGURES, RUN_FIGURES, RUN_META_TESTS, _runs_statement

PSYCOPG_CACHED_STATEMENT_CHARS = 4096
ID = "0" * 32
VALUES = {"run_id": ID, "owner_key_id": ID, "candidate_id": ID, "status": "completed", "target": "lpo",
          "outcome": "ok", "after_created_at": datetime.now(UTC), "after_id": ID, "position": 0, "offset": 0,
          "limit": 51}

STATEMENTS = {
    "run and figures": OWNED_RUN_AND_FIGURES, "figures": RUN_FIGURES, "meta-test rows": RUN_META_TESTS,
    "runs list": _runs_statement(True, True, True), "candidates page": _page_statement(True, True, "score", True),
    "candidate": OWNED_CANDIDATE, "children": CHILDREN, "evaluations": EVALUATIONS,
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_a_read_statement_fits_psycopgs_cache(name: str) -> None:
    statement: Select = STATEMENTS[name]
    # As sent: IN lists expanded, every placeholder named.
    sql = str(statement.params(VALUES).compile(dialect=postgresql.dialect(),
                                               compile_kwargs={"render_postcompile": True}))
    assert len(sql.encode()) < PSYCOPG_CACHED_STATEMENT_CHARS, f"{name}: {len(sql)} characters"
