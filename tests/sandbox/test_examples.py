"""The example candidates in examples/ are valid candidates: inside the subset, and they trace with their
target's rules (what `discovery evaluate --code examples/...` in the README relies on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.results import TraceRequest
from workers.sandbox import check_source, format_issues
from workers.sandbox.tracer import trace
from workers.targets import TARGETS
from workers.vocabulary import Outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _target_of(path: Path) -> str:
    return next(name for name in TARGETS if path.name.startswith(name))


CANDIDATES = sorted(p for p in EXAMPLES.glob("*.py") if p.name.startswith(tuple(TARGETS)))  # <target>_<idea>.py


@pytest.mark.parametrize("path", CANDIDATES, ids=lambda p: p.name)
def test_an_example_is_a_valid_candidate(path: Path) -> None:
    target = _target_of(path)
    code = path.read_text()
    assert check_source(code, TARGETS[target]) == [], format_issues(check_source(code, TARGETS[target]))
    traced = trace(TraceRequest(target=target, code=code, check_rules=True))
    assert traced.outcome is Outcome.ok, traced.error


def test_every_target_has_an_example() -> None:
    assert {_target_of(p) for p in CANDIDATES} == set(TARGETS)
