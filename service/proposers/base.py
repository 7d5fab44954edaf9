"""The proposer boundary: what a proposer is given, what it returns, and how it is chosen.

Proposers are database-free. The service builds a `ProposalContext` from the database (the run's
seed, the proposal's index, the warm start and the history of candidates with their results) and
stores the `Proposal` it gets back, including every language-model call made on the way.

`ast_hash` is the run's identity of a candidate: two programs that differ only in formatting,
comments, docstrings, local variable names or import aliases hash the same, so neither proposer
offers the same algorithm twice in one run.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from workers.results import TraceResult
from workers.sandbox.static_check import MAX_NESTING, ast_depth
from workers.vocabulary import Outcome


class HistoryEntry(BaseModel):
    """One earlier candidate of the run as a proposer sees it."""

    candidate_id: str
    index: int  # the proposal index within the run (the warm start is -1 or 0, by the service's choice)
    name: str
    thought: str = ""
    code: str
    outcome: Outcome | None = None  # None: not evaluated yet
    score: float | None = None  # normalised fitness: the warm start scores 1.0, higher is better
    # Its interval and verdict (a stored workers.results.Comparison: the verification's when it was raced, else
    # the search's), so the model sees which differences are noise.
    comparison: dict[str, Any] | None = None
    error: str | None = None  # readable error when the outcome is not ok
    parent_ids: list[str] = Field(default_factory=list)
    # The model's own final reply that produced this candidate (the conversation history mode replays it);
    # None when no model made it, or when the service did not load it.
    reply: str | None = None


class LLMSettings(BaseModel):
    """How to talk to one OpenAI-compatible endpoint and model (per run; never the API key)."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None  # None: the server's settings (DISCOVERY_OPENAI_BASE_URL) or OpenAI's
    temperature: float | None = 1.0  # None: not sent
    send_temperature: bool = True  # False: not sent either (reasoning models reject it)
    max_tokens: int | None = 4096  # sent as max_tokens, unless max_completion_tokens is set
    max_completion_tokens: int | None = None  # set: sent instead of max_tokens (reasoning models need it)
    reasoning_effort: Literal["low", "medium", "high"] | None = None  # sent only when set
    seed: int | None = None  # sent as the request's `seed` when set (the spec's seed plus the proposal's index)
    json_mode: bool = True  # send the reply's JSON schema as response_format (json_object where refused)
    price_per_1k_prompt_tokens: float | None = None  # USD per 1000 prompt tokens; None: cost not counted
    price_per_1k_completion_tokens: float | None = None
    request_timeout_seconds: float = 120.0
    max_attempts: int = Field(default=5, ge=1)  # per request, on network errors, 429 and 5xx
    backoff_seconds: float = 1.0  # first wait; doubles per attempt
    backoff_max_seconds: float = 30.0  # cap for our own waits and for a server's Retry-After
    format_retries: int = Field(default=2, ge=0)  # re-asks after a reply that is not the JSON we want
    repair_attempts: int = Field(default=1, ge=0)  # re-asks with the static check's errors
    duplicate_retries: int = Field(default=3, ge=0)  # re-asks when the code is already in the run


HistoryMode = Literal["bounded", "conversation", "none"]


class HistorySettings(BaseModel):
    """What of the run's history goes into a prompt.

    `bounded`: one user message with the warm start, the best k, the most recent m and the latest
    failures. `conversation`: the paper's protocol, one multi-turn chat with every earlier proposal as
    the model's own reply followed by its feedback (the oldest turns beyond `max_turns` are dropped;
    the warm start's message stays). `none`: only the warm start, never an earlier candidate.
    """

    mode: HistoryMode = "bounded"
    max_turns: int = Field(default=30, ge=1)  # conversation mode: earlier proposals kept as turns
    best_k: int = Field(default=5, ge=0)
    recent_m: int = Field(default=5, ge=0)
    failures_f: int = Field(default=3, ge=0)
    max_error_chars: int = Field(default=1500, ge=100)


MutationName = Literal["constant", "swap", "function", "wrap", "duplicate", "delete"]

# Small changes of behaviour first (a constant by a relative step, one operator, one smooth function for
# another); deleting structure is the rarest, because it is what most often destroys a working algorithm.
DEFAULT_MUTATION_WEIGHTS: dict[str, float] = {
    "constant": 4.0, "swap": 2.0, "function": 2.0, "wrap": 1.0, "duplicate": 1.0, "delete": 0.5,
}


class EvolutionSettings(BaseModel):
    """The symbolic-evolution baseline: tournament selection and AST mutation."""

    tournament_size: int = Field(default=3, ge=1)
    # Crossover grafts a piece of another parent: a large change, which rarely keeps a drift working
    # (bench/discovery_yield.py: none of its children came within 20% of the warm start on Breakout).
    crossover_probability: float = Field(default=0.05, ge=0.0, le=1.0)
    max_mutations: int = Field(default=2, ge=1)  # each child gets 1..max_mutations mutations
    max_attempts: int = Field(default=50, ge=1)  # tries to find a valid, new child
    max_probes: int = Field(default=8, ge=1)  # children probed in the sandbox per proposal (rules, behaviour)
    mutation_weights: dict[MutationName, float] = Field(default_factory=lambda: dict(DEFAULT_MUTATION_WEIGHTS))


class ProposerConfig(BaseModel):
    kind: Literal["llm", "evolution"] = "evolution"
    llm: LLMSettings = Field(default_factory=LLMSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    evolution: EvolutionSettings = Field(default_factory=EvolutionSettings)


class ProposalContext(BaseModel):
    """Everything a proposer may know when it makes proposal number `index` of a run."""

    run_id: str
    target: str
    seed: int
    index: int
    warm_start: HistoryEntry
    history: list[HistoryEntry] = Field(default_factory=list)  # the run's other candidates
    known_hashes: set[str] = Field(default_factory=set)  # ast_hash of every candidate already in the run
    # behaviour fingerprint -> name of the candidate of the run that computes it
    known_fingerprints: dict[str, str] = Field(default_factory=dict)


class LLMCallRecord(BaseModel):
    """One chat-completion request, successful or not: enough to audit a run and count its cost."""

    model: str
    messages: list[dict[str, str]]
    reply: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float = 0.0
    cost_usd: float | None = None
    error: str | None = None


class Proposal(BaseModel):
    name: str
    thought: str
    code: str  # empty when the model never produced a usable reply (then invalid_error says why)
    parent_ids: list[str] = Field(default_factory=list)
    ast_hash: str | None = None
    duplicates_skipped: int = 0
    llm_calls: list[LLMCallRecord] = Field(default_factory=list)
    invalid_error: str | None = None  # set: store the candidate as invalid with this error, do not evaluate
    trace: TraceResult | None = None  # the sandbox's probe of `code`, when the proposer already made it
    operator: str | None = None  # evolution: the operator that made the child (its first change)
    # evolution: children tried on the way, by operator and fate ("tried", "broke a rule", ...)
    attempts: dict[str, dict[str, int]] = Field(default_factory=dict)


class ProposerUnavailable(RuntimeError):
    """The proposer cannot make proposals now (for example, its endpoint stays down).

    `reason` is for the run's status; `llm_calls` are the calls made before giving up (for the cost).
    """

    def __init__(self, reason: str, llm_calls: list[LLMCallRecord] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.llm_calls = list(llm_calls or [])


class Proposer(Protocol):
    def propose(self, context: ProposalContext) -> Proposal: ...


# Runs a candidate's code through the sandbox's probe (the target's rules, its behaviour fingerprint).
Probe = Callable[[str], TraceResult]


def make_proposer(
    config: ProposerConfig, api_key: str | None = None, base_url: str | None = None, probe: Probe | None = None
) -> Proposer:
    """The proposer for a run. `api_key` and the default `base_url` come from the server's settings; with a
    `probe`, evolution resamples children that break a rule of the target or compute a known function."""
    if config.kind == "evolution":
        from service.proposers.evolution import EvolutionProposer

        return EvolutionProposer(config, probe=probe)
    from service.proposers.llm import LLMProposer

    return LLMProposer(config, api_key=api_key, default_base_url=base_url)


# --- normalised AST hash --------------------------------------------------------------------------


class _Normaliser(ast.NodeTransformer):
    """Drops docstrings, resolves import aliases to module paths and renames locals canonically."""

    def __init__(self, aliases: dict[str, str], locals_: set[str]) -> None:
        self.aliases = aliases
        self.locals = locals_
        self.renamed: dict[str, str] = {}

    def _local(self, name: str) -> str:
        if name not in self.renamed:
            self.renamed[name] = f"v{len(self.renamed)}"
        return self.renamed[name]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                body = body[1:] or [ast.Pass()]
        node.body = body
        node.returns = None
        if node.name in self.locals:
            node.name = self._local(node.name)
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.annotation = None
        if node.arg in self.locals:
            node.arg = self._local(node.arg)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.locals:
            return ast.Name(id=self._local(node.id), ctx=node.ctx)
        if node.id in self.aliases:
            return ast.Name(id="@" + self.aliases[node.id], ctx=node.ctx)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node = self.generic_visit(node)  # type: ignore[assignment]
        if isinstance(node.value, ast.Name) and node.value.id.startswith("@"):
            return ast.Name(
                id=f"{node.value.id}.{node.attr}", ctx=node.ctx
            )  # module path: jnp.x == jax.numpy.x
        return node


def ast_hash(code: str) -> str:
    """A hash of the program's meaning up to renaming: formatting, comments, docstrings, the names of
    arguments and local variables, and import aliases do not change it. Unparseable code, and code
    nested deeper than the static check allows (the normaliser below recurses), hashes its text.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is None or ast_depth(tree)[0] > MAX_NESTING:
        return "text:" + hashlib.sha256(code.strip().encode()).hexdigest()
    aliases: dict[str, str] = {}
    body: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                aliases[alias.asname or alias.name] = f"{stmt.module}.{alias.name}"
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a module docstring or a bare constant
        else:
            body.append(stmt)
    top_level_functions = {s.name for s in body if isinstance(s, ast.FunctionDef)}
    locals_: set[str] = set()
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.arg):
            locals_.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            locals_.add(node.id)
        elif isinstance(node, ast.FunctionDef) and node.name not in top_level_functions:
            locals_.add(node.name)
    for stmt in body:  # module-level assignments are constants the function reads: names matter less
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        locals_.add(node.id)
    normalised = _Normaliser(aliases, locals_ - set(aliases)).visit(ast.Module(body=body, type_ignores=[]))
    dumped = ast.dump(normalised, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dumped.encode()).hexdigest()
