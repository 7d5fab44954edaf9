"""The subset of Python candidate code is written in, and the checker that holds code to it.

What it lets through can only compute with arrays:
- top level: a docstring, imports of the target's modules, assignments and function definitions;
- inside functions: a docstring, assignments (also `+=` and tuple unpacking), `return`, nested
  function definitions (a scan body) and `lambda`;
- expressions: arithmetic, comparisons, `and`/`or`/`not`, `x if c else y`, constants, tuples and
  lists, indexing and slicing, and calls;
- names: the function's parameters, names the code binds itself, the allowed builtins and the
  target's allowed functions, named through an import (`jnp.clip`, `jax.nn.relu`, `from jax.numpy
  import clip`).
Nothing else: no attribute except naming an allowed function (so no `x.shape`, no method, no
dunder, nothing that reaches the tracer's modules), no other builtin (`len`, `type`, `getattr`,
`print`), no `if`/`for`/`while`/`try`, no decorators, no `*`/`**` unpacking, no annotations. The
code therefore cannot see the shapes or types it is traced with, nor tell one trace from another.
What it computes from array values (a mean over the batch, say) the trainer checks on the artifact
(`workers.trainer.audit`).
"""

from __future__ import annotations

import ast

from pydantic import BaseModel

from workers.targets import Target

ALLOWED_BUILTINS = frozenset({"abs", "min", "max", "float", "int", "sum", "pow"})

# Why some names a model is likely to try are not there (any other unknown name gets a generic line).
FORBIDDEN_NAMES = {
    "eval": "it runs code from a string",
    "exec": "it runs code from a string",
    "compile": "it builds code from a string",
    "open": "it reads or writes files",
    "__import__": "it imports modules dynamically",
    "globals": "it exposes the module's namespace",
    "locals": "it exposes the function's namespace",
    "vars": "it exposes an object's namespace",
    "getattr": "it reaches attributes by name; write `jnp.name` for an allowed function",
    "setattr": "it modifies objects",
    "delattr": "it modifies objects",
    "print": "it runs on the host; return values instead",
    "len": "it reads a shape, and the function must not depend on the size of its inputs",
    "type": "it inspects what the function is traced with",
    "isinstance": "it inspects what the function is traced with",
}

# Names inside jax whose use gets a specific explanation when a candidate names them.
FORBIDDEN_ATTRIBUTES = {
    "pure_callback": "host callbacks (`jax.pure_callback`) are not allowed",
    "io_callback": "host callbacks (`io_callback`) are not allowed",
    "callback": "host callbacks (`jax.debug.callback`) are not allowed",
    "debug": "`jax.debug` (print and callbacks) is not allowed; return values instead of printing",
    "experimental": "`jax.experimental` is not allowed",
    "config": "changing `jax.config` is not allowed",
    "stop_gradient": "`stop_gradient` is not allowed: the gradient must be the gradient of what the function "
                     "computes",
    "custom_vjp": "custom gradients are not allowed: the gradient must be the gradient of what the function "
                  "computes",
    "custom_jvp": "custom gradients are not allowed: the gradient must be the gradient of what the function "
                  "computes",
    "shape": "shapes are not available: the function must not depend on the size of its inputs",
    "ndim": "shapes are not available: the function must not depend on the size of its inputs",
    "size": "shapes are not available: the function must not depend on the size of its inputs",
    "dtype": "dtypes are not available; inputs are float32",
}

EXPRESSIONS = (
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Attribute, ast.Name, ast.Constant,
    ast.Tuple, ast.List, ast.Subscript, ast.Slice, ast.Lambda,
)
# Parts of the tree that are not statements or expressions and are checked through their parents.
STRUCTURE = (
    ast.Module, ast.arguments, ast.arg, ast.keyword, ast.alias, ast.Load, ast.Store, ast.operator, ast.unaryop,
    ast.boolop, ast.cmpop, ast.expr_context,
)
FORBIDDEN_COMPARISONS = (ast.Is, ast.IsNot, ast.In, ast.NotIn)


class StaticIssue(BaseModel):
    line: int
    message: str


def describe_subset(target: Target) -> str:
    """The subset in a few lines, for the proposer's prompt."""
    modules = ", ".join(f"`{m}`" for m in sorted(target.allowed_modules))
    builtins = ", ".join(f"`{b}`" for b in sorted(ALLOWED_BUILTINS))
    return (
        f"- The code is a small subset of Python: imports of {modules}; assignments; `return`; function "
        "definitions (nested ones too, for a scan body) and `lambda`; arithmetic, comparisons, "
        "`x if c else y`, tuples, lists, indexing and slicing; calls of array functions named through their "
        f"module (`jnp.clip`, `jax.nn.relu`, `jax.lax.scan`) and of {builtins}.\n"
        "- Not allowed: attributes of arrays or methods (`x.shape`, `x.sum()`: write `jnp.sum(x)`), `len`, "
        "`if`/`for`/`while` statements (use `jnp.where`, `jax.lax.scan`), decorators, classes, `try`, "
        "`*args`, type annotations, `stop_gradient` and custom gradients."
    )


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _statement_not_allowed(stmt: ast.stmt) -> str:
    kind = type(stmt).__name__.lower()
    hints = {
        "if": "`if` statements are not allowed; choose values with `jnp.where`",
        "for": "`for` loops are not allowed; loop with `jax.lax.scan` or `jax.lax.fori_loop`",
        "while": "`while` loops are not allowed; loop with `jax.lax.scan` or `jax.lax.fori_loop`",
        "classdef": "class definitions are not allowed; write plain functions",
        "global": "`global` is not allowed; pass values as arguments or return them",
        "nonlocal": "`nonlocal` is not allowed; pass values as arguments or return them",
        "asyncfunctiondef": "async functions are not allowed",
    }
    return hints.get(kind, f"`{kind}` statements are not allowed in candidate code")


def _attribute_path(node: ast.Attribute) -> tuple[ast.expr, list[str]]:
    """`a.b.c` -> (the node `a`, ["b", "c"])."""
    parts: list[str] = []
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    return value, parts[::-1]


class SubsetChecker:
    """One pass over the tree: imports bind qualified names, then every node is checked against the subset."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.issues: list[StaticIssue] = []
        self.imported: dict[str, str] = {}  # local name -> qualified name (a module or an allowed function)
        self.bound: set[str] = set()  # names the code binds itself: parameters, assignments, definitions

    def add(self, node: ast.AST, message: str) -> None:
        self.issues.append(StaticIssue(line=getattr(node, "lineno", 1), message=message))

    def check_module(self, tree: ast.Module) -> None:
        body = tree.body[1:] if tree.body and _is_docstring(tree.body[0]) else tree.body
        for stmt in body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self.check_import(stmt)
        for node in ast.walk(tree):
            self.collect_bindings(node)
        for stmt in body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                continue
            if isinstance(stmt, ast.Assign | ast.FunctionDef):
                self.check_statement(stmt)
            elif isinstance(stmt, ast.ClassDef):
                self.add(stmt, _statement_not_allowed(stmt))
            else:
                kind = type(stmt).__name__.lower()
                self.add(stmt, f"top-level `{kind}` statement: only imports, assignments and function definitions "
                               "may appear at the top level")
        self.check_target_function(body)

    # Imports and bindings

    def check_import(self, stmt: ast.Import | ast.ImportFrom) -> None:
        modules, functions = self.target.allowed_modules, self.target.allowed_functions
        allowed = ", ".join(sorted(modules))
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name not in modules:
                    self.add(stmt, f"`import {alias.name}` is not allowed; import only {allowed}")
                elif alias.asname:
                    self.bind_import(stmt, alias.asname, alias.name)
                else:
                    top = alias.name.split(".")[0]
                    self.bind_import(stmt, top, top)
            return
        module = stmt.module or ""
        if stmt.level:
            self.add(stmt, f"relative imports are not allowed; import only {allowed}")
            return
        if module not in modules:
            self.add(stmt, f"`from {module} import ...` is not allowed; import only {allowed}")
            return
        for alias in stmt.names:
            qualified = f"{module}.{alias.name}"
            if alias.name == "*":
                self.add(stmt, f"`from {module} import *` is not allowed; import the names you use")
            elif qualified in modules or qualified in functions:
                self.bind_import(stmt, alias.asname or alias.name, qualified)
            else:
                self.add(stmt, self.unknown_attribute(qualified))

    def bind_import(self, node: ast.AST, name: str, qualified: str) -> None:
        if self.imported.get(name, qualified) != qualified:
            self.add(node, f"`{name}` is imported twice as different things")
        self.imported[name] = qualified

    def collect_bindings(self, node: ast.AST) -> None:
        names: list[tuple[ast.AST, str]] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.append((node, node.name))
        if isinstance(node, ast.arguments):
            names += [(a, a.arg) for a in (*node.posonlyargs, *node.args, *node.kwonlyargs)]
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append((node, node.id))
        for where, name in names:
            if name in self.imported:
                self.add(where, f"`{name}` names an import and cannot be bound again")
            elif name.startswith("__"):
                self.add(where, f"the name `{name}` is not allowed (no double-underscore names)")
            self.bound.add(name)

    def check_target_function(self, body: list[ast.stmt]) -> None:
        target = self.target
        definitions = [s for s in body if isinstance(s, ast.FunctionDef) and s.name == target.function_name]
        if not definitions:
            message = f"the code must define `{target.signature}` at the top level"
            self.issues.append(StaticIssue(line=1, message=message))
            return
        if len(definitions) > 1:
            lines = ", ".join(str(d.lineno) for d in definitions)
            self.add(definitions[-1], f"`{target.function_name}` is defined more than once (lines {lines}); keep one")
        args = definitions[-1].args
        names = tuple(a.arg for a in args.posonlyargs + args.args)
        if names != target.parameters or args.posonlyargs or args.kwonlyargs or args.defaults:
            self.add(definitions[-1], f"`{target.function_name}` must take exactly ({', '.join(target.parameters)}) "
                                      f"without *args, **kwargs, defaults or keyword-only parameters: "
                                      f"`{target.signature}`")

    # Statements

    def check_statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.FunctionDef):
            self.check_function(stmt)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self.check_store(target)
            self.check_expression(stmt.value)
        elif isinstance(stmt, ast.AugAssign):
            if not isinstance(stmt.target, ast.Name):
                self.add(stmt, "only a plain name can be updated with `+=` and the like")
            self.check_expression(stmt.target)
            self.check_expression(stmt.value)
        elif isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self.check_expression(stmt.value)
        elif isinstance(stmt, ast.Expr):
            self.add(stmt, "an expression on its own line has no effect here; assign it or return it")
            self.check_expression(stmt.value)
        elif not isinstance(stmt, ast.Pass):
            self.add(stmt, _statement_not_allowed(stmt))

    def check_function(self, fn: ast.FunctionDef | ast.Lambda) -> None:
        if isinstance(fn, ast.FunctionDef):
            for decorator in fn.decorator_list:
                self.add(decorator, "decorators are not allowed; call functions explicitly")
            if fn.returns is not None:
                self.add(fn, "type annotations are not allowed; remove them")
        args = fn.args
        if args.vararg or args.kwarg:
            self.add(fn, "`*args` and `**kwargs` parameters are not allowed; name every parameter")
        if any(a.annotation is not None for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)):
            self.add(fn, "type annotations are not allowed; remove them")
        for default in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self.check_expression(default)
        if isinstance(fn, ast.Lambda):
            self.check_expression(fn.body)
            return
        body = fn.body[1:] if _is_docstring(fn.body[0]) else fn.body
        for stmt in body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self.add(stmt, "imports belong at the top of the file, not inside a function")
                self.check_import(stmt)
            else:
                self.check_statement(stmt)

    def check_store(self, node: ast.expr) -> None:
        if isinstance(node, ast.Tuple | ast.List):
            for element in node.elts:
                self.check_store(element)
        elif not isinstance(node, ast.Name):
            self.add(node, "only names (or tuples of names) can be assigned; arrays cannot be changed in place")

    # Expressions

    def check_expression(self, node: ast.expr) -> None:
        stack: list[ast.AST] = [node]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Attribute):
                base, _ = _attribute_path(node)
                self.check_attribute(node)
                if not (isinstance(base, ast.Name) and base.id in self.imported):
                    stack.append(base)  # a module name is checked with its attribute; anything else on its own
                continue
            if isinstance(node, ast.Lambda):
                self.check_function(node)
                continue
            if not isinstance(node, EXPRESSIONS + STRUCTURE):
                self.add(node, self.unsupported(node))
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                self.check_name(node)
            elif isinstance(node, ast.Constant):
                self.check_constant(node)
            elif isinstance(node, ast.Compare) and any(isinstance(op, FORBIDDEN_COMPARISONS) for op in node.ops):
                self.add(node, "`is` and `in` are not allowed; compare values with `==`, `<` and the like")
            elif isinstance(node, ast.keyword) and node.arg is None:
                self.add(node.value, "unpacking with `**` is not allowed; pass keyword arguments explicitly")
            stack.extend(ast.iter_child_nodes(node))

    def unsupported(self, node: ast.AST) -> str:
        if isinstance(node, ast.Starred):
            return "unpacking with `*` is not allowed; pass the arguments explicitly"
        if isinstance(node, ast.JoinedStr | ast.FormattedValue):
            return "f-strings are not allowed"
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp):
            return "comprehensions are not allowed; use array functions (`jnp.stack`, `jax.lax.scan`)"
        return f"`{type(node).__name__}` expressions are not allowed in candidate code"

    def check_name(self, node: ast.Name) -> None:
        name = node.id
        if name in self.imported:
            qualified = self.imported[name]
            if qualified in self.target.allowed_modules:
                self.add(node, f"the module `{name}` can only be used to name a function, as in `{name}.<function>`")
        elif name in self.bound or name in ALLOWED_BUILTINS:
            return
        elif name in FORBIDDEN_NAMES:
            self.add(node, f"`{name}` is not allowed: {FORBIDDEN_NAMES[name]}")
        elif name.startswith("__"):
            self.add(node, f"the name `{name}` is not allowed (no double-underscore names)")
        else:
            builtins = ", ".join(sorted(ALLOWED_BUILTINS))
            self.add(node, f"the name `{name}` is not available: use the parameters, your own names, imported array "
                           f"functions and the builtins {builtins}")

    def check_constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, bytes):
            self.add(node, "bytes constants are not allowed")
        elif isinstance(node.value, str) and "__" in node.value:
            self.add(node, "strings containing double underscores are not allowed (they can reach dunder attributes)")

    def check_attribute(self, node: ast.Attribute) -> None:
        base, parts = _attribute_path(node)
        dotted = ".".join(parts)
        for part in parts:
            if part.startswith("__"):
                self.add(node, f"dunder attribute `.{part}` is not allowed")
                return
            if part.startswith("_"):
                self.add(node, f"private attribute `.{part}` is not allowed; use the public jax API")
                return
        if not (isinstance(base, ast.Name) and base.id in self.imported):
            shown = f"{base.id}.{dotted}" if isinstance(base, ast.Name) else f"(...).{dotted}"
            reason = next((FORBIDDEN_ATTRIBUTES[p] for p in parts if p in FORBIDDEN_ATTRIBUTES), None)
            self.add(node, reason or f"`{shown}`: attributes are only for naming an allowed function (such as "
                                     "`jnp.clip`); arrays have no usable attributes or methods here, so write "
                                     "`jnp.sum(x)` rather than `x.sum()`")
            return
        qualified = f"{self.imported[base.id]}.{dotted}"
        if qualified not in self.target.allowed_functions:
            self.add(node, self.unknown_attribute(qualified))

    def unknown_attribute(self, qualified: str) -> str:
        reason = next((FORBIDDEN_ATTRIBUTES[p] for p in qualified.split(".") if p in FORBIDDEN_ATTRIBUTES), None)
        return reason or f"`{qualified}` is not one of the allowed array functions"
