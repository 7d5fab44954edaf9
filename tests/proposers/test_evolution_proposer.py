"""The evolution proposer: valid, traceable, mostly unique, reproducible children of a population."""

from __future__ import annotations

import random

import pytest

from service.proposers import (
    EvolutionProposer,
    EvolutionSettings,
    HistoryEntry,
    Probe,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
)
from tests.proposers.scripted_llm import warm_entry
from workers.results import TraceResult
from workers.sandbox.static_check import check_source
from workers.targets import CandidateError, get_target, load_function
from workers.targets.base import behaviour_fingerprint
from workers.vocabulary import Outcome


def local_probe(target_name: str) -> Probe:
    """The sandbox tracer's probe, in this process (the children of the project's own warm starts only)."""
    target = get_target(target_name)

    def probe(code: str) -> TraceResult:
        try:
            function = load_function(code, target)
            fingerprint = behaviour_fingerprint(target.probe(function))
            if target.check_rules is not None:
                target.check_rules(function)
        except CandidateError as exc:
            return TraceResult(outcome=Outcome.invalid, error=str(exc))
        return TraceResult(outcome=Outcome.ok, fingerprint=fingerprint)

    return probe


def context(target: str, index: int, history: list[HistoryEntry] | None = None, seed: int = 11, known=None,
            fingerprints: dict[str, str] | None = None):
    warm = warm_entry(target)
    return ProposalContext(
        run_id="run-e",
        target=target,
        seed=seed,
        index=index,
        warm_start=warm,
        history=history or [],
        known_hashes=known if known is not None else {ast_hash(warm.code)},
        known_fingerprints=fingerprints or {},
    )


def children(target: str, count: int, probe: Probe | None = None) -> list:
    proposer = EvolutionProposer(ProposerConfig(), probe=probe)
    return [proposer.propose(context(target, index)) for index in range(1, count + 1)]


def test_lpo_children_of_the_warm_start_keep_its_rules_trace_in_jax_and_are_mostly_unique():
    target = get_target("lpo")
    warm_fingerprint = local_probe("lpo")(target.warm_start).fingerprint
    proposer = EvolutionProposer(ProposerConfig(), probe=local_probe("lpo"))
    proposals = [proposer.propose(context("lpo", index, fingerprints={warm_fingerprint: "warm_start"}))
                 for index in range(1, 41)]
    kept = [p for p in proposals if p.trace is not None and p.trace.outcome == Outcome.ok
            and p.trace.fingerprint != warm_fingerprint]
    assert len(kept) >= 36
    for proposal in proposals:
        assert check_source(proposal.code, target) == [], proposal.code
        if proposal in kept:  # traces (value and gradient), finite, right shape, and keeps lpo's rules
            function = load_function(proposal.code, target)
            target.check_rules(function)
            assert proposal.trace.fingerprint == behaviour_fingerprint(target.probe(function))
        else:  # offered only when every child the probe could check was turned down (the service won't train it)
            turned_down = sum(n for fates in proposal.attempts.values() for fate, n in fates.items()
                              if fate in ("broke a rule", "behavioural duplicate"))
            assert turned_down == EvolutionSettings().max_probes
        assert proposal.parent_ids == ["warm"]
        assert proposal.ast_hash == ast_hash(proposal.code) != ast_hash(target.warm_start)
        assert proposal.thought.startswith("Mutation of warm_start: ")
        assert proposal.llm_calls == []
    assert len({p.trace.fingerprint for p in kept}) >= 32
    kinds = " ".join(p.thought for p in proposals)
    for kind in ("operator", "constant", "wrap a subexpression", "duplicate a term"):
        assert kind in kinds
    rejected = sum(fates.get("broke a rule", 0) for p in proposals for fates in p.attempts.values())
    assert rejected > 0  # the warm start's children often break lpo's rules: they were resampled


def test_without_a_probe_children_of_the_warm_start_trace_in_jax_and_are_mostly_unique():
    target = get_target("lpo")
    proposals = children("lpo", 100)
    for proposal in proposals:
        assert check_source(proposal.code, target) == [], proposal.code
        target.probe(load_function(proposal.code, target))  # traces (value and gradient), finite, right shape
    assert len({p.ast_hash for p in proposals}) >= 80
    kinds = " ".join(p.thought for p in proposals)
    for kind in ("operator", "constant", "wrap a subexpression", "delete a term", "duplicate a term", "crossover"):
        assert kind in kinds


def test_the_mix_of_mutations_is_configurable_and_function_swaps_keep_the_module():
    smooth = get_target("lpo").warm_start.replace("jax.nn.relu((ratio - clipped) * advantage)",
                                                  "jnp.square(jnp.tanh((ratio - clipped) * advantage))")
    warm = warm_entry("lpo").model_copy(update={"code": smooth})
    only_functions = ProposerConfig(evolution=EvolutionSettings(mutation_weights={"function": 1.0}, max_mutations=1,
                                                                crossover_probability=0.0))
    proposals = [EvolutionProposer(only_functions).propose(context("lpo", i).model_copy(update={"warm_start": warm}))
                 for i in range(1, 9)]
    assert {p.operator for p in proposals} == {"function"}
    changes = {p.thought.split(": ", 1)[1] for p in proposals}
    assert changes <= {"function tanh -> arctan.", "function tanh -> arcsinh.", "function square -> abs."}
    assert all("jnp.arctan(" in p.code or "jnp.arcsinh(" in p.code or "jnp.abs(" in p.code for p in proposals)


@pytest.mark.parametrize(("target_name", "count"), [("optimizer", 100), ("advantage", 30)])
def test_other_targets_children_pass_the_check_and_trace(target_name, count):
    """Mutating Adam or GAE can make the numbers go NaN (that is the evaluation's business), but every
    child must still be a well-formed function of the right shape that JAX can trace."""
    target = get_target(target_name)
    proposals = children(target_name, count)
    finite = 0
    for proposal in proposals:
        assert check_source(proposal.code, target) == [], proposal.code
        try:
            target.probe(load_function(proposal.code, target))
            finite += 1
        except CandidateError as exc:
            assert "NaN or Inf" in str(exc), proposal.code
    assert finite >= count * 0.6
    assert len({p.ast_hash for p in proposals}) >= count * 0.8


def test_same_seed_and_index_give_the_same_child_and_others_differ():
    proposer = EvolutionProposer(ProposerConfig())
    first = proposer.propose(context("lpo", 5))
    again = EvolutionProposer(ProposerConfig()).propose(context("lpo", 5))
    assert again == first
    assert proposer.propose(context("lpo", 6)).code != first.code
    assert proposer.propose(context("lpo", 5, seed=12)).code != first.code


def test_a_child_already_in_the_run_is_skipped_and_counted():
    proposer = EvolutionProposer(ProposerConfig())
    first = proposer.propose(context("lpo", 3))
    known = {ast_hash(get_target("lpo").warm_start), first.ast_hash}
    second = proposer.propose(context("lpo", 3, known=known))
    assert second.ast_hash not in known
    assert second.duplicates_skipped >= 1


def entry(candidate_id: str, index: int, score: float | None, outcome: Outcome, code: str) -> HistoryEntry:
    return HistoryEntry(
        candidate_id=candidate_id, index=index, name=candidate_id, code=code, outcome=outcome, score=score
    )


def test_parents_come_from_the_population_by_tournament():
    warm = get_target("lpo").warm_start
    strong = warm.replace("1.0 + epsilon", "1.0 + 0.5 * epsilon")
    history = [
        entry("strong", 1, 1.5, Outcome.ok, strong),
        entry("weak", 2, 0.2, Outcome.ok, warm.replace("1.0 - epsilon", "0.9 - epsilon")),
        entry("crashed", 3, None, Outcome.error, warm.replace("epsilon)", "epsilon) * 2.0")),
        entry("pending", 4, None, None, warm.replace("ratio - clipped", "clipped - ratio")),
    ]
    config = ProposerConfig(evolution=EvolutionSettings(tournament_size=3, crossover_probability=0.0))
    proposer = EvolutionProposer(config)
    assert [e.candidate_id for e in proposer.population(context("lpo", 1, history))] == ["warm", "strong", "weak"]
    parents = [proposer.propose(context("lpo", i, history)).parent_ids[0] for i in range(1, 41)]
    assert set(parents) <= {"warm", "strong", "weak"}
    assert parents.count("strong") > parents.count("warm") > parents.count("weak")


def test_crossover_records_both_parents():
    other = """import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return jnp.square(ratio - 1.0) * jnp.abs(advantage) / epsilon
"""
    history = [entry("other", 1, 1.1, Outcome.ok, other)]
    config = ProposerConfig(evolution=EvolutionSettings(tournament_size=1, crossover_probability=1.0))
    proposals = [EvolutionProposer(config).propose(context("lpo", i, history)) for i in range(1, 21)]
    mixed = [p for p in proposals if len(p.parent_ids) == 2]
    assert mixed, "no crossover between two different parents in 20 children"
    target = get_target("lpo")
    for proposal in proposals:
        assert check_source(proposal.code, target) == []
        load_function(proposal.code, target)
    assert all(set(p.parent_ids) <= {"warm", "other"} for p in proposals)
    assert any("warm" in p.parent_ids for p in proposals), "the warm start left the population"


def test_a_population_with_nothing_new_to_offer_raises_a_clear_reason():
    config = ProposerConfig(evolution=EvolutionSettings(max_attempts=3))

    def always_failing(code, target):
        from workers.sandbox.subset import StaticIssue

        return [StaticIssue(line=1, message="scripted rejection")]

    proposer = EvolutionProposer(config, check=always_failing)
    with pytest.raises(ProposerUnavailable, match="no new valid child in 3 attempts.*scripted rejection"):
        proposer.propose(context("lpo", 1))


def test_a_failed_crossover_does_not_add_a_mutation() -> None:
    """With at most one change per child, a second parent that offers nothing leaves exactly one mutation."""
    proposer = EvolutionProposer(ProposerConfig(evolution=EvolutionSettings(max_mutations=1,
                                                                            crossover_probability=1.0)))
    target = get_target("lpo")
    warm = warm_entry("lpo")
    no_drift = warm.model_copy(update={"code": "def other(x):\n    return x\n", "candidate_id": "other"})
    counts = []
    for seed in range(20):
        child = proposer.mutate(random.Random(seed), target, warm, no_drift)
        if child is not None:
            counts.append(len(child[1]))
    assert counts and set(counts) == {1}, counts
