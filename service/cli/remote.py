"""The commands that read and steer runs on a Discovery server (DISCOVERY_API_URL, DISCOVERY_API_KEY):
`runs list/show/generations/resume/extend/distill/cancel/export/wandb` and `candidates show`. Without
DISCOVERY_API_URL, `runs list`, `runs show`, `runs generations` and `runs resume` work on this machine's database
instead (`local_runs.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from service.cli import local_runs
from service.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JsonFlag, api_call, console, fail, score_text, scored_text
from service.cli.compare import comparison_table
from service.cli.generations import TABLE_NOTE, fetch_generations, generations_table
from service.cli.run_tables import islands_table, meta_test_table, models_table, operators_table, run_header
from service.runs.provenance import provenance_text, trained_on_text

runs_app = typer.Typer(help="Runs on a Discovery server (DISCOVERY_API_URL, DISCOVERY_API_KEY); without "
                       "DISCOVERY_API_URL, list, show, generations and resume use this machine's database.",
                       no_args_is_help=True)
SHOWN_GENERATIONS = 10  # the newest generations `runs show` lists for an es run


candidates_app = typer.Typer(help="Candidates on a Discovery server.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List your runs, newest first."""
    params = {"limit": limit, **({"status": status} if status else {})}
    page = api_call("GET", "/v1/runs", params=params) if local_runs.api_configured() else \
        local_runs.runs_page(status, limit)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title="runs")
    for column in ("id", "status", "target", "proposer", "budget", "best", "verdict", "created"):
        table.add_column(column)
    for r in page["items"]:
        table.add_row(r["id"], r["status"], r["target"], r["proposer"], str(r["candidates_budget"]),
                      score_text(r["best_score"]), r["best_verdict"] or "-", r["created_at"][:19])
    console.print(table)


def _run_json(run_id: str) -> dict[str, Any]:
    return api_call("GET", f"/v1/runs/{run_id}") if local_runs.api_configured() else local_runs.run(run_id)


@runs_app.command("show")
def runs_show(run_ids: Annotated[list[str], typer.Argument(help="run id; several: side by side")],
              as_json: JsonFlag = False,
              ) -> None:
    """A run's status, progress, budget and cost spent, best candidate, meta-test table and evolution's operators;
    several runs side by side (proposer, verified score, meta-test, environment steps, wall time, readable best)."""
    if len(run_ids) > 1:
        shown = [_run_json(run_id) for run_id in run_ids]
        if as_json:
            print(json.dumps(shown))
        else:
            console.print(comparison_table(shown))
        return
    r = _run_json(run_ids[0])
    if as_json:
        print(json.dumps(r))
        return
    for line in run_header(r):
        console.print(line, markup=False)
    for table in (meta_test_table(r), operators_table(r), models_table(r), islands_table(r)):
        if table is not None:
            console.print(table)
    p = r["progress"]
    if p.get("generations_budget") is not None:
        _show_generations(r["id"], SHOWN_GENERATIONS)
    if r["error"]:
        console.print(f"error: {r['error']}")
    console.print(f"made with: {provenance_text(r.get('provenance'))}", style="dim")
    console.print("trained on: " + trained_on_text((t["platform"], t["device"]) for t in r.get("trained_on") or []),
                  style="dim")


def _show_generations(run_id: str, last: int | None) -> None:
    told = fetch_generations(run_id)
    if not told:
        console.print("no generation told yet")
        return
    shown = told[-last:] if last else told
    which = f"the last {len(shown)} of {len(told)}" if len(shown) < len(told) else f"all {len(told)}"
    console.print(generations_table(shown, f"ES generations ({which})"))
    console.print(TABLE_NOTE, style="dim")


@runs_app.command("generations")
def runs_generations(run_id: Annotated[str, typer.Argument(help="run id (an es run)")],
                     last: Annotated[int | None, typer.Option(help="only the newest N generations")] = None,
                     as_json: JsonFlag = False) -> None:
    """An es run's told generations: each one's fitness (mean with its 95% interval, spread, min, max, diverged
    members), the strategy's sigma and learning rate after it, and its environment steps and trainer seconds."""
    if last is not None and last < 1:
        fail(f"--last must be at least 1, got {last}")
    if as_json:
        told = fetch_generations(run_id)
        print(json.dumps(told[-last:] if last else told))
        return
    _show_generations(run_id, last)


@runs_app.command("resume")
def runs_resume(run_id: Annotated[str, typer.Argument(help="run id")], as_json: JsonFlag = False) -> None:
    """Continue an interrupted run (one whose `discovery run` got Ctrl-C): here, until it ends, or on the server
    at DISCOVERY_API_URL when that is set."""
    if not local_runs.api_configured():
        local_runs.resume(run_id, as_json)
        return
    r = api_call("POST", f"/v1/runs/{run_id}/resume")
    if as_json:
        print(json.dumps(r))
        return
    console.print(f"run {r['id']}: {r['status']}")


@runs_app.command("extend")
def runs_extend(run_id: Annotated[str, typer.Argument(help="run id")],
                candidates: Annotated[int | None, typer.Option(help="proposals to add (llm, evolution)")] = None,
                generations: Annotated[int | None, typer.Option(help="generations to add (an es run)")] = None,
                tokens: Annotated[int | None, typer.Option(help="tokens to add to the token budget")] = None,
                cost_usd: Annotated[float | None, typer.Option(help="USD to add to the cost budget")] = None,
                as_json: JsonFlag = False) -> None:
    """Give a completed run more budget: it continues from its history (an es run: --generations; another:
    --candidates)."""
    if (candidates is None) == (generations is None):
        fail("give --candidates (proposals to add) or, for an es run, --generations: one of them")
    more = {k: v for k, v in (("candidates", candidates), ("generations", generations), ("tokens", tokens),
                              ("cost_usd", cost_usd)) if v is not None}
    r = api_call("POST", f"/v1/runs/{run_id}/extend", json=more)
    if as_json:
        print(json.dumps(r))
        return
    p = r["progress"]
    if p.get("generations_budget") is not None:
        console.print(f"run {r['id']}: {r['status']}, generations {p['generations_done']}/{p['generations_budget']}")
    else:
        console.print(f"run {r['id']}: {r['status']}, candidates {p['candidates_done']}/{p['candidates_budget']}")


@runs_app.command("distill")
def runs_distill(run_id: Annotated[str, typer.Argument(help="run id")],
                 candidate_id: Annotated[str, typer.Argument(help="the teacher: a scored candidate of the run")],
                 width: Annotated[int, typer.Option(help="the student's hidden units (128: ES's network)")] = 128,
                 steps: Annotated[int | None, typer.Option(help="Adam steps of the fit")] = None,
                 grid: Annotated[int | None, typer.Option(help="grid samples per axis (the paper's: 1024)")] = None,
                 learning_rate: Annotated[float | None, typer.Option(help="Adam's first rate [1e-4]")] = None,
                 final_learning_rate: Annotated[float | None, typer.Option(help="Adam's last rate [1e-5]")] = None,
                 formula: Annotated[bool, typer.Option("--formula", help="a symbolic student: an expression evolved "
                                                       "to match the teacher's map, evaluated as code")] = False,
                 as_json: JsonFlag = False) -> None:
    """Distil a scored candidate into a student network fitted to its gradient map (or, with --formula, into an
    expression); the student is a candidate of the run (its parent: the teacher), evaluated like any other."""
    options = {"steps": steps, "grid": grid, "learning_rate": learning_rate, "final_learning_rate": final_learning_rate}
    student = {"kind": "formula"} if formula else {
        "kind": "network", "width": width, **{k: v for k, v in options.items() if v is not None}}
    r = api_call("POST", f"/v1/runs/{run_id}/distill", json={"candidate_id": candidate_id, "student": student})
    if as_json:
        print(json.dumps(r))
        return
    console.print(f"student #{r['index']} {r['id']} ({r['network'] or 'a formula'}): {r['status']}, "
                  f"parent {candidate_id}")


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
    """Cancel a run: no new work starts; in-flight evaluations end on their own."""
    r = api_call("POST", f"/v1/runs/{run_id}/cancel")
    console.print(f"run {r['id']}: {r['status']}")


@runs_app.command("export")
def runs_export(
    run_id: Annotated[str, typer.Argument(help="the run")],
    format: Annotated[str, typer.Option("--format", help="csv or jsonl (with each seed's learning curve)")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file [stdout]")] = None,
) -> None:
    """Every evaluation of a run, one row per candidate × environment × phase × seed, for pandas or a spreadsheet."""
    if format not in ("csv", "jsonl"):
        fail(f"--format must be csv or jsonl, got {format!r}")
    text = api_call("GET", f"/v1/runs/{run_id}/export", params={"format": format}, raw=True)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@candidates_app.command("show")
def candidates_show(candidate_id: Annotated[str, typer.Argument(help="candidate id")],
                    as_json: JsonFlag = False,
                    ) -> None:
    """A candidate's code, thought, outcome and per-environment results."""
    from rich.syntax import Syntax

    c = api_call("GET", f"/v1/candidates/{candidate_id}")
    if as_json:
        print(json.dumps(c))
        return
    console.print(f"#{c['index']} {c['name']} ({c['id']}) of run {c['run_id']}: {c['outcome'] or c['status']}, "
                  f"search score {scored_text(c['score'], c['score_ci'])}, verified score "
                  f"{scored_text(c['verified_score'], c['verified_ci'], c['verdict'], c['seeds'])}", markup=False)
    if c["thought"]:
        console.print(f"thought: {c['thought']}")
    if c["error"]:
        console.print(f"error: {c['error']}")
    console.print(Syntax(c["code"], "python"))
    table = Table(title="evaluations")
    for column in ("phase", "round", "env", "outcome", "return", "score (95% CI)", "lr", "seeds"):
        table.add_column(column)
    for e in c["evaluations"]:
        final_return = "-" if e["final_return"] is None else f"{e['final_return']:.2f}"
        lr = "-" if e["best_lr"] is None else f"{e['best_lr']:g}"
        table.add_row(e["phase"], str(e["round"] or "-"), e["env"], e["outcome"], final_return,
                      scored_text(e["normalised_score"], e["score_ci"]), lr, ",".join(map(str, e["seeds"])))
    console.print(table)


@runs_app.command("wandb")
def runs_wandb(run_id: Annotated[str, typer.Argument(help="run id")],
               project: Annotated[str, typer.Option(help="the W&B project")] = "discovery",
               entity: Annotated[str | None, typer.Option(help="the W&B entity (default: yours)")] = None) -> None:
    """Log a run to Weights & Biases as its candidates land, until it ends (needs the `wandb` extra; W&B's own
    settings apply, e.g. WANDB_MODE=offline)."""
    from service.client import ApiError, DiscoveryClient, api_key
    from service.settings import get_settings
    from service.trackers.weights_and_biases import TrackerUnavailable, follow

    settings = get_settings()
    try:
        with DiscoveryClient(settings.api_url, api_key(settings)) as client:
            run = follow(client, run_id, project, entity)
    except ApiError as exc:
        fail(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED)
    except TrackerUnavailable as exc:
        fail(str(exc))
    console.print(f"run {run_id} {run.status}: logged to W&B project {project}")
