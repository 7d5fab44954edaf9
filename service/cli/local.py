"""The commands that work on this machine: evaluate one candidate, run a whole discovery, serve the API,
start a worker, migrate the database, and the API keys."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JsonFlag,
    console,
    exit_interrupted,
    fail,
    parse_seeds,
    require_sandbox,
    scored_text,
)
from service.settings import get_settings

app = typer.Typer(help="Discover reinforcement-learning algorithms with a language model in the loop.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Discover reinforcement-learning algorithms with a language model in the loop."""


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
    from workers.vocabulary import LearningRateProtocol, Metric

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
    if learning_rate not in set(LearningRateProtocol):
        fail(f"--learning-rate must be fixed or grid, got {learning_rate!r}")
    if metric not in set(Metric):
        fail(f"--metric must be auc or final, got {metric!r}")
    source = code.read_text() if code is not None else TARGETS[target].warm_start
    seed_list = parse_seeds(seeds)
    require_sandbox(as_json)

    table = Table(title=f"{target} candidate ({code or 'warm start'}), profile {profile}, seeds {seed_list}, "
                        f"metric {metric}")
    for column in ("env", "return", "per seed", "lr", "anchor (seeds)", "random", "score (95% CI)", "p(improve)",
                   "verdict", "compile s", "train s"):
        table.add_column(column, justify="left" if column == "env" else "right")
    results = []
    for name in envs:
        try:
            scored = evaluate_code(settings, target, source, name, profile, seed_list,
                                   LearningRateProtocol(learning_rate), Metric(metric))
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
            scored_text(comparison.score, comparison.ci)
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
    spec_file: Annotated[Path | None, typer.Option("--spec", help="a run spec as YAML or JSON (the API's RunSpec); "
                                                   "flags win over it")] = None,
    preset: Annotated[str | None, typer.Option(help="a named protocol (paper, paper-open, quick, es-lpo); other "
                                               "flags win over it")] = None,
    target: Annotated[str | None, typer.Option(help="lpo, optimizer, open or advantage [lpo]")] = None,
    env: Annotated[list[str] | None, typer.Option(help="meta-train environment; repeat for several")] = None,
    test_env: Annotated[list[str] | None, typer.Option(help="meta-test environment; repeat for several "
                                                       "[the target's]")] = None,
    profile: Annotated[str | None, typer.Option(help="full, quick or smoke [quick]")] = None,
    proposer: Annotated[str | None, typer.Option(help="evolution, llm or es (black-box ES over the target's network) "
                                                 "[evolution]")] = None,
    generations: Annotated[int | None, typer.Option(help="ES generations (with --proposer es) [800]")] = None,
    population: Annotated[int | None, typer.Option(help="ES population, even (with --proposer es) [64]")] = None,
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
    """Run a whole discovery here (embedded database and executor unless configured otherwise). Ctrl-C interrupts
    it: `discovery runs resume RUN_ID` continues it."""
    from pydantic import ValidationError

    from service.runs.runner import RunInterrupted, RunRefused, run_to_completion
    from service.runs.spec import RunSpec

    if proposer not in (None, "evolution", "llm", "es"):
        fail(f"--proposer must be evolution, llm or es, got {proposer!r}")
    es_block = {k: v for k, v in (("generations", generations), ("population", population)) if v is not None}
    if es_block and proposer != "es":
        fail("--generations and --population need --proposer es")
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
                 ("reasoning_effort", reasoning_effort)) if v is not None}} if proposer == "llm"
             else {"kind": "es", **({"es": es_block} if es_block else {})} if proposer == "es"
             else {"kind": "evolution"} if proposer == "evolution" else None}
    if proposer != "llm" and (history or max_completion_tokens or reasoning_effort):
        fail("--history, --max-completion-tokens and --reasoning-effort need --proposer llm")
    chosen = merged(read_spec_file(spec_file) if spec_file else {},
                    {key: value for key, value in given.items() if value is not None})
    try:
        spec = RunSpec.model_validate(chosen)
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
    except RunInterrupted as exc:
        exit_interrupted(exc.run_id)
    if as_json:
        from service.runs.runner import run_result

        print(run_result(get_settings(), run_id).model_dump_json())
    if status != "completed":
        raise typer.Exit(EXIT_FAILED)


def read_spec_file(path: Path) -> dict:
    """A run spec from a YAML or JSON file, or one readable line on what is wrong with it."""
    import yaml

    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except OSError as exc:
        fail(f"--spec {path}: {exc.strerror or exc}")
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"--spec {path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
             f"{str(exc).splitlines()[0]}")
    if not isinstance(data, dict):
        fail(f"--spec {path}: a run spec is an object (a mapping of fields), not {type(data).__name__}")
    return data


def merged(base: dict, override: dict) -> dict:
    """`override` over `base`, key by key, into nested objects (flags win over a spec file); an object of another
    `kind` (a proposer) replaces the one it overrides."""
    out = dict(base)
    for key, value in override.items():
        inner = out.get(key)
        same_kind = (isinstance(inner, dict) and isinstance(value, dict)
                     and inner.get("kind") in (None, value.get("kind")))
        out[key] = merged(inner, value) if same_kind else value  # type: ignore[arg-type]
    return out


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
