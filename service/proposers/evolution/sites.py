"""Where the evolution's mutations may act: the arithmetic subexpressions of a candidate's function.

`Sites` reads one function of a parsed module: which nodes are arithmetic values (never slices, keyword
arguments or the structure of the code), their parents, which names are scalars, and which names each
top-level statement can read (for crossover). The small helpers find the function and the `jax.numpy`
alias, and put one node in another's place.
"""

from __future__ import annotations

import ast

# Calls whose positional arguments are arrays of the same kind as their result.
ELEMENTWISE = {
    "abs", "clip", "cos", "exp", "expm1", "log", "log1p", "maximum", "minimum", "relu", "sigmoid",
    "sign", "sin", "softplus", "sqrt", "square", "tanh", "where", "elu", "leaky_relu", "gelu", "silu",
    "power", "reciprocal", "logaddexp", "negative", "arctan", "arcsinh",
}  # fmt: skip


def call_name(node: ast.AST) -> str | None:
    """The called function's name (`jnp.tanh(x)`: "tanh"), or None when `node` is not a call."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
        if isinstance(node.func, ast.Name):
            return node.func.id
    return None


def names_in(node: ast.AST) -> set[str]:
    """Every name the expression reads or writes."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class Sites:
    """The arithmetic subexpressions of one function that mutations may touch, with their parents.

    `scope[id(node)]` is the set of names readable at that node when it lies in a top-level
    statement of the function (for crossover), and missing inside nested functions.
    """

    def __init__(self, module: ast.Module, function: ast.FunctionDef, scalar_params: frozenset[str]) -> None:
        self.parent: dict[int, ast.AST] = {}
        self.numeric: list[ast.expr] = []
        self.scope: dict[int, frozenset[str]] = {}
        module_names: set[str] = set()
        for stmt in module.body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                module_names |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
        for node in ast.walk(function):
            for child in ast.iter_child_nodes(node):
                self.parent[id(child)] = node
        for node in ast.walk(function):
            if isinstance(node, ast.expr) and self._is_numeric(node):
                self.numeric.append(node)
        self.module_names = frozenset(module_names)
        self.scalars = set(scalar_params)
        for stmt in function.body:  # locals computed from scalars only (b1 = 0.9, t = iteration + 1.0)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                pairs: list[tuple[ast.expr, ast.expr]] = [(stmt.targets[0], stmt.value)]
                if isinstance(stmt.value, ast.Tuple) and isinstance(stmt.targets[0], ast.Tuple):
                    pairs = list(zip(stmt.targets[0].elts, stmt.value.elts, strict=False))
                for name, value in pairs:
                    if isinstance(name, ast.Name) and self.is_scalar(value):
                        self.scalars.add(name.id)
        available = module_names | {a.arg for a in function.args.args}
        for stmt in function.body:
            if not isinstance(stmt, ast.FunctionDef):
                for node in ast.walk(stmt):
                    self.scope[id(node)] = frozenset(available)
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    available.add(node.id)
            if isinstance(stmt, ast.FunctionDef):
                available.add(stmt.name)

    def is_scalar(self, node: ast.AST) -> bool:
        """True when the expression reads only scalar inputs and constants (so it cannot be an array)."""
        return names_in(node) - self.module_names <= self.scalars

    def in_slice(self, node: ast.AST) -> bool:
        """True when the node lies in a subscript's slice or a keyword argument (never mutated)."""
        child, parent = node, self.parent.get(id(node))
        while parent is not None:
            if isinstance(parent, ast.Subscript) and child is parent.slice:
                return True
            if isinstance(parent, ast.keyword | ast.FunctionDef | ast.stmt):
                return isinstance(parent, ast.keyword)
            child, parent = parent, self.parent.get(id(parent))
        return False

    def _is_numeric(self, node: ast.expr) -> bool:
        """An arithmetic value: a BinOp, a negation, an elementwise call, or an operand of one."""
        if self.in_slice(node):
            return False
        if isinstance(node, ast.BinOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)):
            return True
        if call_name(node) in ELEMENTWISE and not isinstance(node.func, ast.Name):  # type: ignore[attr-defined]
            return True
        parent = self.parent.get(id(node))
        operand = isinstance(node, ast.Name) or (
            isinstance(node, ast.Constant) and type(node.value) in (int, float)
        )
        if operand:
            if isinstance(parent, ast.BinOp | ast.UnaryOp):
                return True
            if call_name(parent) in ELEMENTWISE and node in parent.args:  # type: ignore[union-attr]
                return not (call_name(parent) == "where" and parent.args.index(node) == 0)  # type: ignore[union-attr]
        return False


def replace(parents: dict[int, ast.AST], old: ast.AST, new: ast.AST) -> bool:
    """Put `new` where `old` is in its parent node; False when `old` has no replaceable slot."""
    parent = parents.get(id(old))
    if parent is None:
        return False
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return True
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return True
    return False


def find_function(module: ast.Module, name: str) -> ast.FunctionDef | None:
    """The top-level function `name` of the module, or None."""
    for stmt in module.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
            return stmt
    return None


def jnp_alias(module: ast.Module) -> str | None:
    """The name the module imports `jax.numpy` as (`import jax.numpy as jnp`: "jnp"), or None."""
    for stmt in module.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name == "jax.numpy":
                    return alias.asname or "jax.numpy"
    return None
