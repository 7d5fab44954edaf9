"""The static check, the boundary in front of the tracer: run in the worker before any process runs a
candidate, it refuses source that is too long, does not parse or nests too deeply, then holds it to the
allow-listed subset of Python (`workers.sandbox.subset`). Every issue names a line and says what to change.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from workers.sandbox.subset import StaticIssue, SubsetChecker
from workers.targets import Target

MAX_SOURCE_CHARS = 20_000

# Levels of the syntax tree. Real candidates stay far below; deeper trees overflow recursive walks
# (ast.unparse, compile, NodeVisitor) in this process, so they are rejected before any of those run.
MAX_NESTING = 100


def format_issues(issues: Iterable[StaticIssue]) -> str:
    """One line per issue, `line N: reason`, in the order of the source."""
    return "\n".join(f"line {issue.line}: {issue.message}" for issue in issues)


def check_source(code: str, target: Target) -> list[StaticIssue]:
    """Check a candidate's source against the subset; an empty list means it passes."""
    if len(code) > MAX_SOURCE_CHARS:
        return [
            StaticIssue(
                line=1,
                message=f"the source has {len(code)} characters; the limit is {MAX_SOURCE_CHARS}. "
                "Write a shorter function.",
            )
        ]
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [StaticIssue(line=exc.lineno or 1, message=f"syntax error: {exc.msg}")]
    except ValueError as exc:  # e.g. null bytes in the source
        return [StaticIssue(line=1, message=f"the source cannot be parsed: {exc}")]
    except (RecursionError, MemoryError):  # the parser ran out of stack on deep nesting
        return [StaticIssue(line=1, message="the code is nested too deeply to parse; simplify the expression")]

    depth, line = ast_depth(tree)
    if depth > MAX_NESTING:
        return [
            StaticIssue(
                line=line,
                message=f"the code is nested too deeply ({depth} levels; the limit is {MAX_NESTING}); "
                "simplify the expression",
            )
        ]
    checker = SubsetChecker(target)
    checker.check_module(tree)
    unique = {(i.line, i.message): i for i in checker.issues}
    return sorted(unique.values(), key=lambda i: (i.line, i.message))


def ast_depth(tree: ast.AST) -> tuple[int, int]:
    """The number of levels of the tree and the line of its deepest node, without recursion."""
    deepest, deepest_line = 0, 1
    stack = [(tree, 1, 1)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > deepest:
            deepest, deepest_line = depth, line
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return deepest, deepest_line
