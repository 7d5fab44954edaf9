"""What the pages show, read from the database: runs, one run, one candidate, a comparison.

Every function takes the caller's ApiKey and only reads rows of runs that key owns
(Run.owner_key_id), the same ownership rule as the REST API. A run or candidate of another key is
reported as missing (None), never as forbidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Candidate, Evaluation, LlmCall, Run
from service.runs.queries.candidates import (
    LEADERBOARD_SORTS,
    evaluated_in_order,
    evaluations_of,
    indices,
    island_scores,
    leaderboard,
    lineage,
    warm_start_evaluations,
)
from service.runs.queries.generations import all_generations
from service.runs.queries.runs import last_event_id, recent_runs, run_out
from service.runs.spec import LLMProposerSpec, RunSpec, SearchSpec, spec_of
from service.runs.views import GenerationOut, MetaTestCell, RunOut
from service.web.charts import FAIL_COLOR, Chart, RefLine, Series, render
from service.web.generations import generations_chart, newest
from workers.vocabulary import EvalPhase

LEADERBOARD_LIMIT = 200
PHASE_ORDER = {EvalPhase.TRAIN: 0, EvalPhase.REEVAL: 1, EvalPhase.TEST: 2}
PHASE_TITLE = {EvalPhase.TRAIN: "meta-train", EvalPhase.REEVAL: "re-evaluation (fresh seeds)",
               EvalPhase.TEST: "meta-test (held out)"}


def code_html(code: str) -> Markup:
    """Python source highlighted by pygments (its output escapes the source)."""
    return Markup(highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight", linenos="table")))


def diff_html(diff: str) -> Markup:
    return Markup(highlight(diff, DiffLexer(), HtmlFormatter(cssclass="highlight")))


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or datetime.now(UTC)) - start).total_seconds()


def search_parts(search: SearchSpec) -> list[str]:
    """How a run searched beyond one population, in a few words each: ["2 islands", "early stop"]."""
    return ([f"{search.islands} islands"] if search.islands > 1 else []) + \
        (["early stop"] if search.early_stopping is not None else [])


def search_settings(search: SearchSpec) -> list[str]:
    """The run's search settings in full, for its page's header (none: one population, no early stopping)."""
    settings = []
    if search.islands > 1:
        settings.append(f"{search.islands} islands, migrating their best every "
                        f"{search.migration_interval} proposals per island")
    stop = search.early_stopping
    if stop is not None:
        settings.append(f"early stopping: margin {stop.margin:g} below the median on the first "
                        f"environment, once {stop.min_evaluated} are scored")
    return settings


# --- the list of runs ------------------------------------------------------------------------------

@dataclass
class RunRow:
    run: Run
    done: int
    seconds: float | None

    @cached_property
    def spec(self) -> RunSpec:
        return spec_of(self.run)

    @property
    def models(self) -> list[str]:
        """The LLM run's models (an ensemble has several), none for evolution."""
        return list(self.spec.proposer.models) if isinstance(self.spec.proposer, LLMProposerSpec) else []

    @property
    def proposer(self) -> str:
        kind = self.spec.proposer.kind
        return f"{kind} ({', '.join(self.models)})" if self.models else kind

    @property
    def history(self) -> str:
        """What an LLM run's model saw of earlier candidates (bounded, conversation, none); "—" for evolution."""
        return self.spec.proposer.history if isinstance(self.spec.proposer, LLMProposerSpec) else "—"

    @property
    def search(self) -> str:
        return " · ".join(search_parts(self.spec.search)) or "—"

    @property
    def label(self) -> str:
        """The proposer and how it searched, e.g. "llm gpt-4o (history none, 2 islands)": runs that differ only in
        their history mode or search stay apart in a comparison."""
        kind = self.spec.proposer.kind
        how = [f"history {self.history}"] if kind == "llm" else []
        how += search_parts(self.spec.search)
        name = f"{kind} {', '.join(self.models)}" if self.models else kind
        return f"{name} ({', '.join(how)})" if how else name


def list_runs(session: Session, key: ApiKey, limit: int = 200) -> list[RunRow]:
    return [RunRow(run=run, done=done, seconds=seconds_between(run.started_at, run.finished_at))
            for run, done in recent_runs(session, key, limit)]


# --- one run ----------------------------------------------------------------------------------------

@dataclass
class RunPage:
    run: Run
    summary: RunOut
    chart: Markup
    leaderboard: list[Candidate]
    total_candidates: int
    sort: str
    order: str
    last_event_id: int
    index_of: dict[str, int] = field(default_factory=dict)
    island_chart: Markup | None = None  # with more than one island: each island's best so far
    search_settings: list[str] = field(default_factory=list)
    generations_chart: Markup | None = None  # an es run: the fitness of each generation
    generations: list[GenerationOut] = field(default_factory=list)  # an es run: the newest generations, newest first
    generations_told: int = 0

    @cached_property
    def spec(self) -> RunSpec:
        return spec_of(self.run)


def best_so_far(scores: list[float | None]) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for score in scores:
        if score is not None and (best is None or score > best):
            best = score
        out.append(best)
    return out


def run_chart(session: Session, run: Run) -> Markup:
    rows = evaluated_in_order(session, run.id)
    scored = [(n + 1, r) for n, r in enumerate(rows) if r.score is not None]
    failed = [(n + 1, r) for n, r in enumerate(rows) if r.score is None]
    best = best_so_far([r.score for r in rows])
    series = [
        Series("best so far", [(n + 1, b) for n, b in enumerate(best)], style="step", color="#e07b00"),
        Series("score", [(n, r.score) for n, r in scored], style="scatter", color="#0b6bcb",
               titles=[f"#{r.index} {r.name}: {r.score:.3f}" for _, r in scored],
               links=[f"/candidates/{r.id}" for _, r in scored]),
    ]
    if failed:
        series.append(Series("failed", [(n, None) for n, _ in failed], style="scatter", marker="cross",
                             color=FAIL_COLOR, titles=[f"#{r.index} {r.name}: failed" for _, r in failed],
                             links=[f"/candidates/{r.id}" for _, r in failed]))
    return render(Chart(series, title="Score of every candidate, in the order evaluated",
                        x_label="candidates evaluated", y_label="normalised score (1.0 = warm start)",
                        ref_lines=[RefLine(1.0, "warm start")], x_integer=True, width=1100, height=380,
                        empty_text="no candidate evaluated yet"))


def island_chart(session: Session, run: Run, islands: int) -> Markup:
    """Each island's best score so far against the proposal index: one step line per island."""
    rows = island_scores(session, run.id)
    series = []
    for island in range(islands):
        mine = [r for r in rows if r.island == island]
        best = best_so_far([r.score for r in mine])
        series.append(Series(f"island {island}", [(r.index, b) for r, b in zip(mine, best, strict=True)],
                             style="step"))
    return render(Chart(series, title="Best score so far on each island", x_label="proposal index",
                        y_label="best normalised score", ref_lines=[RefLine(1.0, "warm start")], x_integer=True,
                        width=1100, height=340, empty_text="no candidate evaluated yet"))


def run_page(session: Session, run: Run, sort: str = "score", order: str = "desc") -> RunPage:
    sort = sort if sort in LEADERBOARD_SORTS else "score"
    order = order if order in {"asc", "desc"} else "desc"
    board, total = leaderboard(session, run.id, sort, order == "desc", LEADERBOARD_LIMIT)
    summary = run_out(session, run)
    linked = {p for c in board for p in c.parent_ids} | {c.duplicate_of for c in board if c.duplicate_of}
    linked |= {i.best_candidate_id for i in summary.islands if i.best_candidate_id}
    told = all_generations(session, run.id) if summary.progress.generations_budget is not None else []
    return RunPage(run=run, summary=summary, chart=run_chart(session, run), leaderboard=board,
                   total_candidates=total, sort=sort, order=order, index_of=indices(session, linked),
                   last_event_id=last_event_id(session, run.id),
                   island_chart=island_chart(session, run, len(summary.islands)) if summary.islands else None,
                   search_settings=search_settings(spec_of(run).search),
                   generations_chart=generations_chart(told) if summary.progress.generations_budget is not None
                   else None, generations=newest(told), generations_told=len(told))


# --- one candidate -----------------------------------------------------------------------------------

@dataclass
class EnvView:
    evaluation: Evaluation
    chart: Markup | None
    warm: Evaluation | None
    diagnostics: list[Markup]  # PPO's loss parts over training, beside the warm start's


@dataclass
class CandidatePage:
    candidate: Candidate
    run: Run
    code: Markup
    diff: Markup | None
    parents: list[Candidate]
    children: list[Candidate]
    envs: list[EnvView]
    llm_call: LlmCall | None
    made_by: list[str] = field(default_factory=list)  # its model and island, when the run has them to tell apart


def made_by(candidate: Candidate, run: Run) -> list[str]:
    """Where a candidate came from: the model that proposed it and, with more than one island, its island."""
    islands = spec_of(run).search.islands
    return ([f"proposed by {candidate.model}"] if candidate.model else []) + \
        ([f"island {candidate.island} of {islands}"] if islands > 1 and candidate.island is not None else [])


def curve_at_best_lr(e: Evaluation | None) -> list[float] | None:
    """The learning curve at the evaluation's best learning rate (curves = {learning_rates, returns})."""
    if e is None or not e.curves or e.best_lr is None:
        return None
    lrs, returns = e.curves.get("learning_rates") or [], e.curves.get("returns") or []
    if not lrs or len(returns) != len(lrs):
        return None
    row = min(range(len(lrs)), key=lambda i: abs(float(lrs[i]) - e.best_lr))
    return [float(v) for v in returns[row]]


def curve_chart(e: Evaluation, warm: Evaluation | None, is_warm_start: bool) -> Markup | None:
    mine = curve_at_best_lr(e)
    theirs = None if is_warm_start else curve_at_best_lr(warm)
    if mine is None:
        return None
    series = [Series(f"this candidate (lr {e.best_lr:g})", [(i + 1, v) for i, v in enumerate(mine)])]
    per_seed = (e.curves or {}).get("seed_curves") or []
    if len(per_seed) >= 2 and len({len(c) for c in per_seed}) == 1:
        low, high = np.percentile(np.asarray(per_seed, dtype=float), [25, 75], axis=0)
        series.insert(0, Series(f"middle half of its {len(per_seed)} seeds", [(i + 1, float(v)) for i, v in
                                                                             enumerate(high)],
                                style="band", color="#0b6bcb", lower=[float(v) for v in low]))
    if theirs is not None and warm is not None:
        series.append(Series(f"warm start (lr {warm.best_lr:g})", [(i + 1, v) for i, v in enumerate(theirs)],
                             color="#6a737d", dashed=True))
    return render(Chart(series, title=f"{e.env} · {PHASE_TITLE.get(e.phase, e.phase)}",
                        x_label="training progress (logged point)", y_label="mean episode return",
                        x_integer=True, width=560, height=300))


DIAGNOSTIC_TITLES = {"actor_loss": "actor loss", "value_loss": "value loss", "entropy": "policy entropy",
                     "approx_kl": "approximate KL (old ‖ new)", "clip_fraction": "share of |ratio − 1| > ε"}


def diagnostic_charts(e: Evaluation, warm: Evaluation | None, is_warm_start: bool) -> list[Markup]:
    """How the candidate changed PPO's update: one small chart per loss part, the warm start dashed."""
    mine = (e.curves or {}).get("diagnostics") or {}
    theirs = {} if is_warm_start or warm is None else (warm.curves or {}).get("diagnostics") or {}
    charts = []
    for name, title in DIAGNOSTIC_TITLES.items():
        if not mine.get(name):
            continue
        series = [Series("this candidate", [(i + 1, v) for i, v in enumerate(mine[name])])]
        if theirs.get(name):
            series.append(Series("warm start", [(i + 1, v) for i, v in enumerate(theirs[name])], color="#6a737d",
                                 dashed=True))
        charts.append(render(Chart(series, title=f"{e.env} · {title}", x_label="training progress",
                                   x_integer=True, width=560, height=260)))
    return charts


def candidate_page(session: Session, candidate: Candidate) -> CandidatePage:
    run = session.get(Run, candidate.run_id)
    family = lineage(session, candidate)
    evaluations = evaluations_of(session, candidate)
    warm_evals = {} if candidate.is_warm_start else warm_start_evaluations(session, candidate.run_id)
    envs = []
    env_order = {env: i for i, env in enumerate([*run.train_envs, *run.test_envs])}
    for e in sorted(evaluations, key=lambda e: (PHASE_ORDER.get(e.phase, 9), env_order.get(e.env, 99), e.env)):
        warm = warm_evals.get((e.env, e.phase)) or warm_evals.get((e.env, EvalPhase.TRAIN))
        envs.append(EnvView(evaluation=e, chart=curve_chart(e, warm, candidate.is_warm_start), warm=warm,
                            diagnostics=diagnostic_charts(e, warm, candidate.is_warm_start)))
    call = session.get(LlmCall, candidate.llm_call_id) if candidate.llm_call_id else None
    return CandidatePage(candidate=candidate, run=run, code=code_html(candidate.code),
                         diff=diff_html(family.diff) if family.diff else None, parents=family.parents,
                         children=family.children, envs=envs, llm_call=call, made_by=made_by(candidate, run))


# --- comparison --------------------------------------------------------------------------------------

@dataclass
class CompareCell:
    score: float | None
    final_return: float | None
    outcome: str | None
    score_ci: tuple[float, float] | None = None
    verdict: str | None = None

    @classmethod
    def of(cls, cell: MetaTestCell) -> CompareCell:
        return cls(cell.normalised_score, cell.final_return, cell.outcome, cell.score_ci, cell.verdict)


@dataclass
class ComparePage:
    runs: list[RunRow]
    summaries: list[RunOut]
    chart: Markup | None
    envs: list[str]
    cells: dict[tuple[str, str], CompareCell]  # (run id, env) -> the run's best on that env
    warm: dict[tuple[str, str], CompareCell]  # (run id, env) -> the run's warm start on that env
    references: dict[tuple[str, str], dict[str, CompareCell]]  # (run id, env) -> reference name -> its cell
    choices: list[RunRow]
    selected: set[str]


def compare_page(session: Session, key: ApiKey, run_ids: list[str]) -> ComparePage:
    choices = list_runs(session, key)
    by_id = {row.run.id: row for row in choices}
    picked = [by_id[r] for r in dict.fromkeys(run_ids) if r in by_id]
    summaries = [run_out(session, row.run) for row in picked]
    series = []
    for row in picked:
        best = best_so_far([r.score for r in evaluated_in_order(session, row.run.id)])
        label = f"{row.label} · {row.run.target} · {row.run.id[:8]}"
        series.append(Series(label, [(n + 1, b) for n, b in enumerate(best)], style="step"))
    chart = None
    if picked:
        chart = render(Chart(series, title="Best score so far against candidates evaluated",
                             x_label="candidates evaluated", y_label="best normalised score",
                             ref_lines=[RefLine(1.0, "warm start")], x_integer=True, width=1100, height=400))
    envs: list[str] = []
    cells: dict[tuple[str, str], CompareCell] = {}
    warm: dict[tuple[str, str], CompareCell] = {}
    references: dict[tuple[str, str], dict[str, CompareCell]] = {}
    for summary in summaries:
        for row in summary.meta_test:
            if row.env not in envs:
                envs.append(row.env)
            if row.best:
                cells[(summary.id, row.env)] = CompareCell.of(row.best)
            if row.warm_start:
                warm[(summary.id, row.env)] = CompareCell.of(row.warm_start)
            references[(summary.id, row.env)] = {name: CompareCell.of(c) for name, c in row.references.items() if c}
    return ComparePage(runs=picked, summaries=summaries, chart=chart, envs=envs, cells=cells, warm=warm,
                       references=references,
                       choices=choices, selected={row.run.id for row in picked})
