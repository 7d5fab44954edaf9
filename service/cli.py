"""`discovery`: the command line. Every command prints one readable line and exits non-zero on bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from service.settings import get_settings

app = typer.Typer(help="Discover reinforcement-learning algorithms with a language model in the loop.",
                  no_args_is_help=True, add_completion=False)
# Markup off: names, thoughts, errors and model names are stored text (a model's, a user's), printed as they are.
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)
JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON (for scripts)")]
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """Discover reinforcement-learning algorithms with a language model in the loop."""


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
    learning_rate: Annotated[str, typer.Option(help="fixed (the published rate) or grid (chosen on --seeds, "
                                               "scored on as many fresh seeds)")] = "fixed",
    metric: Annotated[str, typer.Option(help="the per-seed return scored: final (the last tenth of training) or "
                                        "auc (all of training)")] = "final",
    as_json: JsonFlag = False,
) -> None:
    """Evaluate one candidate (in the sandbox) and print returns, learning rate, score and timings."""
    from service.evaluation import EvaluationFailed, evaluate_code
    from workers.results import Metric

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
    if learning_rate not in ("fixed", "grid"):
        fail(f"--learning-rate must be fixed or grid, got {learning_rate!r}")
    if metric not in ("auc", "final"):
        fail(f"--metric must be auc or final, got {metric!r}")
    source = code.read_text() if code is not None else TARGETS[target].warm_start
    seed_list = _parse_seeds(seeds)
    require_sandbox(as_json)

    table = Table(title=f"{target} candidate ({code or 'warm start'}), profile {profile}, seeds {seed_list}, "
                        f"metric {metric}")
    for column in ("env", "return", "per seed", "lr", "anchor (seeds)", "random", "score (95% CI)", "p(improve)",
                   "verdict", "compile s", "train s"):
        table.add_column(column, justify="left" if column == "env" else "right")
    results = []
    for name in envs:
        try:
            scored = evaluate_code(settings, target, source, name, profile, seed_list, learning_rate, Metric(metric))
        except EvaluationFailed as exc:
            fail(str(exc), EXIT_BAD_INPUT if exc.outcome == "invalid" else EXIT_FAILED)
        r, anchor, comparison = scored.result, scored.anchor, scored.scored.comparison
        results.append({"env": name, "metric": metric, "score": comparison.score, "score_ci": comparison.ci,
                        "p_improvement": comparison.p_improvement, "verdict": comparison.verdict,
                        "seeds": comparison.seeds, "scores": scored.scored.scores,
                        "score_basis": scored.scored.basis, "anchor": scored.scored.anchor.model_dump(mode="json")
                        | {"seeds": len(anchor.seeds)}, "result": r.model_dump(mode="json")})
        table.add_row(
            name, f"{r.final_return:.2f}", " ".join(f"{x:.1f}" for x in r.returns[r.learning_rates.index(r.best_lr)]),
            f"{r.best_lr:g}", f"{anchor.warm_return:.2f} ({len(anchor.seeds)})", f"{anchor.random_return:.2f}",
            _scored(comparison.score, comparison.ci)
            + (" (return ratio)" if scored.scored.basis == "return_ratio" else ""),
            f"{comparison.p_improvement:.2f}", comparison.verdict, f"{r.compile_seconds:.1f}",
            f"{r.train_seconds:.1f}",
        )
    if as_json:
        print(json.dumps(results))
    else:
        console.print(table)
        console.print(f"score: the mean normalised {metric} return over the seeds against the anchor (the warm start's "
                      "own artifact on its own seeds = 1.0); the verdict is at 95% confidence")


@app.command()
def migrate() -> None:
    """Apply the database migrations (DISCOVERY_DATABASE_URL)."""
    from service.db import upgrade_database

    settings = get_settings()
    upgrade_database(settings.database_url)
    console.print(f"database at head: {settings.database_url.split('@')[-1]}")


@app.command()
def run(
    preset: Annotated[str | None, typer.Option(help="a named protocol (paper, quick); other flags win over it")] = None,
    target: Annotated[str | None, typer.Option(help="lpo, optimizer or advantage [lpo]")] = None,
    env: Annotated[list[str] | None, typer.Option(help="meta-train environment; repeat for several")] = None,
    test_env: Annotated[list[str] | None, typer.Option(help="meta-test environment; repeat for several "
                                                       "[the target's]")] = None,
    profile: Annotated[str | None, typer.Option(help="full, quick or smoke [quick]")] = None,
    proposer: Annotated[str, typer.Option(help="evolution or llm")] = "evolution",
    model: Annotated[list[str] | None, typer.Option(help="LLM model (with --proposer llm); repeat for an ensemble "
                                                    "that a bandit picks from per proposal")] = None,
    islands: Annotated[int | None, typer.Option(help="sub-populations with their own history, migrating their "
                                                "best [1]")] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="stop training a hopeless candidate after the "
                                             "first environment (more than 0.5 below the run's median)")] = False,
    history: Annotated[str | None, typer.Option(help="what the LLM sees of the run: bounded (best and recent), "
                                                "conversation (the paper's one chat) or none [bounded]")] = None,
    max_completion_tokens: Annotated[int | None, typer.Option(help="for reasoning models, instead of max_tokens")]
    = None,
    reasoning_effort: Annotated[str | None, typer.Option(help="low, medium or high (reasoning models)")] = None,
    candidates: Annotated[int | None, typer.Option(help="how many candidates to propose and evaluate [12]")] = None,
    concurrency: Annotated[int | None, typer.Option(help="candidates in flight at once [2]")] = None,
    seed: Annotated[int | None, typer.Option(help="run seed [0]")] = None,
    seeds_per_eval: Annotated[int | None, typer.Option(help="search seeds per evaluation [2]")] = None,
    metatest_seeds: Annotated[int | None, typer.Option(help="fresh seeds per meta-test evaluation [4]")] = None,
    verification_seeds: Annotated[int | None, typer.Option(
        help="fresh seeds a contender may get to decide its verdict, raced 2, 8, ... [16]")] = None,
    confidence: Annotated[float | None, typer.Option(help="of every interval and verdict [0.95]")] = None,
    metric: Annotated[str | None, typer.Option(help="the per-seed return scored: final (last tenth of training) or "
                                               "auc (all of training) [final]")] = None,
    learning_rate: Annotated[str | None, typer.Option(help="fixed (published rate) or grid (chosen on the search "
                                                      "seeds, scored on fresh ones) [fixed]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved run spec as JSON; start nothing")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a whole discovery here (embedded database and executor unless configured otherwise)."""
    from pydantic import ValidationError

    from service.runs.runner import RunRefused, run_to_completion
    from service.runs.spec import RunSpec

    if proposer not in ("evolution", "llm"):
        fail(f"--proposer must be evolution or llm, got {proposer!r}")
    if proposer == "llm" and not model:
        fail("--proposer llm needs --model NAME (the model at DISCOVERY_OPENAI_BASE_URL)")
    given = {"preset": preset, "target": target, "profile": profile, "concurrency": concurrency, "seed": seed,
             "seeds_per_eval": seeds_per_eval, "metatest_seeds": metatest_seeds, "learning_rate": learning_rate,
             "verification_seeds": verification_seeds, "confidence": confidence, "metric": metric,
             "budget": {"candidates": candidates} if candidates is not None else None,
             "environments": {k: v for k, v in (("train", env), ("test", test_env)) if v} or None,
             "search": {k: v for k, v in (("islands", islands), ("early_stopping", {} if early_stop else None))
                        if v is not None} or None,
             "proposer": {"kind": proposer, "models": model, **{k: v for k, v in (
                 ("history", history), ("max_completion_tokens", max_completion_tokens),
                 ("reasoning_effort", reasoning_effort)) if v is not None}} if proposer == "llm" else None}
    if proposer != "llm" and (history or max_completion_tokens or reasoning_effort):
        fail("--history, --max-completion-tokens and --reasoning-effort need --proposer llm")
    try:
        spec = RunSpec.model_validate({key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"{where}: {first['msg']}" if where else first["msg"])
    if dry_run:
        print(spec.model_dump_json(indent=2))
        return
    if not get_settings().broker_url:
        require_sandbox(as_json)
    try:
        report_to = Console(stderr=True, markup=False) if as_json else console
        run_id, status = run_to_completion(get_settings(), spec, report_to)
    except RunRefused as exc:
        fail(str(exc))
    if as_json:
        from service.runs.runner import run_result

        print(run_result(get_settings(), run_id).model_dump_json())
    if status != "completed":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues: propose, evaluate, webhooks")] = (
        "propose,evaluate,webhooks"),
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
) -> None:
    """Start a Celery worker (needs DISCOVERY_BROKER_URL); route `evaluate` to GPU hosts with --queues."""
    if not get_settings().broker_url:
        fail("discovery worker needs a broker: set DISCOVERY_BROKER_URL (for example redis://127.0.0.1:6379/0)")
    if "evaluate" in queues.split(","):
        require_sandbox()
    # Celery loads the tasks by name (the service never imports workers/tasks.py); this process becomes the worker.
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "-Q", queues,
                              "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", loglevel,
                              "--without-gossip", "--without-mingle"])


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API processes (more than one needs a broker)")] = 1,
    access_log: Annotated[bool, typer.Option(help="log a line per request")] = True,
) -> None:
    """Serve the REST API (with the local executor when no broker is configured)."""
    import uvicorn

    from service.api.app import create_app
    from service.db import upgrade_database

    settings = get_settings()
    if workers > 1 and not settings.broker_url:
        fail("--workers above 1 needs DISCOVERY_BROKER_URL: without a broker, jobs run inside the one API process")
    if not settings.broker_url:
        require_sandbox()
    upgrade_database(settings.database_url)
    if workers > 1:  # each process builds its own app (and runtime) from the environment
        uvicorn.run("service.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="info", access_log=access_log)
    else:
        uvicorn.run(create_app(settings=settings), host=host, port=port, log_level="info", access_log=access_log)


keys_app = typer.Typer(help="API keys: each key sees only its own runs.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="who or what the key is for")]) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from service.db import make_engine, make_session_factory, session_scope, upgrade_database
    from service.keys import create_key

    settings = get_settings()
    upgrade_database(settings.database_url)
    with session_scope(make_session_factory(make_engine(settings.database_url))) as session:
        key, row = create_key(session, name)
    print(key)
    print(f"created key {row.prefix}... for {name!r}; it is shown only this once", file=sys.stderr)


@keys_app.command("local")
def keys_local() -> None:
    """Print this machine's local identity, which owns runs started without DISCOVERY_API_KEY."""
    from service.db import make_engine, make_session_factory, session_scope, upgrade_database
    from service.keys import local_key

    settings = get_settings()
    upgrade_database(settings.database_url)
    with session_scope(make_session_factory(make_engine(settings.database_url))) as session:
        print(local_key(session, settings))


runs_app = typer.Typer(help="Runs on a Discovery server (DISCOVERY_API_URL, DISCOVERY_API_KEY).", no_args_is_help=True)
candidates_app = typer.Typer(help="Candidates on a Discovery server.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(candidates_app, name="candidates")


def api_call(method: str, path: str, **kwargs: object) -> dict:
    from service.client import ApiError, request

    try:
        return request(get_settings(), method, path, **kwargs)
    except ApiError as exc:
        fail(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _scored(value: float | None, ci: list[float] | tuple[float, float] | None, verdict: str | None = None,
            seeds: int | None = None) -> str:
    """A score with its interval (and verdict, and the seeds behind it) as the CLI prints it."""
    text = _score(value) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return text + (f" {verdict}" if verdict else "") + (f" ({seeds} seeds)" if seeds else "")


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List your runs, newest first."""
    params = {"limit": limit, **({"status": status} if status else {})}
    page = api_call("GET", "/v1/runs", params=params)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title="runs")
    for column in ("id", "status", "target", "proposer", "budget", "best", "verdict", "created"):
        table.add_column(column)
    for r in page["items"]:
        table.add_row(r["id"], r["status"], r["target"], r["proposer"], str(r["candidates_budget"]),
                      _score(r["best_score"]), r["best_verdict"] or "-", r["created_at"][:19])
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id")],
              as_json: JsonFlag = False,
              ) -> None:
    """A run's status, progress, budget spent, best candidate, meta-test table and evolution's operators."""
    r = api_call("GET", f"/v1/runs/{run_id}")
    if as_json:
        print(json.dumps(r))
        return
    preset = f", preset {r['preset']}" if r["preset"] else ""
    console.print(f"run {r['id']}: {r['status'].upper()}  {r['target']} on {', '.join(r['environments']['train'])}"
                  f"  ({r['proposer']['kind']}, profile {r['profile']}{preset}, {r['learning_rate']} learning rate, "
                  f"{r['seeds_per_eval']} search / up to {r['verification_seeds']} verification / "
                  f"{r['metatest_seeds']} meta-test seeds, metric {r['metric']})")
    p, spent = r["progress"], r["spent"]
    console.print(f"candidates {p['candidates_done']}/{p['candidates_budget']} (in flight {p['in_flight']}), "
                  f"tokens {spent['tokens']}, cost ${spent['cost_usd']:.4f}, duplicates skipped "
                  f"{spent['duplicates_skipped']}")
    if r["best"]:
        b = r["best"]
        console.print(f"best: #{b['index']} {b['name']} ({b['candidate_id']}), verified score "
                      f"{_scored(b['score'], b['score_ci'], b['verdict'], b['seeds'])}", markup=False)
    console.print(f"verdict: {r['discovery']['message']}", markup=False)
    if r["meta_test"]:
        references = list(r["meta_test"][0]["references"])
        table = Table(title="meta-test (normalised score; * a return ratio: the warm start was within noise of random)")
        for column in ("environment", "best", "warm start", *references):
            table.add_column(column)

        def cell(value: dict | None) -> str:
            value = value or {}
            flag = "*" if value.get("score_basis") == "return_ratio" else ""
            return _scored(value.get("normalised_score"), value.get("score_ci"), value.get("verdict")) + flag

        for row in r["meta_test"]:
            table.add_row(row["env"], cell(row["best"]), cell(row["warm_start"]),
                          *(cell(row["references"][name]) for name in references))
        console.print(table)
    if r["operators"]:
        table = Table(title="evolution operators (children turned down by the probe before training; proposals "
                            "within 20% of the warm start)")
        for column in ("operator", "tried", "broke a rule", "behavioural duplicate", "proposed", "within 20%",
                       "above 1.0", "success"):
            table.add_column(column)
        for o in r["operators"]:
            success = "-" if o["success_rate"] is None else f"{o['success_rate']:.0%}"
            table.add_row(o["operator"], *(str(o[k]) for k in ("tried", "broke_a_rule", "behavioural_duplicates",
                                                              "proposed", "within_20_percent", "above_warm_start")),
                          success)
        console.print(table)
    if len(r["models"]) > 1:
        table = Table(title="models of the ensemble (improved: scored above its parent, the bandit's reward)")
        for column in ("model", "proposals", "trained ok", "improved", "tokens", "cost", "best"):
            table.add_column(column)
        for m in r["models"]:
            table.add_row(m["model"], str(m["proposals"]), str(m["evaluated"]), str(m["improved"]), str(m["tokens"]),
                          f"${m['cost_usd']:.4f}", _score(m["best_score"]))
        console.print(table)
    if r["islands"]:
        table = Table(title=f"islands (migrating their best every {r['search']['migration_interval']} proposals each)")
        for column in ("island", "proposals", "best", "best candidate"):
            table.add_column(column)
        for i in r["islands"]:
            table.add_row(str(i["island"]), str(i["proposals"]), _score(i["best_score"]), i["best_candidate_id"] or "-")
        console.print(table)
    if r["error"]:
        console.print(f"error: {r['error']}")


@runs_app.command("extend")
def runs_extend(run_id: Annotated[str, typer.Argument(help="run id")],
                candidates: Annotated[int, typer.Option(help="proposals to add")],
                tokens: Annotated[int | None, typer.Option(help="tokens to add to the token budget")] = None,
                cost_usd: Annotated[float | None, typer.Option(help="USD to add to the cost budget")] = None,
                as_json: JsonFlag = False) -> None:
    """Give a completed run more budget: it continues from its history."""
    more = {k: v for k, v in (("candidates", candidates), ("tokens", tokens), ("cost_usd", cost_usd))
            if v is not None}
    r = api_call("POST", f"/v1/runs/{run_id}/extend", json=more)
    if as_json:
        print(json.dumps(r))
        return
    p = r["progress"]
    console.print(f"run {r['id']}: {r['status']}, candidates {p['candidates_done']}/{p['candidates_budget']}")


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
    """Cancel a run: no new work starts; in-flight evaluations end on their own."""
    r = api_call("POST", f"/v1/runs/{run_id}/cancel")
    console.print(f"run {r['id']}: {r['status']}")


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
                  f"search score {_scored(c['score'], c['score_ci'])}, verified score "
                  f"{_scored(c['verified_score'], c['verified_ci'], c['verdict'], c['seeds'])}", markup=False)
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
                      _scored(e["normalised_score"], e["score_ci"]), lr, ",".join(map(str, e["seeds"])))
    console.print(table)


if __name__ == "__main__":
    app()
