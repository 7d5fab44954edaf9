"""`discovery`: the command line. Every command prints one readable line and exits non-zero on bad input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from service.settings import get_settings

app = typer.Typer(help="Discover reinforcement-learning algorithms with a language model in the loop.",
                  no_args_is_help=True, add_completion=False)
console = Console()
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """Discover reinforcement-learning algorithms with a language model in the loop."""


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds takes comma-separated integers, got {text!r}")
    if not seeds:
        fail("--seeds needs at least one seed")
    return seeds


@app.command()
def evaluate(
    target: Annotated[str, typer.Option(help="lpo, optimizer or advantage")] = "lpo",
    code: Annotated[Path | None, typer.Option(help="Python file with the candidate (default: the warm start)")] = None,
    env: Annotated[list[str] | None, typer.Option(help="environment; repeat for several")] = None,
    profile: Annotated[str, typer.Option(help="full, quick or smoke")] = "smoke",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1",
) -> None:
    """Evaluate one candidate (in the sandbox) and print returns, learning rate, score and timings."""
    from service.evaluation import EvaluationFailed, evaluate_code

    settings = get_settings()
    if code is not None and not code.is_file():
        fail(f"--code {code}: no such file")
    from workers.rl.envs import ENVIRONMENTS, PROFILES
    from workers.targets import TARGETS

    if target not in TARGETS:
        fail(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    envs = env or list(TARGETS[target].default_train_envs)
    for name in envs:
        if name not in ENVIRONMENTS:
            fail(f"unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}")
    if profile not in PROFILES:
        fail(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    source = code.read_text() if code is not None else TARGETS[target].warm_start
    seed_list = _parse_seeds(seeds)

    table = Table(title=f"{target} candidate ({code or 'warm start'}), profile {profile}, seeds {seed_list}")
    for column in ("env", "return", "per seed", "lr", "warm start", "random", "score", "compile s", "train s"):
        table.add_column(column, justify="left" if column == "env" else "right")
    for name in envs:
        try:
            scored = evaluate_code(settings, target, source, name, profile, seed_list)
        except EvaluationFailed as exc:
            fail(str(exc), EXIT_BAD_INPUT if exc.outcome == "invalid" else EXIT_FAILED)
        r = scored.result
        table.add_row(
            name, f"{r.final_return:.2f}", " ".join(f"{x:.1f}" for x in r.returns[r.learning_rates.index(r.best_lr)]),
            f"{r.best_lr:g}", f"{scored.baseline.warm_return:.2f}", f"{scored.baseline.random_return:.2f}",
            f"{scored.score:.3f}", f"{r.compile_seconds:.1f}", f"{r.train_seconds:.1f}",
        )
    console.print(table)


if __name__ == "__main__":
    app()
