"""The normalised AST hash and the bounded, deterministic prompt history."""

from __future__ import annotations

import random

import pytest

from service.proposers import HistoryEntry, HistorySettings, ProposalContext, ast_hash
from service.proposers.history import render_sections, select_history
from service.proposers.prompts import history_prompt
from tests.proposers.scripted_llm import warm_entry
from workers.targets import get_target
from workers.vocabulary import Outcome

WARM = get_target("lpo").warm_start

SAME_ALGORITHM = '''
"""A module docstring."""
import jax
from jax import numpy as np


def drift(r, a, eps):  # renamed arguments and locals, another alias, comments, no docstring
    lo = np.clip(r, 1.0 - eps, 1.0 + eps)

    return jax.nn.relu(
        (r - lo) * a
    )
'''


def test_renaming_reformatting_and_docstrings_do_not_change_the_hash():
    assert ast_hash(SAME_ALGORITHM) == ast_hash(WARM)
    assert ast_hash(WARM.replace("import jax.numpy as jnp", "import jax.numpy as jnp  # arrays")) == ast_hash(WARM)


def test_a_different_constant_operator_or_argument_use_changes_the_hash():
    variants = [
        WARM.replace("1.0 + epsilon", "1.1 + epsilon"),
        WARM.replace("(ratio - clipped) * advantage", "(ratio - clipped) / advantage"),
        WARM.replace("(ratio - clipped) * advantage", "(clipped - ratio) * advantage"),
        WARM.replace("jax.nn.relu", "jax.nn.softplus"),
    ]
    hashes = {ast_hash(v) for v in variants}
    assert len(hashes) == len(variants) and ast_hash(WARM) not in hashes


def test_unparseable_code_still_hashes():
    assert ast_hash("def drift(:") == ast_hash("def drift(:\n")
    assert ast_hash("def drift(:") != ast_hash(WARM)


@pytest.mark.parametrize(
    "body",
    [
        "-" * 4000 + "ratio",
        "(" * 4000 + "ratio" + ")" * 4000,
        "[" * 4000 + "ratio" + "]" * 4000,
        "-" * 900 + "ratio",  # parses, but the normaliser would overflow the stack
        "[" * 150 + "ratio" + "]" * 150,
    ],
)
def test_deeply_nested_code_hashes_its_text_like_unparseable_code(body: str) -> None:
    code = "def drift(ratio, advantage, epsilon):\n    return " + body + "\n"
    digest = ast_hash(code)
    assert digest.startswith("text:") and digest == ast_hash(code.strip())
    assert digest != ast_hash(WARM)


def entries() -> list[HistoryEntry]:
    made = []
    for i in range(1, 21):
        ok = i % 4 != 0
        made.append(
            HistoryEntry(
                candidate_id=f"c{i}",
                index=i,
                name=f"cand_{i}",
                code=WARM.replace("1.0 + epsilon", f"1.0 + {i} * epsilon"),
                outcome=Outcome.ok if ok else Outcome.error,
                score=(i * 37 % 11) / 10 if ok else None,
                error=None if ok else f"TypeError in candidate {i}\n" + "x" * 5000 + "\nlast line of the traceback",
            )
        )
    made.append(HistoryEntry(candidate_id="c21", index=21, name="pending", code=WARM))  # not evaluated yet
    return made


def test_history_keeps_best_recent_and_failures_within_bounds():
    settings = HistorySettings(best_k=3, recent_m=2, failures_f=2, max_error_chars=200)
    selection = select_history(warm_entry(), entries(), settings)
    scores = [e.score for e in selection.best]
    assert len(selection.best) == 3 and scores == sorted(scores, reverse=True)
    assert all(
        s >= e.score
        for s in scores
        for e in entries()
        if e.score is not None and e.candidate_id not in {b.candidate_id for b in selection.best}
    )
    assert [e.index for e in selection.recent] == sorted(e.index for e in selection.recent)
    assert len(selection.recent) == 2 and not {e.candidate_id for e in selection.recent} & {
        e.candidate_id for e in selection.best
    }
    assert [e.candidate_id for e in selection.failures] == ["c16", "c20"]
    assert "pending" not in {e.name for e in [*selection.best, *selection.recent, *selection.failures]}
    failures = render_sections(selection, settings)["failures"]
    assert "last line of the traceback" in failures and "earlier lines cut" in failures
    assert len(failures) < 2000


def test_the_prompt_does_not_depend_on_the_order_the_database_returns_rows():
    shuffled = entries()
    random.Random(3).shuffle(shuffled)
    target = get_target("lpo")
    settings = HistorySettings()

    def prompt(history: list[HistoryEntry]) -> str:
        context = ProposalContext(run_id="r", target="lpo", seed=1, index=22, warm_start=warm_entry(), history=history)
        return history_prompt(target, context, settings)

    assert prompt(shuffled) == prompt(entries())
    assert "Propose candidate 22" in prompt(entries())


def test_the_history_shows_each_score_with_its_interval_and_verdict():
    """A score within noise says so, so the model is not invited to chase it."""
    from service.proposers.history import render_entry

    comparison = {"ci": [0.55, 1.57], "confidence": 0.95, "verdict": "inconclusive", "seeds": 2}
    noisy = HistoryEntry(candidate_id="c1", index=1, name="lucky", code="x", outcome=Outcome.ok, score=1.063,
                         comparison=comparison)
    assert "Fitness: 1.0630 (95% CI 0.55-1.57, not distinguishable from the warm start, 2 seeds)" in render_entry(
        noisy, HistorySettings())
    better = noisy.model_copy(update={"comparison": {**comparison, "ci": [1.2, 1.6], "verdict": "better",
                                                     "seeds": 16}})
    assert "better than the warm start, 16 seeds" in render_entry(better, HistorySettings())
