"""The evolution proposer: AST mutation and crossover, an offline baseline with no network.

It is in the spirit of symbolic evolution, but it is not the paper's symbolic method (which distils an
ES-trained network into a formula with PySR): it edits the candidate's source directly.

A parent is picked from the population (the warm start and every candidate that finished `ok`) by a
tournament on score, and its abstract syntax tree is mutated 1..max_mutations times:

- perturb a numeric constant by a relative step,
- swap an operator (+ - * /, comparisons, maximum/minimum, relu/softplus),
- swap one smooth function for a similar one (tanh/arctan/arcsinh, square/abs, exp/expm1),
- wrap a subexpression in a function from a fixed set (tanh, exp, log1p, abs, square, sqrt of abs,
  clip, where), each written so that it stays finite,
- delete a term of a sum or product, or duplicate one (e + k * t),
- crossover: replace a subexpression with one taken from a second parent (scope-checked).

Mutations are drawn by weight (`EvolutionSettings.mutation_weights`: small changes of behaviour first,
deletion last). Only arithmetic subexpressions inside the target function are touched, never slices,
keyword arguments or the structure of the code. Every child passes the static check and is new to the
run (normalised AST hash); then, given a `probe`, the sandbox calls it on the target's fixed inputs: a
child that breaks a rule of the target (for lpo: a drift that is negative, or not zero with a zero
gradient at ratio 1) or computes a function already in the run (the same behaviour fingerprint, such
as a wrapper that changes nothing) is resampled instead of costing a training run. The operator of a
child is its first change; every child tried is counted by operator and fate (`Proposal.attempts`).
The random generator is seeded from (run seed, proposal index), so the same context gives the same child.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Callable

from service.proposers.base import (
    HistoryEntry,
    Probe,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
)
from workers.sandbox.static_check import check_source
from workers.targets import Target, get_target
from workers.vocabulary import Outcome

# Calls whose positional arguments are arrays of the same kind as their result.
ELEMENTWISE = {
    "abs", "clip", "cos", "exp", "expm1", "log", "log1p", "maximum", "minimum", "relu", "sigmoid",
    "sign", "sin", "softplus", "sqrt", "square", "tanh", "where", "elu", "leaky_relu", "gelu", "silu",
    "power", "reciprocal", "logaddexp", "negative",
}  # fmt: skip
WRAPS = ("tanh", "exp", "log1p", "abs", "square", "sqrt_abs", "clip", "where")
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
COMPARES = (ast.Gt, ast.GtE, ast.Lt, ast.LtE)
CALL_SWAPS = {"maximum": "minimum", "minimum": "maximum", "relu": "softplus", "softplus": "relu"}
# One smooth function for another of a similar shape (same module: jnp.tanh -> jnp.arctan).
FUNCTION_SWAPS = {
    "tanh": ("arctan", "arcsinh"), "arctan": ("tanh", "arcsinh"), "arcsinh": ("tanh", "arctan"),
    "square": ("abs",), "abs": ("square",), "exp": ("expm1",), "expm1": ("exp",), "log1p": ("arcsinh",),
}  # fmt: skip
ELEMENTWISE |= {"arctan", "arcsinh"}
CONSTANT_STEP = 0.15  # the standard deviation of log(new / old) of a constant mutation

# What became of a child before training, as counted in `Proposal.attempts` and the run's operator table.
TRIED, BROKE_A_RULE, FAILED_PROBE, BEHAVIOURAL_DUPLICATE = "tried", "broke a rule", "failed the probe", \
    "behavioural duplicate"


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
        if isinstance(node.func, ast.Name):
            return node.func.id
    return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Sites:
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
        return _names(node) - self.module_names <= self.scalars

    def _in_slice(self, node: ast.AST) -> bool:
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
        if self._in_slice(node):
            return False
        if isinstance(node, ast.BinOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)):
            return True
        if _call_name(node) in ELEMENTWISE and not isinstance(node.func, ast.Name):  # type: ignore[attr-defined]
            return True
        parent = self.parent.get(id(node))
        operand = isinstance(node, ast.Name) or (
            isinstance(node, ast.Constant) and type(node.value) in (int, float)
        )
        if operand:
            if isinstance(parent, ast.BinOp | ast.UnaryOp):
                return True
            if _call_name(parent) in ELEMENTWISE and node in parent.args:  # type: ignore[union-attr]
                return not (_call_name(parent) == "where" and parent.args.index(node) == 0)  # type: ignore[union-attr]
        return False


def _replace(parents: dict[int, ast.AST], old: ast.AST, new: ast.AST) -> bool:
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


class _Mutator:
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
        sites = _Sites(module, function, self.scalar_params)
        if kind == "crossover":
            return self._crossover(sites, function, donor) if donor is not None else None
        return getattr(self, f"_{kind}")(sites, function)

    def _swap(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
        """Another operator, comparison or function of the same family."""
        rng = self.rng
        options: list[ast.AST] = [
            n for n in sites.numeric if isinstance(n, ast.BinOp) and isinstance(n.op, BINOPS)
        ]
        options += [
            n for n in ast.walk(function) if isinstance(n, ast.Compare) and isinstance(n.ops[0], COMPARES)
        ]
        options += [n for n in sites.numeric if _call_name(n) in CALL_SWAPS]
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
        name = _call_name(node)
        node.func.attr = CALL_SWAPS[name]  # type: ignore[attr-defined, index]
        return f"{name} -> {CALL_SWAPS[name]}"  # type: ignore[index]

    def _constant(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
        """A constant scaled by a random relative step (about 15%; very rarely its sign flipped)."""
        rng = self.rng
        constants = [
            n for n in ast.walk(function)
            if isinstance(n, ast.Constant) and isinstance(n.value, float) and not sites._in_slice(n)
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

    def _function(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
        """One smooth elementwise function replaced by a similar one."""
        options = [n for n in sites.numeric
                   if _call_name(n) in FUNCTION_SWAPS and isinstance(n.func, ast.Attribute)]  # type: ignore[attr-defined]
        if not options:
            return None
        node = self.rng.choice(options)
        old = _call_name(node)
        new = self.rng.choice(FUNCTION_SWAPS[old])  # type: ignore[index]
        node.func.attr = new  # type: ignore[attr-defined]
        return f"function {old} -> {new}"

    def _wrap(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
        """A subexpression wrapped in a smooth or bounding function."""
        rng = self.rng
        options = [n for n in sites.numeric if id(n) in sites.parent]
        if not options:
            return None
        node = rng.choice(options)
        wrapped, what = self.wrap(node)
        return f"wrap a subexpression in {what}" if _replace(sites.parent, node, wrapped) else None

    def _delete(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
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
        keep_left = isinstance(node.op, ast.Div) or rng.random() < 0.5 or not _names(node.right)
        if keep_left and _names(node.left):
            kept: ast.expr = node.left
        elif isinstance(node.op, ast.Sub):
            kept = ast.UnaryOp(op=ast.USub(), operand=node.right)
        else:
            kept = node.right
        if sites.is_scalar(kept) and not sites.is_scalar(node):
            return None  # an array expression must stay an array
        return "delete a term" if _replace(sites.parent, node, kept) else None

    def _duplicate(self, sites: _Sites, function: ast.FunctionDef) -> str | None:
        """A term added again with a small weight."""
        rng = self.rng
        options = [n for n in sites.numeric if isinstance(n, ast.BinOp) and id(n) in sites.parent]
        if not options:
            return None
        node = rng.choice(options)
        terms = [
            n for n in ast.walk(node) if n is not node and isinstance(n, ast.expr) and n in sites.numeric
        ]
        terms = [t for t in terms if _names(t)]
        if not terms:
            return None
        term = copy.deepcopy(rng.choice(terms))
        k = rng.choice((-1.0, -0.5, -0.1, 0.1, 0.5, 1.0))
        extra = ast.BinOp(left=self._const(k), op=ast.Mult(), right=term)
        new = ast.BinOp(left=node, op=ast.Add(), right=extra)
        if not _replace(sites.parent, node, new):
            return None
        return f"duplicate a term with weight {k:g}"

    def _crossover(self, sites: _Sites, function: ast.FunctionDef, donor: ast.Module) -> str | None:
        """A subexpression replaced by a fitting one from the second parent."""
        rng = self.rng
        donor_fn = _function(donor, function.name)
        if donor_fn is None:
            return None
        donor_sites = _Sites(donor, donor_fn, self.scalar_params)
        pieces = [n for n in donor_sites.numeric if id(n) in donor_sites.scope and _names(n)]
        targets = [n for n in sites.numeric if id(n) in sites.scope and id(n) in sites.parent]
        rng.shuffle(targets)
        for node in targets[:10]:
            fitting = [
                p
                for p in pieces
                if _names(p) <= sites.scope[id(node)]
                and ast.dump(p) != ast.dump(node)
                and (sites.is_scalar(node) or not sites.is_scalar(p))  # an array stays an array
            ]
            if fitting:
                piece = copy.deepcopy(rng.choice(fitting))
                return "crossover with the second parent" if _replace(sites.parent, node, piece) else None
        return None


def _function(module: ast.Module, name: str) -> ast.FunctionDef | None:
    for stmt in module.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
            return stmt
    return None


def _jnp_alias(module: ast.Module) -> str | None:
    for stmt in module.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name == "jax.numpy":
                    return alias.asname or "jax.numpy"
    return None


def _score(entry: HistoryEntry, warm: HistoryEntry) -> float:
    if entry.score is not None:
        return entry.score
    return 1.0 if entry is warm else float("-inf")


class EvolutionProposer:
    """Tournament selection and AST mutation; see the module docstring."""

    def __init__(self, config: ProposerConfig, check: Callable[[str, Target], list] = check_source,
                 probe: Probe | None = None) -> None:
        self.config = config
        self.settings = config.evolution
        self.check = check
        self.probe = probe

    def population(self, context: ProposalContext) -> list[HistoryEntry]:
        """The warm start, then every candidate that finished ok with a score, in index order."""
        warm_id = context.warm_start.candidate_id
        members = [
            e
            for e in context.history
            if e.outcome == Outcome.ok and e.score is not None and e.candidate_id != warm_id
        ]
        return [context.warm_start, *sorted(members, key=lambda e: (e.index, e.candidate_id))]

    def _tournament(
        self, rng: random.Random, population: list[HistoryEntry], warm: HistoryEntry
    ) -> HistoryEntry:
        entrants = [rng.choice(population) for _ in range(self.settings.tournament_size)]
        return max(entrants, key=lambda e: (_score(e, warm), -e.index))

    def propose(self, context: ProposalContext) -> Proposal:
        target = get_target(context.target)
        rng = random.Random(f"{context.seed}:{context.index}")
        population = self.population(context)
        warm = context.warm_start
        duplicates = 0
        problems: list[str] = []
        attempts: dict[str, dict[str, int]] = {}
        probed: Proposal | None = None  # the last child the probe turned down (proposed if nothing better)
        probes = 0

        def count(operator: str, fate: str) -> None:
            attempts.setdefault(operator, {}).setdefault(fate, 0)
            attempts[operator][fate] += 1

        for _ in range(self.settings.max_attempts):
            parent = self._tournament(rng, population, warm)
            second: HistoryEntry | None = None
            if rng.random() < self.settings.crossover_probability:
                second = self._tournament(rng, population, warm)
            child = self._child(rng, target, parent, second)
            if child is None:
                continue
            code, changes, operator = child
            count(operator, TRIED)
            issues = self.check(code, target)
            if issues:
                problems.append(str(issues[0].message))
                count(operator, "static check")
                continue
            digest = ast_hash(code)
            if digest in context.known_hashes or digest == ast_hash(parent.code):
                duplicates += 1
                count(operator, "same code")
                continue
            parent_ids = [parent.candidate_id] + (
                [second.candidate_id] if second and second is not parent else []
            )
            parents = parent.name + (f" and {second.name}" if second and second is not parent else "")
            proposal = Proposal(
                name=f"evo{context.index}_{operator}",
                thought=f"Mutation of {parents}: " + "; ".join(changes) + ".",
                code=code,
                parent_ids=parent_ids,
                ast_hash=digest,
                operator=operator,
            )
            if self.probe is None:
                return self._done(proposal, duplicates, attempts)
            proposal.trace = self.probe(code)
            probes += 1
            fingerprint = proposal.trace.fingerprint
            if proposal.trace.outcome == Outcome.ok and fingerprint not in context.known_fingerprints:
                return self._done(proposal, duplicates, attempts)
            if proposal.trace.outcome == Outcome.ok:
                duplicates += 1
                count(operator, BEHAVIOURAL_DUPLICATE)
            else:
                broke = "breaks a rule" in (proposal.trace.error or "")
                count(operator, BROKE_A_RULE if broke else FAILED_PROBE)
            probed = proposal
            if probes >= self.settings.max_probes:
                break
        if probed is not None:  # the service records it as invalid or as a duplicate: it is never trained
            return self._done(probed, duplicates, attempts)
        detail = f"; last static-check problem: {problems[-1]}" if problems else ""
        raise ProposerUnavailable(
            f"evolution found no new valid child in {self.settings.max_attempts} attempts "
            f"({duplicates} duplicates){detail}"
        )

    def mutate(self, rng: random.Random, target: Target, parent: HistoryEntry, second: HistoryEntry | None = None
               ) -> tuple[str, list[str], str] | None:
        """A mutated copy of `parent`'s code (crossed with `second`'s when given): its code, its changes and its
        operator, or None (what symbolic distillation, `symbolic.py`, evolves with)."""
        return self._child(rng, target, parent, second)

    @staticmethod
    def _done(proposal: Proposal, duplicates: int, attempts: dict[str, dict[str, int]]) -> Proposal:
        proposal.duplicates_skipped, proposal.attempts = duplicates, attempts
        return proposal

    def _child(
        self, rng: random.Random, target: Target, parent: HistoryEntry, second: HistoryEntry | None
    ) -> tuple[str, list[str], str] | None:
        """A mutated copy of the parent's code, its changes, and its operator (the kind of its first change)."""
        try:
            module = ast.parse(parent.code)
            donor = ast.parse(second.code) if second is not None else None
        except SyntaxError:
            return None
        function = _function(module, target.function_name)
        if function is None:
            return None
        jnp = _jnp_alias(module)
        if jnp is None:
            module.body.insert(0, ast.Import(names=[ast.alias(name="jax.numpy", asname="jnp")]))
            jnp = "jnp"
        mutator = _Mutator(rng, jnp, target.scalar_inputs)
        changes: list[str] = []
        kinds: list[str] = []
        if donor is not None:
            change = mutator.mutate(module, function, "crossover", donor)
            if change:
                changes.append(change)
                kinds.append("crossover")
        names = list(self.settings.mutation_weights)
        weights = [self.settings.mutation_weights[n] for n in names]
        total = rng.randint(1, self.settings.max_mutations)  # a successful crossover counts as one of them
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
        _set_docstring(function, f"Evolved from {parent.name}: " + "; ".join(changes) + ".")
        ast.fix_missing_locations(module)
        try:
            code = ast.unparse(module) + "\n"
            compile(code, "<child>", "exec")
        except (SyntaxError, ValueError, RecursionError):
            return None
        return code, changes, kinds[0]


def _set_docstring(function: ast.FunctionDef, text: str) -> None:
    doc = ast.Expr(value=ast.Constant(value=text))
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body[0] = doc
            return
    body.insert(0, doc)
