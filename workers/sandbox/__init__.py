"""The sandbox: a static check of candidate source, then isolated children (the tracer per candidate,
the trainer long-lived) started by `SandboxProcess`: what the host can isolate with (`host`), the child's
command line (`command`), the child process (`process`), and the tracer's supervision (`isolate`).

Public API: `check_source`, `format_issues`, `probe_isolation`, `trace_candidate`, `run_tracer`,
`SandboxLimits`, `IsolationReport`, `IsolationUnavailable`.
"""

from __future__ import annotations

from workers.sandbox.host import IsolationReport, IsolationUnavailable, SandboxLimits, probe_isolation
from workers.sandbox.isolate import run_tracer, trace_candidate
from workers.sandbox.static_check import StaticIssue, check_source, format_issues

__all__ = [
    "IsolationReport",
    "IsolationUnavailable",
    "SandboxLimits",
    "StaticIssue",
    "check_source",
    "format_issues",
    "probe_isolation",
    "run_tracer",
    "trace_candidate",
]
