"""Attack: `best.py` is data except for the candidate's function, whatever a model puts in a name or a thought."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from service.db.models import Candidate, Evaluation, Run
from service.runs.export import best_file, comment_safe

DRIFT = "import jax.numpy as jnp\n\n\ndef drift(ratio, advantage, epsilon):\n    return 0.0 * ratio\n"
HOSTILE = [
    'x"""\nimport pathlib; pathlib.Path("PWNED").write_text("1")\n"""',
    "ok\rimport pathlib; pathlib.Path('PWNED').write_text('1')",
    "\\N{bogus} and a \x00 NUL and a \u2028 line separator and \x85 next line",
    "# comment\n\x0cimport os",
    "'''\ntriple single",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_name_or_thought_stays_a_comment(text: str, tmp_path: Path) -> None:
    run = Run(id="r" * 32, target="lpo", proposer={"kind": "llm", "model": "test-model"}, profile="smoke", seed=0)
    best = Candidate(id="c" * 32, index=3, name=text, thought=text * 3, code=DRIFT, stats={}, verified_score=1.2)
    row = Evaluation(env="CartPole-v1", phase="test", round=0, normalised_score=1.1, final_return=200.0, stats=None)
    source = best_file(run, best, [row], f"verdict {text}")
    module = ast.parse(source)  # no SyntaxError from a NUL, a `\N{`, or a closed docstring
    assert [type(node).__name__ for node in module.body] == ["Import", "FunctionDef"]
    path = tmp_path / "best.py"
    path.write_text(source)
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "PWNED").exists()


def test_comment_safe_escapes_every_line_break_python_knows() -> None:
    assert comment_safe("a\nb\rc\x00d\u2028e") == "a\\nb\\rc\\x00d\\u2028e"
    assert comment_safe("ratio → 1 ± ε") == "ratio → 1 ± ε"  # printable text is kept as it is


def test_the_header_says_where_the_best_was_trained() -> None:
    run = Run(id="r" * 32, target="lpo", proposer={"kind": "evolution"}, profile="smoke", seed=0)
    best = Candidate(id="c" * 32, index=1, name="smooth", thought="", code=DRIFT, stats={}, verified_score=1.1)
    rows = [Evaluation(env=env, phase=phase, round=0, normalised_score=1.0, final_return=100.0, stats=None,
                       platform="cpu", device="TFRT_CPU_0") for env, phase in (("CartPole-v1", "train"),
                                                                               ("Acrobot-v1", "test"))]
    assert "# Trained on: cpu (TFRT_CPU_0).\n" in best_file(run, best, rows, "a verdict")
    assert "# Trained on: not recorded yet.\n" in best_file(run, best, [], "a verdict")
