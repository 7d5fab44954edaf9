"""The static check: a cheap first filter on a candidate's source, and feedback for the proposer.

It parses the source and rejects what a candidate never needs: imports beyond the ones a target
permits, private and dunder attributes, dynamic code (`eval`, `exec`, `compile`, `__import__`),
file access, introspection of globals, `getattr`/`setattr` with computed names, JAX host callbacks
and top-level code beyond imports, constants and function definitions. It also requires the
target's function at the top level with exactly the target's parameters.

This is not the security boundary (an allowed module reaches `os` through `jax._src`); the
sandbox child is. Every issue names a line and says what to change.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from pydantic import BaseModel

from workers.targets import Target

MAX_SOURCE_CHARS = 20_000

# Levels of the syntax tree. Real candidates stay far below; deeper trees overflow recursive walks
# (ast.unparse, compile, NodeVisitor) in this process, so they are rejected before any of those run.
MAX_NESTING = 100


FORBIDDEN_CALLS = {
    "eval": "`eval` runs code from a string",
    "exec": "`exec` runs code from a string",
    "compile": "`compile` builds code from a string",
    "open": "`open` reads or writes files",
    "__import__": "`__import__` imports modules dynamically",
    "globals": "`globals` exposes the module's namespace",
    "locals": "`locals` exposes the function's namespace",
    "vars": "`vars` exposes an object's namespace",
    "input": "`input` reads from the terminal",
    "breakpoint": "`breakpoint` starts a debugger",
    "help": "`help` is interactive",
    "exit": "`exit` stops the program",
    "quit": "`quit` stops the program",
    "memoryview": "`memoryview` reaches raw memory",
    "setattr": "`setattr` modifies objects",
    "delattr": "`delattr` modifies objects",
}

# Attributes of jax that run host Python inside traced code or reach beyond array maths.
FORBIDDEN_ATTRIBUTES = {
    "pure_callback": "host callbacks (`jax.pure_callback`) are not allowed",
    "io_callback": "host callbacks (`io_callback`) are not allowed",
    "callback": "host callbacks (`jax.debug.callback`) are not allowed",
    "host_callback": "host callbacks are not allowed",
    "external_callback": "host callbacks are not allowed",
    "debug": "`jax.debug` (print and callbacks) is not allowed; return values instead of printing",
    "experimental": "`jax.experimental` is not allowed",
    "config": "changing `jax.config` is not allowed",
    "profiler": "`jax.profiler` is not allowed",
    "distributed": "`jax.distributed` is not allowed",
    "extend": "`jax.extend` is not allowed",
    "ffi": "`jax.ffi` (foreign functions) is not allowed",
    "dlpack": "`jax.dlpack` is not allowed",
    "monitoring": "`jax.monitoring` is not allowed",
}

TOP_LEVEL_ALLOWED = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.AnnAssign)


class StaticIssue(BaseModel):
    line: int
    message: str


def format_issues(issues: Iterable[StaticIssue]) -> str:
    """One line per issue, `line N: reason`, in the order of the source."""
    return "\n".join(f"line {issue.line}: {issue.message}" for issue in issues)


def check_source(code: str, target: Target) -> list[StaticIssue]:
    """Check a candidate's source against the rules; an empty list means it passes."""
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
    issues: list[StaticIssue] = []
    try:
        issues += _check_top_level(tree, target)
        for node in ast.walk(tree):
            issues += _check_node(node, target.allowed_modules)
    except RecursionError:
        return [StaticIssue(line=1, message="the code is nested too deeply to check; simplify the expression")]
    unique = {(i.line, i.message): i for i in issues}
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


def _check_top_level(tree: ast.Module, target: Target) -> list[StaticIssue]:
    issues: list[StaticIssue] = []
    definitions: list[ast.FunctionDef] = []
    for index, stmt in enumerate(tree.body):
        is_docstring = (
            index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        )
        if is_docstring:
            continue
        if not isinstance(stmt, TOP_LEVEL_ALLOWED):
            kind = type(stmt).__name__.lower()
            issues.append(
                StaticIssue(
                    line=stmt.lineno,
                    message=f"top-level `{kind}` statement: only imports, constant assignments and "
                    "function definitions may appear at the top level; move this code into a function",
                )
            )
        if isinstance(stmt, ast.FunctionDef) and stmt.name == target.function_name:
            definitions.append(stmt)
        if isinstance(stmt, ast.AsyncFunctionDef) and stmt.name == target.function_name:
            message = f"`{target.function_name}` must not be async"
            issues.append(StaticIssue(line=stmt.lineno, message=message))

    if not definitions:
        issues.append(
            StaticIssue(line=1, message=f"the code must define `{target.signature}` at the top level")
        )
        return issues
    if len(definitions) > 1:
        lines = ", ".join(str(d.lineno) for d in definitions)
        issues.append(
            StaticIssue(
                line=definitions[-1].lineno,
                message=f"`{target.function_name}` is defined more than once (lines {lines}); keep one",
            )
        )
    fn = definitions[-1]
    args = fn.args
    names = tuple(a.arg for a in args.posonlyargs + args.args)
    if (
        names != target.parameters
        or args.vararg is not None
        or args.kwarg is not None
        or args.kwonlyargs
        or args.posonlyargs
    ):
        issues.append(
            StaticIssue(
                line=fn.lineno,
                message=f"`{target.function_name}` must take exactly ({', '.join(target.parameters)}) "
                f"without *args, **kwargs or keyword-only parameters: `{target.signature}`",
            )
        )
    return issues


def _check_node(node: ast.AST, allowed_modules: frozenset[str]) -> list[StaticIssue]:
    line = getattr(node, "lineno", 1)
    issues: list[StaticIssue] = []

    def add(message: str) -> None:
        issues.append(StaticIssue(line=line, message=message))

    allowed = ", ".join(sorted(allowed_modules))
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in allowed_modules:
                add(f"`import {alias.name}` is not allowed; import only {allowed}")
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level:
            add(f"relative imports are not allowed; import only {allowed}")
        elif module not in allowed_modules:
            add(f"`from {module} import ...` is not allowed; import only {allowed}")
        for alias in node.names:
            if alias.name == "*":
                add(f"`from {module} import *` is not allowed; import the names you use")
            elif alias.name.startswith("_"):
                add(f"importing the private name `{alias.name}` is not allowed")
            elif alias.name in FORBIDDEN_ATTRIBUTES:
                add(FORBIDDEN_ATTRIBUTES[alias.name])
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("__"):
            add(f"dunder attribute `.{node.attr}` is not allowed")
        elif node.attr.startswith("_"):
            add(f"private attribute `.{node.attr}` is not allowed; use the public jax API")
        elif node.attr in FORBIDDEN_ATTRIBUTES:
            add(FORBIDDEN_ATTRIBUTES[node.attr])
    elif isinstance(node, ast.Name):
        if node.id in FORBIDDEN_CALLS:
            add(f"{FORBIDDEN_CALLS[node.id]} and is not allowed")
        elif node.id.startswith("__"):
            add(f"the name `{node.id}` is not allowed (no double-underscore names)")
    elif isinstance(node, ast.Call):
        issues += _check_call(node)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
        add("strings containing double underscores are not allowed (they can reach dunder attributes)")
    elif isinstance(node, ast.ClassDef):
        add("class definitions are not allowed; write plain functions")
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        if isinstance(node, ast.AsyncFunctionDef):
            add("async functions are not allowed")
        name = getattr(node, "name", "")
        if name.startswith("__"):
            add(f"the function name `{name}` is not allowed (no double-underscore names)")
    elif isinstance(node, ast.Global):
        add("`global` is not allowed; pass values as arguments or return them")
    elif isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
        add("async code is not allowed")
    return issues


def _check_call(node: ast.Call) -> list[StaticIssue]:
    issues: list[StaticIssue] = []
    line = node.lineno
    if isinstance(node.func, ast.Name) and node.func.id in {"getattr", "hasattr"}:
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            issues.append(
                StaticIssue(
                    line=line,
                    message=f"`{node.func.id}` needs a literal attribute name; write `obj.name` instead",
                )
            )
        elif name.value.startswith("_"):
            issues.append(
                StaticIssue(line=line, message=f"`{node.func.id}` with a private name is not allowed")
            )
        elif name.value in FORBIDDEN_ATTRIBUTES:
            issues.append(StaticIssue(line=line, message=FORBIDDEN_ATTRIBUTES[name.value]))
    for arg in node.args:
        if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Call):
            issues.append(
                StaticIssue(line=line, message="unpacking the result of a call with `*` is not allowed here; "
                            "pass the arguments explicitly")
            )
    for keyword in node.keywords:
        if keyword.arg is None and isinstance(keyword.value, ast.Call):
            issues.append(
                StaticIssue(line=line, message="unpacking the result of a call with `**` is not allowed; "
                            "pass keyword arguments explicitly")
            )
    return issues
