"""The web UI for the search strategies, in headless Chromium: an ensemble's models, islands with their own
best-so-far lines, candidates stopped early, and the comparison of an LLM run without history against the full
loop. The runs are built in the database (nothing is trained); the expectations are counted from the rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import delete, select

from service.db import session_scope
from service.db.models import Candidate, Evaluation, LlmCall, Run
from tests.web.conftest import TRAIN_ENVS, WebServer, build_run, watched_page

ENSEMBLE = ["gpt-4o", "qwen2.5-coder-7b"]


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


@dataclass
class SearchRun:
    id: str
    candidates: list[Candidate]  # detached rows as the page reads them, index order (0 = warm start)
    stopped: Candidate | None  # the candidate early stopping stopped


def search_run(web: WebServer, owner_id: str, key: str, *, models: list[str], history: str, islands: int = 1,
               early_stopping: bool = False, seed: int = 0) -> SearchRun:
    """A finished LLM run (conftest's build_run) turned into one that searched this way: each proposal's model
    round-robin over the ensemble, its island (index - 1) mod islands, and with early stopping the weakest
    candidate scored on the first environment only."""
    factory = web.runtime.factory
    built = build_run(factory, owner_id, key, proposer="llm", candidates=12, seed=seed)
    with session_scope(factory) as session:
        run = session.get(Run, built.id)
        run.proposer = {"kind": "llm", "model": models[0], "models": models, "bandit": "thompson",
                        "history": history, "temperature": 0.8}
        run.search = {"islands": islands, "migration_interval": 3,
                      "early_stopping": {"margin": 0.5, "min_evaluated": 4} if early_stopping else None}
        proposals = session.scalars(select(Candidate).where(Candidate.run_id == run.id, Candidate.index > 0)
                                    .order_by(Candidate.index)).all()
        model_of = {}
        for c in proposals:
            c.model, c.island = models[(c.index - 1) % len(models)], (c.index - 1) % islands
            model_of[c.id] = c.model
        for call in session.scalars(select(LlmCall).where(LlmCall.run_id == run.id)):
            call.model = model_of[call.candidate_id]
        stopped = None
        if early_stopping:
            stopped = min((c for c in proposals if c.status == "evaluated" and c.verified_score is None
                           and c.id != run.best_candidate_id), key=lambda c: c.score)
            session.execute(delete(Evaluation).where(Evaluation.candidate_id == stopped.id,
                                                     Evaluation.env == TRAIN_ENVS[1]))
            first = session.scalar(select(Evaluation.normalised_score).where(
                Evaluation.candidate_id == stopped.id, Evaluation.env == TRAIN_ENVS[0]))
            stopped.stopped_early, stopped.score = True, first
        session.flush()
        rows = session.scalars(select(Candidate).where(Candidate.run_id == run.id, Candidate.reference.is_(None))
                               .order_by(Candidate.index)).all()
        session.expunge_all()
    return SearchRun(id=built.id, candidates=list(rows),
                     stopped=next((c for c in rows if c.stopped_early), None) if stopped else None)


@dataclass
class Runs:
    key: str
    ensemble: SearchRun  # two models, two islands, early stopping, history bounded
    no_history: SearchRun  # one model, history none: the model sees only the warm start


@pytest.fixture(scope="module")
def runs(web: WebServer) -> Runs:
    key = web.new_key("dana")
    owner = web.key_id(key)
    return Runs(key=key,
                ensemble=search_run(web, owner, key, models=ENSEMBLE, history="bounded", islands=2,
                                    early_stopping=True, seed=5),
                no_history=search_run(web, owner, key, models=["gpt-4o"], history="none", seed=6))


@pytest.fixture
def dana_page(browser: Browser, web: WebServer, runs: Runs) -> Iterator[Page]:
    yield from watched_page(browser, web, runs.key)


def pooled(c: Candidate) -> float | None:
    return c.verified_score if c.verified_score is not None else c.score


def test_an_ensemble_run_shows_each_models_proposals_improvements_and_cost(dana_page: Page, runs: Runs,
                                                                           screenshots: Path) -> None:
    page = dana_page
    run = runs.ensemble
    page.goto(f"/runs/{run.id}")
    expect(page.locator("h1")).to_have_text(f"lpo · llm ({', '.join(ENSEMBLE)})")
    header = page.locator("p.muted").first
    expect(header).to_contain_text("history bounded")
    expect(header).to_contain_text("picked by thompson")
    expect(header).to_contain_text("2 islands, migrating their best every 3 proposals per island")
    expect(header).to_contain_text("early stopping: margin 0.5 below the median")
    rows = page.locator("#models tbody tr")
    expect(rows).to_have_count(len(ENSEMBLE))
    scores = {c.id: c.score for c in run.candidates}
    warm = next(c.score for c in run.candidates if c.is_warm_start)
    for row, model in zip(rows.all(), ENSEMBLE, strict=True):
        mine = [c for c in run.candidates if c.model == model]
        # Improved: scored above its parent (above the warm start when it has none, or its parent failed).
        parents = [scores[c.parent_ids[0]] if c.parent_ids else None for c in mine]
        improved = sum(c.outcome == "ok" and c.score is not None and c.score > (warm if parent is None else parent)
                       for c, parent in zip(mine, parents, strict=True))
        tokens = sum(2710 + 30 * c.index for c in mine)
        best = max(pooled(c) for c in mine if pooled(c) is not None)
        cells = [cell.inner_text() for cell in row.locator("td").all()]
        assert cells == [model, str(len(mine)), str(sum(c.outcome == "ok" for c in mine)), str(improved),
                         f"{tokens:,}", f"${0.004 * len(mine):.4f}", f"{best:.3f}"]
    # The leaderboard says which model proposed each candidate and on which island.
    page.click("#leaderboard th >> text=#")  # index order, ascending
    second = page.locator("#leaderboard tbody tr").nth(2)
    expect(second.locator("td.model")).to_have_text(ENSEMBLE[1])
    expect(second.locator("td.island")).to_have_text("1")
    expect(page.locator("#leaderboard tbody tr").first.locator("td.island")).to_have_text("—")  # the warm start
    shoot(page, screenshots, "run-ensemble")


def test_a_run_with_two_islands_charts_each_islands_best_so_far(dana_page: Page, runs: Runs) -> None:
    page = dana_page
    run = runs.ensemble
    page.goto(f"/runs/{run.id}")
    chart = page.locator("#islands-chart svg")
    legend = chart.locator("text").all_text_contents()
    assert "island 0" in legend and "island 1" in legend and "island 2" not in legend
    lines = chart.locator("polyline").all()
    assert len(lines) == 2  # one step line per island
    finished = [c for c in run.candidates if c.index > 0 and c.status in ("evaluated", "failed")]
    per_island = sorted(sum(c.island == i for c in finished) for i in range(2))
    assert sorted(len(line.get_attribute("points").split()) for line in lines) == [2 * n - 1 for n in per_island]
    assert len({line.get_attribute("stroke") for line in lines}) == 2
    table = page.locator("#islands tbody tr")
    expect(table).to_have_count(2)
    for i in range(2):
        mine = [c for c in run.candidates if c.island == i]
        best = max((c for c in mine if pooled(c) is not None), key=pooled)
        cells = table.nth(i).locator("td")
        expect(cells.nth(0)).to_have_text(str(i))
        expect(cells.nth(1)).to_have_text(str(len(mine)))
        expect(cells.nth(2)).to_have_text(f"{pooled(best):.3f}")
        expect(cells.nth(3).locator(f"a[href='/candidates/{best.id}']")).to_have_text(f"#{best.index}")


def test_a_candidate_stopped_early_is_tagged_on_the_run_and_its_own_page(dana_page: Page, runs: Runs,
                                                                         screenshots: Path) -> None:
    page = dana_page
    stopped = runs.ensemble.stopped
    assert stopped is not None
    page.goto(f"/runs/{runs.ensemble.id}")
    tags = page.locator("#leaderboard .stopped-tag")
    expect(tags).to_have_count(1)
    row = page.locator("#leaderboard tbody tr", has=page.locator(f"a[href='/candidates/{stopped.id}']"))
    expect(row.locator(".stopped-tag")).to_have_text("stopped early")
    page.goto(f"/candidates/{stopped.id}")
    expect(page.locator(".run-head .stopped-tag")).to_have_text("stopped early")
    expect(page.locator("#made-by")).to_have_text(f"proposed by {stopped.model} · island {stopped.island} of 2")
    expect(page.locator(".stat").first).to_contain_text(f"on {TRAIN_ENVS[0]} only (stopped early)")
    expect(page.locator("#evaluations tbody tr")).to_have_count(1)  # trained on the first environment only
    shoot(page, screenshots, "candidate-stopped-early")
    other = next(c for c in runs.ensemble.candidates if c.index > 0 and not c.stopped_early)
    page.goto(f"/candidates/{other.id}")
    expect(page.locator(".stopped-tag")).to_have_count(0)


def test_a_single_model_run_without_islands_has_neither_section(dana_page: Page, runs: Runs) -> None:
    page = dana_page
    page.goto(f"/runs/{runs.no_history.id}")
    expect(page.locator("#history-mode")).to_have_text("none")
    expect(page.locator("#leaderboard")).to_be_visible()
    expect(page.locator("#models")).to_have_count(0)
    expect(page.locator("#islands")).to_have_count(0)
    expect(page.locator("#leaderboard td.model")).to_have_count(0)
    expect(page.locator("#leaderboard td.island")).to_have_count(0)


def test_the_comparison_sets_the_no_history_ablation_beside_the_full_loop(dana_page: Page, runs: Runs,
                                                                          screenshots: Path) -> None:
    page = dana_page
    page.goto(f"/compare?run={runs.no_history.id}&run={runs.ensemble.id}")
    legend = page.locator("#compare-chart svg text").all_text_contents()
    assert f"llm gpt-4o (history none) · lpo · {runs.no_history.id[:8]}" in legend
    assert (f"llm {', '.join(ENSEMBLE)} (history bounded, 2 islands, early stop) · lpo · {runs.ensemble.id[:8]}"
            in legend)
    rows = page.locator("#compare-summary tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td.history")).to_have_text("none")
    expect(rows.nth(0).locator("td.search")).to_have_text("—")
    expect(rows.nth(1).locator("td.history")).to_have_text("bounded")
    expect(rows.nth(1).locator("td.search")).to_have_text("2 islands · early stop")
    expect(page.locator("#compare-meta-test thead th.group").first).to_contain_text("history none")
    shoot(page, screenshots, "compare-history")
