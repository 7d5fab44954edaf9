"""An es run's generations in the terminal: `discovery runs generations RUN_ID` and the table under `runs show`.

Read from the server (GET /v1/runs/{id}/generations, every page) or, without DISCOVERY_API_URL, from this machine's
database (`local_runs.generations`), as the same JSON (`GenerationOut`).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from service.cli import local_runs
from service.cli.common import api_call, score_text
from service.cli.compare import seconds_text, steps_text


def fetch_generations(run_id: str) -> list[dict[str, Any]]:
    """Every told generation of the run, oldest first (none for another proposer's run)."""
    if not local_runs.api_configured():
        return local_runs.generations(run_id)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = api_call("GET", f"/v1/runs/{run_id}/generations", params=params)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def mean_text(generation: dict[str, Any]) -> str:
    """The mean fitness with its 95% interval: "1.012 [0.95, 1.07]"."""
    ci = generation["fitness_ci"]
    return score_text(generation["fitness_mean"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def generations_table(generations: list[dict[str, Any]], title: str) -> Table:
    """One row per generation: fitness (mean with its 95% interval, spread, min, max, diverged members), sigma and
    learning rate after it, environment steps and trainer seconds."""
    table = Table(title=title)
    for column in ("generation", "mean fitness [95% CI]", "std", "min", "max", "diverged", "sigma", "lr", "steps",
                   "trainer"):
        table.add_column(column)
    for g in generations:
        table.add_row(str(g["generation"]), mean_text(g), score_text(g["fitness_std"]), score_text(g["fitness_min"]),
                      score_text(g["fitness_max"]), f"{g['diverged']}/{g['members']}", f"{g['sigma']:.4g}",
                      f"{g['learning_rate']:.4g}", steps_text(g["env_steps"]), seconds_text(g["trainer_seconds"]))
    return table


TABLE_NOTE = ("fitness: final return normalised against the run's anchor (1.0 = the warm start); the interval is the "
              "population's expected fitness, over its antithetic pairs; sigma and lr: the strategy's after the "
              "generation")
