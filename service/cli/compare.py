"""`discovery runs show A B ...`: runs side by side, as the compare page sets them, from the runs' JSON (RunOut).

One column per run: how it proposed (llm, evolution, es, distilled, ...), the verified meta-train score of its
best with the interval, the meta-test per environment with intervals, the environment steps and trainer seconds
it consumed, its wall time, and whether its best is readable code (an ES network's parameters are not).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from service.cli.common import scored_text


def steps_text(steps: int) -> str:
    """Environment steps, short: 950, 16.4k, 12.6M, 1.02B."""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if steps >= size:
            return f"{steps / size:.3g}{unit}"
    return str(steps)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def cost_text(run: dict[str, Any]) -> str:
    """The run's cost on one line: environment steps and trainer seconds per phase, and its wall time."""
    cost = run["cost"]
    phases = ", ".join(f"{name} {steps_text(cost[key]['env_steps'])} ({seconds_text(cost[key]['trainer_seconds'])})"
                       for key, name in (("search", "search"), ("verification", "verification"),
                                         ("meta_test", "meta-test")))
    return (f"cost: {steps_text(cost['total']['env_steps'])} environment steps, trainer "
            f"{seconds_text(cost['total']['trainer_seconds'])} ({phases}); wall time "
            f"{seconds_text(run['spent']['seconds'])}")


def readable_text(best: dict[str, Any] | None) -> str:
    if best is None:
        return "-"
    return "readable code" if best.get("readable", True) else f"{best.get('kind', 'network')}: not readable code"


def comparison_table(runs: list[dict[str, Any]]) -> Table:
    """Runs side by side: one column per run, one row per figure."""
    table = Table(title="runs side by side (verified meta-train score of the best; meta-test: normalised score of "
                        "the best, 95% interval and verdict; * a return ratio)")
    table.add_column("")
    for run in runs:
        table.add_column(f"{run['id'][:8]} ({run['status']})")
    best = [run["best"] for run in runs]
    rows: list[tuple[str, list[str]]] = [
        ("proposer", [run["proposer"].get("kind", "?") for run in runs]),
        ("target", [f"{run['target']} on {', '.join(run['environments']['train'])}, {run['profile']}"
                    for run in runs]),
        ("verified score", [scored_text(b["score"], b["score_ci"], b["verdict"], b["seeds"]) if b else "-"
                            for b in best]),
        ("best made by", [b.get("made_by") or "-" if b else "-" for b in best]),
        ("best is", [readable_text(b) for b in best]),
    ]
    envs = list(dict.fromkeys(row["env"] for run in runs for row in run["meta_test"]))
    for env in envs:
        rows.append((f"meta-test {env}", [_meta_test_cell(run, env) for run in runs]))
    rows += [
        ("env steps", [steps_text(run["cost"]["total"]["env_steps"]) for run in runs]),
        ("  search / verif. / test", [" / ".join(steps_text(run["cost"][k]["env_steps"])
                                                 for k in ("search", "verification", "meta_test")) for run in runs]),
        ("trainer time", [seconds_text(run["cost"]["total"]["trainer_seconds"]) for run in runs]),
        ("wall time", [seconds_text(run["spent"]["seconds"]) for run in runs]),
        ("tokens, cost", [f"{run['spent']['tokens']:,}, ${run['spent']['cost_usd']:.4f}" for run in runs]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


def _meta_test_cell(run: dict[str, Any], env: str) -> str:
    row = next((r for r in run["meta_test"] if r["env"] == env), None)
    cell = (row or {}).get("best")
    if not cell:
        return "-"
    flag = "*" if cell.get("score_basis") == "return_ratio" else ""
    return scored_text(cell.get("normalised_score"), cell.get("score_ci"), cell.get("verdict")) + flag
