"""What every `discovery` command shares: the console (markup off), `--json`, exit codes and the one-line
error, the sandbox check, and the API client call with the score formatting of the remote commands."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from service.settings import get_settings

# Markup off: names, thoughts, errors and model names are stored text (a model's, a user's), printed as they are.
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)


JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON (for scripts)")]


EXIT_BAD_INPUT = 2


EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C


def exit_interrupted(run_id: str) -> NoReturn:
    """Say how to continue an interrupted run, then exit at once: the threads of the jobs that were in flight
    must not hold the process (their jobs are back in the database, and the sandboxes end with it)."""
    console.file.flush()
    print(f"\nrun {run_id} interrupted: what it did is kept; continue it with `discovery runs resume {run_id}`",
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def require_sandbox(quiet: bool = False) -> None:
    """Refuse to start work that evaluates candidates when the required isolation is missing."""
    from service.evaluation import check_isolation
    from workers.sandbox.host import IsolationUnavailable

    try:
        summary = check_isolation(get_settings())
        if not quiet:
            console.print(f"sandbox: {summary}", style="dim")
    except IsolationUnavailable as exc:
        fail(str(exc), EXIT_FAILED)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds takes comma-separated integers, got {text!r}")
    if not seeds:
        fail("--seeds needs at least one seed")
    return seeds


def api_call(method: str, path: str, **kwargs: object) -> Any:
    from service.client import ApiError, request

    try:
        return request(get_settings(), method, path, **kwargs)
    except ApiError as exc:
        fail(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED)


def score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def scored_text(value: float | None, ci: list[float] | tuple[float, float] | None, verdict: str | None = None,
            seeds: int | None = None) -> str:
    """A score with its interval (and verdict, and the seeds behind it) as the CLI prints it."""
    text = score_text(value) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return text + (f" {verdict}" if verdict else "") + (f" ({seeds} seeds)" if seeds else "")
