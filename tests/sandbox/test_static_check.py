"""The static check accepts the project's own algorithms and explains every rejection by line."""

from __future__ import annotations

import pytest

from workers.sandbox import check_source, format_issues
from workers.sandbox.static_check import MAX_NESTING, MAX_SOURCE_CHARS
from workers.targets import TARGETS, get_target

ADVANTAGE = get_target("advantage")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_warm_starts_pass(name: str) -> None:
    target = TARGETS[name]
    assert check_source(target.warm_start, target) == []


def test_helpers_nested_functions_and_allowed_imports_pass() -> None:
    code = '''"""A candidate with helpers."""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax, nn

EPS = 1e-8
SCALE = math.sqrt(2.0)


def helper(x):
    return nn.relu(x) * SCALE + EPS


@functools.partial(jax.jit, static_argnums=())
def advantages(rewards, values, dones, last_value, gamma, lam):
    def step(carry, x):
        return carry * gamma + x, carry

    _, out = lax.scan(step, jnp.zeros_like(last_value), rewards, reverse=True)
    return helper(out) - values
'''
    assert check_source(code, ADVANTAGE) == []


def test_each_issue_names_its_line() -> None:
    code = (
        "import os\n"  # 1
        "import jax.numpy as jnp\n"  # 2
        "\n"  # 3
        "def advantages(rewards, values, dones, last_value, gamma, lam):\n"  # 4
        "    data = open('/etc/passwd').read()\n"  # 5
        "    cls = rewards.__class__\n"  # 6
        "    return eval('rewards')\n"  # 7
    )
    issues = check_source(code, ADVANTAGE)
    assert [i.line for i in issues] == [1, 5, 6, 7]
    text = format_issues(issues)
    lines = text.splitlines()
    assert lines[0].startswith("line 1: `import os` is not allowed; import only ")
    assert lines[1].startswith("line 5: `open` reads or writes files")
    assert lines[2] == "line 6: dunder attribute `.__class__` is not allowed"
    assert lines[3].startswith("line 7: `eval` runs code from a string")


def test_missing_function_and_wrong_signature() -> None:
    missing = check_source("import jax\n\ndef other(x):\n    return x\n", ADVANTAGE)
    assert format_issues(missing) == (
        "line 1: the code must define `def advantages(rewards, values, dones, last_value, gamma, lam):` "
        "at the top level"
    )
    wrong = check_source("def advantages(rewards, values, *args):\n    return rewards\n", ADVANTAGE)
    assert len(wrong) == 1 and wrong[0].line == 1
    assert "must take exactly (rewards, values, dones, last_value, gamma, lam)" in wrong[0].message


def test_nested_definition_does_not_count_as_the_target() -> None:
    code = "def outer():\n    def advantages(rewards, values, dones, last_value, gamma, lam):\n        return 0\n"
    assert "at the top level" in format_issues(check_source(code, ADVANTAGE))


def test_syntax_error_and_size_limit() -> None:
    issues = check_source("def advantages(rewards, values, dones, last_value, gamma, lam):\n    return (\n", ADVANTAGE)
    assert len(issues) == 1 and issues[0].message.startswith("syntax error:")
    huge = ADVANTAGE.warm_start + "#" * MAX_SOURCE_CHARS
    [issue] = check_source(huge, ADVANTAGE)
    assert issue.line == 1 and f"the limit is {MAX_SOURCE_CHARS}" in issue.message


@pytest.mark.parametrize(
    ("snippet", "phrase"),
    [
        ("x = getattr(rewards, name)", "literal attribute name"),
        ("x = getattr(rewards, '_value')", "private name"),
        ("setattr(rewards, 'x', 1)", "`setattr` modifies objects"),
        ("x = globals()", "`globals`"),
        ("x = compile('1', 'f', 'eval')", "`compile`"),
        ("x = __builtins__", "double-underscore names"),
        ("jax.debug.print('{}', rewards)", "jax.debug"),
        ("x = jax.pure_callback", "host callbacks"),
        ("jax.config.update('jax_enable_x64', True)", "jax.config"),
        ("x = rewards._value", "private attribute"),
        ("global STATE", "`global` is not allowed"),
        ("x = f(**vars())", "`vars`"),
        ("x = f(*globals())", "unpacking the result of a call"),
    ],
)
def test_rejections_inside_the_function(snippet: str, phrase: str) -> None:
    header = "import jax\n\ndef advantages(rewards, values, dones, last_value, gamma, lam):\n"
    code = f"{header}    {snippet}\n    return x\n"
    issues = check_source(code, ADVANTAGE)
    assert any(phrase in i.message and i.line == 4 for i in issues), format_issues(issues)


@pytest.mark.parametrize(
    ("top", "phrase"),
    [
        ("from jax import *", "import *"),
        ("from jax.experimental import io_callback", "`from jax.experimental import ...` is not allowed"),
        ("from . import x", "relative imports"),
        ("class Evil:\n    pass", "class definitions"),
        ("print('hi')", "top-level `expr` statement"),
    ],
)
def test_rejections_at_top_level(top: str, phrase: str) -> None:
    code = f"{top}\n\ndef advantages(rewards, values, dones, last_value, gamma, lam):\n    return rewards\n"
    assert phrase in format_issues(check_source(code, ADVANTAGE))


DRIFT_HEADER = "def drift(ratio, advantage, epsilon):\n    return "


@pytest.mark.parametrize(
    "body",
    [
        "-" * 4000 + "ratio",  # the parser itself runs out of stack
        "(" * 4000 + "ratio" + ")" * 4000,  # the tokenizer refuses
        "[" * 4000 + "ratio" + "]" * 4000,
        "-" * 900 + "ratio",  # parses, but would overflow ast.unparse and recursive visitors
        "[" * (MAX_NESTING + 50) + "ratio" + "]" * (MAX_NESTING + 50),  # parses, deeper than the limit
    ],
)
def test_deep_nesting_is_a_rejection_not_a_crash(body: str) -> None:
    issues = check_source(DRIFT_HEADER + body + "\n", get_target("lpo"))
    assert len(issues) == 1 and "nested" in issues[0].message, format_issues(issues)
    assert issues[0].line in {1, 2}


def test_nesting_up_to_the_limit_passes() -> None:
    body = "-" * (MAX_NESTING - 10) + "ratio"
    assert check_source(DRIFT_HEADER + body + "\n", get_target("lpo")) == []
