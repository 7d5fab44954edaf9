"""Proposers: where new candidate algorithms come from (a language model, or symbolic evolution)."""

from __future__ import annotations

from service.proposers.base import (
    EvolutionSettings,
    HistoryEntry,
    HistorySettings,
    LLMCallRecord,
    LLMSettings,
    Probe,
    Proposal,
    ProposalContext,
    Proposer,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
    make_proposer,
)
from service.proposers.evolution import EvolutionProposer
from service.proposers.llm import LLMProposer

__all__ = [
    "EvolutionProposer",
    "EvolutionSettings",
    "HistoryEntry",
    "HistorySettings",
    "LLMCallRecord",
    "LLMProposer",
    "LLMSettings",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "ProposerConfig",
    "ProposerUnavailable",
    "ast_hash",
    "Probe",
    "make_proposer",
]
