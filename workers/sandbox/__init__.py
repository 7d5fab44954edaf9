"""The sandbox: a static check of candidate source, then a fresh isolated child per evaluation.

Public API: `check_source`, `format_issues`, `probe_isolation`, `evaluate_candidate`, `run_in_child`,
`SandboxLimits`, `IsolationReport`, `IsolationUnavailable`.
"""

from __future__ import annotations

from workers.sandbox.isolate import (
    IsolationReport,
    IsolationUnavailable,
    SandboxLimits,
    evaluate_candidate,
    probe_isolation,
    run_in_child,
)
from workers.sandbox.static_check import StaticIssue, check_source, format_issues

__all__ = [
    "IsolationReport",
    "IsolationUnavailable",
    "SandboxLimits",
    "StaticIssue",
    "check_source",
    "evaluate_candidate",
    "format_issues",
    "probe_isolation",
    "run_in_child",
]
