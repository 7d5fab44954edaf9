"""Starting a run (shared by the API and the CLI) and watching one to the end in a terminal.

In a terminal, Ctrl-C (or SIGTERM) interrupts the run instead of leaving it `running` for whatever process
starts next: it becomes `interrupted` (`orchestrator.interrupt`) and `discovery runs resume` continues it here
(`resume_to_completion`)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Candidate, Evaluation, Run
from service.keys import UnknownKey, cli_owner
from service.runs.orchestrator import advance, create_run, interrupt, resume
from service.runs.queries.cost import run_cost
from service.runs.queries.generations import generations_told
from service.runs.queries.runs import discovery_of
from service.runs.spec import ESProposerSpec, RunSpec, spec_of
from service.runs.views import Discovery, RunCost
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from service.webhooks import UnsafeWebhookURL, check_webhook_url
from workers.results import score_text
from workers.vocabulary import EvalPhase, ScoreBasis, Task, TaskKind


class RunRefused(ValueError):
    """The run cannot start as asked (the message says why)."""


def start_run(runtime: Runtime, spec: RunSpec, owner_key_id: str | None = None,
              idempotency_key: str | None = None) -> str:
    """Create the run and set it going; raise RunRefused for what validation of the shape cannot see."""
    if spec.proposer.kind == "llm" and not (spec.proposer.base_url or runtime.settings.openai_base_url):
        raise RunRefused("the llm proposer needs an endpoint: set DISCOVERY_OPENAI_BASE_URL or proposer.base_url")
    if spec.proposer.kind == "llm" and spec.proposer.base_url is not None and \
            not runtime.settings.llm_endpoint_allowed(str(spec.proposer.base_url)):
        raise RunRefused(f"proposer.base_url: {spec.proposer.base_url} is not an endpoint this server's operator "
                         "allows (the operator's key goes only to DISCOVERY_OPENAI_BASE_URL and "
                         "DISCOVERY_OPENAI_ALLOWED_BASE_URLS); leave it out to use the server's endpoint")
    if spec.webhook is not None:
        try:
            check_webhook_url(str(spec.webhook.url), runtime.settings)
        except UnsafeWebhookURL as exc:
            raise RunRefused(f"webhook.url: {exc}") from None
    with session_scope(runtime.factory) as session:
        run, jobs = create_run(session, spec, owner_key_id=owner_key_id, idempotency_key=idempotency_key)
        run_id, to_publish = run.id, [Task(j.id, TaskKind(j.kind)) for j in jobs]
    runtime.publish(to_publish)
    advance(runtime.factory, run_id, runtime.publish)
    return run_id


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run watched here: it is `interrupted`, its jobs wait in the database, and
    the executor was closed without waiting (the process should exit now; `discovery runs resume` continues)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} interrupted")
        self.run_id = run_id


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """In the main thread, SIGTERM raises KeyboardInterrupt as Ctrl-C does (a `kill`, a closing terminal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_to_completion(settings: Settings, spec: RunSpec, console: Console) -> tuple[str, str]:
    """Run a discovery in this process with a progress bar, then print its report; returns (run id, status).

    Ctrl-C or SIGTERM marks the run interrupted and raises RunInterrupted."""
    upgrade_database(settings.database_url)
    runtime = build_runtime(settings, local_workers=spec.concurrency, sweep_interval=5.0)
    with _closing(runtime), sigterm_interrupts():
        owner = _cli_owner_id(runtime)
        run_id = start_run(runtime, spec, owner_key_id=owner)
        budget = (f"{spec.proposer.es.generations} generations of {spec.proposer.es.population}"
                  if isinstance(spec.proposer, ESProposerSpec) else f"{spec.budget.candidates} candidates")
        console.print(f"run {run_id}: {spec.target} on {', '.join(spec.environments.train)}, "
                      f"{spec.proposer.kind} proposer, {budget}, profile {spec.profile}")
        return run_id, _watch(runtime, run_id, console)


def resume_to_completion(settings: Settings, run_id: str, console: Console) -> str:
    """Resume an interrupted run of this machine's database in this process, as `run_to_completion` runs a new
    one; returns its final status. RunRefused when the run is not this identity's or not interrupted."""
    upgrade_database(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        owner = cli_owner(session, settings).id if run is not None else None
        if run is None or run.owner_key_id != owner:
            raise RunRefused(f"no run {run_id!r} of yours in {settings.database_url.split('@')[-1]}")
        concurrency = run.concurrency
    factory.kw["bind"].dispose()
    runtime = build_runtime(settings, local_workers=concurrency, sweep_interval=5.0)
    with _closing(runtime), sigterm_interrupts():
        refused = resume(runtime.factory, run_id)
        if refused is not None:
            raise RunRefused(refused)
        console.print(f"run {run_id} resumed")
        advance(runtime.factory, run_id, runtime.publish)
        return _watch(runtime, run_id, console)


@contextmanager
def _closing(runtime: Runtime) -> Iterator[None]:
    """Close the executor at the end, waiting for its jobs; on Ctrl-C, without waiting (the process exits)."""
    wait = True
    try:
        yield
    except (RunInterrupted, KeyboardInterrupt):
        wait = False
        raise
    finally:
        runtime.executor.close(wait=wait)


def _cli_owner_id(runtime: Runtime) -> str:
    with session_scope(runtime.factory) as session:
        try:
            return cli_owner(session, runtime.settings).id
        except UnknownKey as exc:
            raise RunRefused(str(exc)) from None


def _watch(runtime: Runtime, run_id: str, console: Console) -> str:
    """Show the run's progress until it ends, then its report; its final status. Ctrl-C (or SIGTERM) interrupts
    the run instead: RunInterrupted."""
    try:
        status = _progress(runtime, run_id, console)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the record short
        if interrupt(runtime.factory, run_id):
            raise RunInterrupted(run_id) from None
        with session_scope(runtime.factory) as session:  # it had just ended on its own
            status = session.get(Run, run_id).status
    print_report(runtime, run_id, console)
    return status


def _progress_total(run: Run) -> tuple[str, int]:
    """What the bar counts and up to what: an es run's generations (its budget), another run's candidates (the
    proposals and the warm start)."""
    proposer = spec_of(run).proposer
    if isinstance(proposer, ESProposerSpec):
        return "generations", proposer.es.generations
    return "candidates", spec_of(run).budget.candidates + 1


def _done(session: Session, run_id: str, counted: str) -> int:
    if counted == "generations":
        return generations_told(session, run_id)
    return session.scalar(select(func.count()).select_from(Candidate).where(
        Candidate.run_id == run_id, Candidate.reference.is_(None), Candidate.finished)) or 0


def _progress(runtime: Runtime, run_id: str, console: Console) -> str:
    with session_scope(runtime.factory) as session:
        counted, total = _progress_total(session.get(Run, run_id))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} "
                                                                            "{task.fields[counted]}"),
                  TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(counted, total=total, best="-", counted=counted)
        while True:
            with session_scope(runtime.factory) as session:
                run = session.get(Run, run_id)
                done = _done(session, run_id, counted)
                status, best, stopped = run.status, run.best_score, run.stopped
            progress.update(task, completed=done, best=f"{best:.3f}" if best is not None else "-",
                            description=status)
            if stopped:
                return status
            time.sleep(0.5)


def print_report(runtime: Runtime, run_id: str, console: Console) -> None:
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        rows = session.scalars(select(Candidate).where(Candidate.run_id == run_id)).all()
        candidates = [c for c in rows if c.reference is None]
        references = sorted((c for c in rows if c.reference is not None), key=lambda c: -c.index)
        tests = session.scalars(select(Evaluation).join(Candidate).where(
            Candidate.run_id == run_id, Evaluation.phase == EvalPhase.TEST)).all()
        board = Table(title=f"leaderboard of run {run_id} ({run.status}; scores of the {run.metric} return against the "
                            "anchor, 95% intervals)")
        for column in ("#", "name", "outcome", "search score (95% CI)", "verified score (CI, verdict)", "parents",
                       "error"):
            board.add_column(column)
        ranked = sorted(candidates, key=lambda c: c.counted_score if c.counted_score is not None else float("-inf"),
                        reverse=True)
        index_of = {c.id: c.index for c in candidates}
        for c in ranked:
            board.add_row(str(c.index), Text(c.name[:40]), c.outcome or c.status,
                          score_text(c.score, c.stats.get("search")) if c.score is not None else "-",
                          score_text(c.verified_score, c.stats.get("verification"))
                          if c.stats.get("verification") else "-",
                          ",".join(str(index_of.get(p, "?")) for p in c.parent_ids),
                          Text((c.error or "").splitlines()[0][:60] if c.error else ""))
        console.print(board)
        if tests:
            meta = Table(title=f"meta-test on held-out environments, {run.metatest_seeds} fresh seeds, "
                               f"{run.lr_protocol} learning rate: normalised score (return); "
                               "* a return ratio (the warm start was within noise of random)")
            meta.add_column("environment")
            best = next((c for c in candidates if c.id == run.best_candidate_id), None)
            warm = next(c for c in candidates if c.is_warm_start)
            finalists = [c for c in (best, warm) if c is not None]
            finalists = list({c.id: c for c in finalists}.values()) + references
            for c in finalists:
                meta.add_column(Text("warm start (#0)" if c.is_warm_start else f"{c.name} (reference)" if c.reference
                                     else f"{c.name} (#{c.index})"))
            for env in run.test_envs:
                cells = []
                for c in finalists:
                    e = next((t for t in tests if t.candidate_id == c.id and t.env == env), None)
                    flag = "*" if e is not None and e.score_basis == ScoreBasis.return_ratio else ""
                    cells.append("-" if e is None else e.outcome if e.final_return is None else
                                 f"{score_text(e.normalised_score, (e.stats or {}).get('comparison'))}{flag} "
                                 f"({e.final_return:.1f})")
                meta.add_row(env, *cells)
            console.print(meta)
        if run.error:
            console.print(f"run failed: {run.error}", style="red", markup=False)
        best = next((c for c in candidates if c.id == run.best_candidate_id), None)
        if best is not None:
            console.print(f"best: #{best.index} {best.name}, verified score "
                          f"{score_text(best.verified_score, best.stats.get('verification'))}", markup=False)
            console.print(Syntax(best.code, "python"))
        console.print(f"verdict: {discovery_of(run).message}", markup=False)
        console.print(cost_text(run_cost(session, run_id)), markup=False)


def cost_text(cost: RunCost) -> str:
    """A run's cost on one line: environment steps and trainer seconds, in total and per phase."""
    parts = ", ".join(f"{name} {part.env_steps:,} ({part.trainer_seconds:.0f} s)" for name, part in (
        ("search", cost.search), ("verification", cost.verification), ("meta-test", cost.meta_test)))
    return f"cost: {cost.total.env_steps:,} environment steps, trainer {cost.total.trainer_seconds:.0f} s ({parts})"


class LeaderboardRow(BaseModel):
    candidate_id: str
    index: int
    name: str
    outcome: str | None
    score: float | None
    verified_score: float | None
    verdict: str | None


class RunResult(BaseModel):
    """What `discovery run --json` prints: the run's ending and its leaderboard, best first."""

    run_id: str
    status: str
    error: str | None
    best_candidate_id: str | None
    best_score: float | None
    discovery: Discovery
    cost: RunCost  # environment steps and trainer seconds per phase and in total
    candidates: list[LeaderboardRow]


def run_result(settings: Settings, run_id: str) -> RunResult:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            run = session.get(Run, run_id)
            assert run is not None
            rows = session.scalars(select(Candidate).where(Candidate.run_id == run_id,
                                                          Candidate.reference.is_(None))).all()
            board = sorted(rows, key=lambda c: (-(c.counted_score if c.counted_score is not None else float("-inf")),
                                                c.index))
            return RunResult(
                run_id=run.id, status=run.status, error=run.error, best_candidate_id=run.best_candidate_id,
                best_score=run.best_score, discovery=discovery_of(run), cost=run_cost(session, run_id),
                candidates=[LeaderboardRow(candidate_id=c.id, index=c.index, name=c.name, outcome=c.outcome,
                                           score=c.score, verified_score=c.verified_score, verdict=c.verdict)
                            for c in board])
    finally:
        engine.dispose()
