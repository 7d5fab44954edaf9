"""The static check is the subset of Python candidates are written in: it accepts the project's own algorithms,
refuses everything else that a hostile model might reach for, and explains every rejection by line."""

from __future__ import annotations

import pytest

from workers.sandbox import check_source, format_issues
from workers.sandbox.static_check import MAX_NESTING, MAX_SOURCE_CHARS
from workers.targets import TARGETS, get_target

ADVANTAGE = get_target("advantage")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_warm_starts_and_references_pass(name: str) -> None:
    target = TARGETS[name]
    assert check_source(target.warm_start, target) == []
    for reference in target.references:
        assert check_source(reference.code, target) == [], reference.name


def test_helpers_nested_functions_and_allowed_imports_pass() -> None:
    code = '''"""A candidate with helpers."""
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax, nn

EPS = 1e-8
SCALE = math.sqrt(2.0)


def helper(x, scale=SCALE):
    return nn.relu(x) * scale + EPS


def advantages(rewards, values, dones, last_value, gamma, lam):
    """A docstring."""
    def step(carry, x):
        carry = carry * gamma
        carry += x
        return carry, carry

    squash = lambda x: jnp.where(x > 0.0, x, 0.5 * x) if EPS > 0 else x
    _, out = lax.scan(functools.partial(step), jnp.zeros_like(last_value), rewards, reverse=True)
    first, second = out[0], out[1:][..., None]
    return squash(helper(out) - values) + jax.nn.relu(first - second[0, :, 0]) * max(gamma, 0.5)
'''
    assert check_source(code, ADVANTAGE) == []


def test_each_issue_names_its_line() -> None:
    code = (
        "import os\n"  # 1
        "import jax.numpy as jnp\n"  # 2
        "\n"  # 3
        "def advantages(rewards, values, dones, last_value, gamma, lam):\n"  # 4
        "    data = open('/etc/passwd')\n"  # 5
        "    cls = rewards.__class__\n"  # 6
        "    return eval('rewards')\n"  # 7
    )
    issues = check_source(code, ADVANTAGE)
    assert [i.line for i in issues] == [1, 5, 6, 7]
    lines = format_issues(issues).splitlines()
    assert lines[0].startswith("line 1: `import os` is not allowed; import only ")
    assert lines[1] == "line 5: `open` is not allowed: it reads or writes files"
    assert lines[2] == "line 6: dunder attribute `.__class__` is not allowed"
    assert lines[3] == "line 7: `eval` is not allowed: it runs code from a string"


def test_missing_function_and_wrong_signature() -> None:
    missing = check_source("import jax\n\ndef other(x):\n    return x\n", ADVANTAGE)
    assert format_issues(missing) == (
        "line 1: the code must define `def advantages(rewards, values, dones, last_value, gamma, lam):` "
        "at the top level"
    )
    wrong = check_source("def advantages(rewards, values, *args):\n    return rewards\n", ADVANTAGE)
    assert {i.line for i in wrong} == {1}
    assert any("must take exactly (rewards, values, dones, last_value, gamma, lam)" in i.message for i in wrong)


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
        # reaching the interpreter
        ("x = getattr(rewards, 'shape')", "`getattr` is not allowed"),
        ("x = setattr(rewards, 'x', 1)", "`setattr` is not allowed"),
        ("x = globals()", "`globals` is not allowed"),
        ("x = compile('1', 'f', 'eval')", "`compile` is not allowed"),
        ("x = __builtins__", "double-underscore names"),
        ("x = rewards._value", "private attribute"),
        ("global STATE", "`global` is not allowed"),
        ("x = jnp.sum(**vars())", "unpacking with `**`"),
        ("x = jnp.stack(*rewards)", "unpacking with `*`"),
        ("x = [r for r in rewards]", "comprehensions are not allowed"),
        ("x = f'{rewards}'", "f-strings"),
        ("x = {'a': rewards}", "`Dict` expressions are not allowed"),
        ("x = print(rewards)", "`print` is not allowed"),
        # host code and custom gradients through jax
        ("x = jax.debug.print('{}', rewards)", "jax.debug"),
        ("x = jax.pure_callback", "host callbacks"),
        ("x = jax.config.update('jax_enable_x64', True)", "jax.config"),
        ("x = jax.lax.stop_gradient(rewards)", "`stop_gradient` is not allowed"),
        ("x = jax.custom_vjp(jnp.tanh)", "custom gradients are not allowed"),
        ("x = jax.jit(jnp.tanh)(rewards)", "`jax.jit` is not one of the allowed array functions"),
        # what the function is traced with: shapes, types, the tracer itself
        ("x = rewards.shape[0]", "shapes are not available"),
        ("x = len(rewards)", "`len` is not allowed"),
        ("x = jnp.shape(rewards)", "shapes are not available"),
        ("x = jnp.result_type(rewards)", "`jax.numpy.result_type` is not one of the allowed array functions"),
        ("x = jnp.ndim(rewards)", "shapes are not available"),
        ("x = type(rewards)", "`type` is not allowed"),
        ("x = isinstance(rewards, float)", "`isinstance` is not allowed"),
        ("x = rewards.sum()", "attributes are only for naming an allowed function"),
        ("x = jnp.asarray(rewards).T", "attributes are only for naming an allowed function"),
        ("x = jnp", "the module `jnp` can only be used to name a function"),
        ("jnp = rewards", "`jnp` names an import and cannot be bound again"),
        ("x = rewards is None", "`is` and `in` are not allowed"),
        # control flow a trace could branch on
        ("if gamma > 0.5:\n        x = rewards", "`if` statements are not allowed"),
        ("for i in range(3):\n        x = rewards", "`for` loops are not allowed"),
        ("while True:\n        x = rewards", "`while` loops are not allowed"),
        ("try:\n        x = rewards\n    except Exception:\n        x = values", "`try` statements are not allowed"),
        ("import math", "imports belong at the top of the file"),
        ("jnp.sum(rewards)", "an expression on its own line has no effect"),
        ("x, rewards[0] = rewards, 1.0", "only names (or tuples of names) can be assigned"),
    ],
)
def test_rejections_inside_the_function(snippet: str, phrase: str) -> None:
    header = "import jax\nimport jax.numpy as jnp\n\ndef advantages(rewards, values, dones, last_value, gamma, lam):\n"
    code = f"{header}    {snippet}\n    return x\n"
    issues = check_source(code, ADVANTAGE)
    assert any(phrase in i.message and i.line == 5 for i in issues), format_issues(issues)


@pytest.mark.parametrize(
    "definition",
    [
        "@jax.jit\ndef advantages(rewards, values, dones, last_value, gamma, lam):",
        "def advantages(rewards, values, dones, last_value, gamma, lam) -> jax.Array:",
        "def advantages(rewards, values, dones, last_value, gamma, lam: float):",
    ],
)
def test_decorators_and_annotations_are_refused(definition: str) -> None:
    issues = check_source(f"import jax\n\n{definition}\n    return rewards\n", ADVANTAGE)
    assert any("decorators" in i.message or "annotations" in i.message for i in issues), format_issues(issues)


@pytest.mark.parametrize(
    ("top", "phrase"),
    [
        ("from jax import *", "import *"),
        ("from jax.experimental import io_callback", "`from jax.experimental import ...` is not allowed"),
        ("from . import x", "relative imports"),
        ("class Evil:\n    pass", "class definitions"),
        ("print('hi')", "top-level `expr` statement"),
        ("import jax.numpy as jnp\nfrom jax import lax as jnp", "imported twice as different things"),
        ("from jax.numpy import shape", "shapes are not available"),
        ("from jax.lax import stop_gradient", "`stop_gradient` is not allowed"),
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
