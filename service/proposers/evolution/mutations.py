"""The evolution's mutation operators, and one child made from a parent's code with them.

A child is its parent's abstract syntax tree mutated 1..max_mutations times:

- perturb a numeric constant by a relative step,
- swap an operator (+ - * /, comparisons, maximum/minimum, relu/softplus),
- swap one smooth function for a similar one (tanh/arctan/arcsinh, square/abs, exp/expm1),
- wrap a subexpression in a function from a fixed set (tanh, exp, log1p, abs, square, sqrt of abs,
  clip, where), each written so that it stays finite,
- delete a term of a sum or product, or duplicate one (e + k * t),
- crossover: replace a subexpression with one taken from a second parent (scope-checked).

Mutations are drawn by weight (`EvolutionSettings.mutation_weights`: small changes of behaviour first,
deletion last). Only arithmetic subexpressions inside the target function are touched (`sites.py`). The
operator of a child is its first change.
"""

from __future__ import annotations

import ast
import copy
import random

from service.proposers.base import EvolutionSettings, HistoryEntry
from service.proposers.evolution.sites import Sites, call_name, find_function, jnp_alias, names_in, replace
from workers.targets import Target

WRAPS = ("tanh", "exp", "log1p", "abs", "square", "sqrt_abs", "clip", "where")
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
COMPARES = (ast.Gt, ast.GtE, ast.Lt, ast.LtE)
CALL_SWAPS = {"maximum": "minimum", "minimum": "maximum", "relu": "softplus", "softplus": "relu"}
# One smooth function for another of a similar shape (same module: jnp.tanh -> jnp.arctan).
FUNCTION_SWAPS = {
    "tanh": ("arctan", "arcsinh"), "arctan": ("tanh", "arcsinh"), "arcsinh": ("tanh", "arctan"),
    "square": ("abs",), "abs": ("square",), "exp": ("expm1",), "expm1": ("exp",), "log1p": ("arcsinh",),
}  # fmt: skip
CONSTANT_STEP = 0.15  # the standard deviation of log(new / old) of a constant mutation


class Mutator:
    """Applies one random mutation to a module in place; returns a short description or None."""

    def __init__(self, rng: random.Random, jnp: str, scalar_params: frozenset[str]) -> None:
        self.rng = rng
        self.jnp = jnp
        self.scalar_params = scalar_params

    def _jnp(self, name: str, *args: ast.expr) -> ast.Call:
        return ast.Call(
            func=ast.Attribute(value=ast.Name(id=self.jnp, ctx=ast.Load()), attr=name, ctx=ast.Load()),
            args=list(args),
            keywords=[],
        )

    @staticmethod
    def _const(value: float) -> ast.Constant:
        return ast.Constant(value=float(f"{value:.4g}"))

    def wrap(self, node: ast.expr) -> tuple[ast.expr, str]:
        kind = self.rng.choice(WRAPS)
        x = node
        if kind == "exp":
            return self._jnp("exp", self._jnp("clip", x, self._const(-10.0), self._const(10.0))), "exp"
        if kind == "log1p":
            return self._jnp("log1p", self._jnp("abs", x)), "log1p of abs"
        if kind == "sqrt_abs":
            return self._jnp(
                "sqrt", ast.BinOp(left=self._jnp("abs", x), op=ast.Add(), right=self._const(1e-8))
            ), ("sqrt of abs")
        if kind == "clip":
            bound = self.rng.choice((0.5, 1.0, 2.0, 5.0))
            return self._jnp("clip", x, self._const(-bound), self._const(bound)), f"clip to ±{bound}"
        if kind == "where":
            slope = self.rng.choice((0.0, 0.5, 2.0))
            condition = ast.Compare(left=copy.deepcopy(x), ops=[ast.Gt()], comparators=[self._const(0.0)])
            scaled = ast.BinOp(left=self._const(slope), op=ast.Mult(), right=copy.deepcopy(x))
            return self._jnp("where", condition, x, scaled), f"where(x > 0, x, {slope} * x)"
        return self._jnp(kind, x), kind

    def mutate(
        self, module: ast.Module, function: ast.FunctionDef, kind: str, donor: ast.Module | None
    ) -> str | None:
        """Apply the mutation `kind` (a MutationName, or "crossover" with a donor); None if it found no site."""
        sites = Sites(module, function, self.scalar_params)
        if kind == "crossover":
            return self._crossover(sites, function, donor) if donor is not None else None
        return getattr(self, f"_{kind}")(sites, function)

    def _swap(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """Another operator, comparison or function of the same family."""
        rng = self.rng
        options: list[ast.AST] = [
            n for n in sites.numeric if isinstance(n, ast.BinOp) and isinstance(n.op, BINOPS)
        ]
        options += [
            n for n in ast.walk(function) if isinstance(n, ast.Compare) and isinstance(n.ops[0], COMPARES)
        ]
        options += [n for n in sites.numeric if call_name(n) in CALL_SWAPS]
        if not options:
            return None
        node = rng.choice(options)
        if isinstance(node, ast.BinOp):
            old = type(node.op)
            new_op = rng.choice([op for op in BINOPS if op is not old])
            node.op = new_op()
            if new_op is ast.Div and not isinstance(node.right, ast.Constant):
                node.right = ast.BinOp(
                    left=node.right, op=ast.Add(), right=self._const(1e-8)
                )  # stays finite
            return f"operator {old.__name__} -> {new_op.__name__}"
        if isinstance(node, ast.Compare):
            old = type(node.ops[0])
            new_cmp = rng.choice([op for op in COMPARES if op is not old])
            node.ops = [new_cmp()]
            return f"comparison {old.__name__} -> {new_cmp.__name__}"
        name = call_name(node)
        node.func.attr = CALL_SWAPS[name]  # type: ignore[attr-defined, index]
        return f"{name} -> {CALL_SWAPS[name]}"  # type: ignore[index]

    def _constant(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """A constant scaled by a random relative step (about 15%; very rarely its sign flipped)."""
        rng = self.rng
        constants = [
            n for n in ast.walk(function)
            if isinstance(n, ast.Constant) and isinstance(n.value, float) and not sites.in_slice(n)
        ]  # fmt: skip
        constants += [n for n in sites.numeric if isinstance(n, ast.Constant) and type(n.value) is int]
        if not constants:
            return None
        node = rng.choice(constants)
        old_value = float(node.value)
        for _ in range(10):
            if old_value == 0.0:
                value = rng.gauss(0.0, 0.1)
            else:
                value = old_value * rng.lognormvariate(0.0, CONSTANT_STEP)
                if rng.random() < 0.02:
                    value = -value
            value = float(f"{value:.4g}")
            if value != old_value:
                break
        node.value = value
        return f"constant {old_value:g} -> {value:g}"

    def _function(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """One smooth elementwise function replaced by a similar one."""
        options = [n for n in sites.numeric
                   if call_name(n) in FUNCTION_SWAPS and isinstance(n.func, ast.Attribute)]  # type: ignore[attr-defined]
        if not options:
            return None
        node = self.rng.choice(options)
        old = call_name(node)
        new = self.rng.choice(FUNCTION_SWAPS[old])  # type: ignore[index]
        node.func.attr = new  # type: ignore[attr-defined]
        return f"function {old} -> {new}"

    def _wrap(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """A subexpression wrapped in a smooth or bounding function."""
        rng = self.rng
        options = [n for n in sites.numeric if id(n) in sites.parent]
        if not options:
            return None
        node = rng.choice(options)
        wrapped, what = self.wrap(node)
        return f"wrap a subexpression in {what}" if replace(sites.parent, node, wrapped) else None

    def _delete(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """A binary term replaced by one of its operands."""
        rng = self.rng
        options = [
            n for n in sites.numeric
            if isinstance(n, ast.BinOp) and isinstance(n.op, BINOPS) and id(n) in sites.parent
            and any(isinstance(x, ast.Name) for x in ast.walk(n.left) if x is not None)
        ]  # fmt: skip
        if not options:
            return None
        node = rng.choice(options)
        keep_left = isinstance(node.op, ast.Div) or rng.random() < 0.5 or not names_in(node.right)
        if keep_left and names_in(node.left):
            kept: ast.expr = node.left
        elif isinstance(node.op, ast.Sub):
            kept = ast.UnaryOp(op=ast.USub(), operand=node.right)
        else:
            kept = node.right
        if sites.is_scalar(kept) and not sites.is_scalar(node):
            return None  # an array expression must stay an array
        return "delete a term" if replace(sites.parent, node, kept) else None

    def _duplicate(self, sites: Sites, function: ast.FunctionDef) -> str | None:
        """A term added again with a small weight."""
        rng = self.rng
        options = [n for n in sites.numeric if isinstance(n, ast.BinOp) and id(n) in sites.parent]
        if not options:
            return None
        node = rng.choice(options)
        terms = [
            n for n in ast.walk(node) if n is not node and isinstance(n, ast.expr) and n in sites.numeric
        ]
        terms = [t for t in terms if names_in(t)]
        if not terms:
            return None
        term = copy.deepcopy(rng.choice(terms))
        k = rng.choice((-1.0, -0.5, -0.1, 0.1, 0.5, 1.0))
        extra = ast.BinOp(left=self._const(k), op=ast.Mult(), right=term)
        new = ast.BinOp(left=node, op=ast.Add(), right=extra)
        if not replace(sites.parent, node, new):
            return None
        return f"duplicate a term with weight {k:g}"

    def _crossover(self, sites: Sites, function: ast.FunctionDef, donor: ast.Module) -> str | None:
        """A subexpression replaced by a fitting one from the second parent."""
        rng = self.rng
        donor_fn = find_function(donor, function.name)
        if donor_fn is None:
            return None
        donor_sites = Sites(donor, donor_fn, self.scalar_params)
        pieces = [n for n in donor_sites.numeric if id(n) in donor_sites.scope and names_in(n)]
        targets = [n for n in sites.numeric if id(n) in sites.scope and id(n) in sites.parent]
        rng.shuffle(targets)
        for node in targets[:10]:
            fitting = [
                p
                for p in pieces
                if names_in(p) <= sites.scope[id(node)]
                and ast.dump(p) != ast.dump(node)
                and (sites.is_scalar(node) or not sites.is_scalar(p))  # an array stays an array
            ]
            if fitting:
                piece = copy.deepcopy(rng.choice(fitting))
                return "crossover with the second parent" if replace(sites.parent, node, piece) else None
        return None


def make_child(
    rng: random.Random, target: Target, settings: EvolutionSettings, parent: HistoryEntry, second: HistoryEntry | None
) -> tuple[str, list[str], str] | None:
    """A mutated copy of the parent's code, its changes, and its operator (the kind of its first change)."""
    try:
        module = ast.parse(parent.code)
        donor = ast.parse(second.code) if second is not None else None
    except SyntaxError:
        return None
    function = find_function(module, target.function_name)
    if function is None:
        return None
    jnp = jnp_alias(module)
    if jnp is None:
        module.body.insert(0, ast.Import(names=[ast.alias(name="jax.numpy", asname="jnp")]))
        jnp = "jnp"
    mutator = Mutator(rng, jnp, target.scalar_inputs)
    changes: list[str] = []
    kinds: list[str] = []
    if donor is not None:
        change = mutator.mutate(module, function, "crossover", donor)
        if change:
            changes.append(change)
            kinds.append("crossover")
    names = list(settings.mutation_weights)
    weights = [settings.mutation_weights[n] for n in names]
    total = rng.randint(1, settings.max_mutations)  # a successful crossover counts as one of them
    for _ in range(3 * total):
        if len(changes) >= total:
            break
        kind = rng.choices(names, weights=weights)[0]
        change = mutator.mutate(module, function, kind, None)
        if change:
            changes.append(change)
            kinds.append(kind)
    if not changes:
        return None
    set_docstring(function, f"Evolved from {parent.name}: " + "; ".join(changes) + ".")
    ast.fix_missing_locations(module)
    try:
        code = ast.unparse(module) + "\n"
        compile(code, "<child>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return code, changes, kinds[0]


def set_docstring(function: ast.FunctionDef, text: str) -> None:
    """Make `text` the function's docstring (replacing the one it has)."""
    doc = ast.Expr(value=ast.Constant(value=text))
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body[0] = doc
            return
    body.insert(0, doc)
