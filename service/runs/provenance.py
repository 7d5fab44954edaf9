"""What made a run, recorded when it is created: this package's version and git commit, the JAX stack's
versions, Python, the operating system and the host. Stored in the run's `config` (no JAX is imported to
read the versions) and shown by `runs show`, the run page and the header of `best.py`. Where it was trained
(the trainer's JAX platform and device) is known only once it trains: each evaluation row records it, and
`trained_on_text` says it."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("discovery", "jax", "jaxlib", "gymnax")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def _git_sha() -> str | None:
    """The commit of the checkout this code runs from, with `+dirty` when it has uncommitted changes; None
    outside a git checkout (an installed package, a container)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def provenance() -> dict[str, str | None]:
    return {**{package: _version(package) for package in PACKAGES}, "git_sha": _git_sha(),
            "python": platform.python_version(), "os": platform.platform(terse=True), "host": platform.node()}


def provenance_text(recorded: dict[str, str | None] | None) -> str:
    """One line: `discovery 0.1.0 (git 1a2b3c4d), jax 0.10.2, ...`, or that the run predates the record."""
    if not recorded:
        return "not recorded (the run predates it)"
    sha = recorded.get("git_sha")
    versions = ", ".join(f"{p} {recorded[p]}" + (f" (git {sha[:12]})" if p == "discovery" and sha else "")
                         for p in PACKAGES if recorded.get(p))
    return f"{versions}; Python {recorded.get('python')} on {recorded.get('os')}, host {recorded.get('host')}"


def trained_on_text(devices: Iterable[tuple[str, str | None]]) -> str:
    """`cpu (TFRT_CPU_0)`, or `cuda (cuda:0), cpu (TFRT_CPU_0)` for a run trained on both, from (platform, device)
    pairs; or that nothing trained has said."""
    shown = list(dict.fromkeys(f"{platform} ({device})" if device else platform for platform, device in devices))
    return ", ".join(shown) if shown else "not recorded yet"
