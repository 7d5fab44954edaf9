"""The web UI in headless Chromium: what a person sees on each page of finished runs with real-looking data,
that model-written text is shown as text, that each key sees only its own runs, and live updates."""

from __future__ import annotations

import ast
import base64
import json
import random
import re
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select

from service.db import session_scope, utcnow
from service.db.models import Candidate, Evaluation, Event, Run
from service.runs.export import EXPORT_COLUMNS
from service.web.routes import templates
from tests.web.conftest import EVIL, TEST_ENVS, TRAIN_ENVS, WebServer, World, evaluation, login


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_pages_need_a_login_and_a_known_key(browser: Browser, web: WebServer, world: World,
                                            screenshots: Path) -> None:
    context = browser.new_context(base_url=web.url)
    page = context.new_page()
    page.goto(f"/runs/{world.llm.id}")
    assert page.url.startswith(f"{web.url}/login?next=")
    page.fill("#api_key", "dsk_not-a-key")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("unknown or revoked")
    shoot(page, screenshots, "login-refused")
    page.fill("#api_key", world.alice)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/runs/{world.llm.id}")  # back where the person was going
    expect(page.locator("h1")).to_contain_text("lpo · llm")
    page.click("text=Log out")
    page.wait_for_url(f"{web.url}/login")
    page.goto("/")
    assert page.url.startswith(f"{web.url}/login")
    context.close()
    # Without a session, the UI's event stream says nothing.
    assert httpx.get(f"{web.url}/runs/{world.llm.id}/events").status_code == 404


def test_the_session_cookie_holds_no_key_and_pages_send_a_strict_csp(web: WebServer, world: World) -> None:
    with httpx.Client(base_url=web.url) as client:
        client.post("/login", content=f"api_key={world.alice}",
                    headers={"content-type": "application/x-www-form-urlencoded"})
        cookie = client.cookies["discovery_session"]
        payload = json.loads(base64.b64decode(cookie.split(".")[0] + "=="))
        assert set(payload) == {"key_id", "key_name"} and world.alice not in cookie
        response = client.get("/")
        assert response.status_code == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert templates.autoescape is True


def test_the_run_pages_downloads_work_with_the_browser_session(web: WebServer, world: World) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=web.url) as alice, httpx.Client(base_url=web.url) as bob:
        alice.post("/login", content=f"api_key={world.alice}", headers=form)
        bob.post("/login", content=f"api_key={world.bob}", headers=form)
        run_id = world.llm.id
        page = alice.get(f"/runs/{run_id}").text
        for name in ("export.csv", "export.jsonl", "best.py"):
            assert f'href="/runs/{run_id}/{name}"' in page
        table = alice.get(f"/runs/{run_id}/export.csv")
        assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
        assert table.text.splitlines()[0] == ",".join(EXPORT_COLUMNS) and len(table.text.splitlines()) > 1
        best = alice.get(f"/runs/{run_id}/best.py")
        assert best.status_code == 200 and "attachment" in best.headers["content-disposition"]
        assert any(isinstance(node, ast.FunctionDef) for node in ast.parse(best.text).body)
        for name in ("export.csv", "export.jsonl", "best.py"):  # another key's run is not found, not forbidden
            assert bob.get(f"/runs/{run_id}/{name}").status_code == 404
        assert httpx.get(f"{web.url}/runs/{run_id}/export.csv").status_code in (303, 401, 404)  # no session


def test_the_runs_list_shows_each_run_at_a_glance(alice_page: Page, world: World, screenshots: Path) -> None:
    page = alice_page
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(3)  # alice's three runs, not bob's
    llm = page.locator("#runs tbody tr", has=page.locator(f"a[href='/runs/{world.llm.id}']"))
    cells = llm.locator("td")
    assert cells.nth(2).inner_text() == "completed"
    assert cells.nth(3).inner_text() == "lpo"
    assert cells.nth(4).inner_text() == "llm (qwen2.5-coder-7b)"
    assert cells.nth(5).inner_text() == "12 / 12"
    assert cells.nth(6).inner_text() == f"{world.llm.best_score:.3f}"
    assert cells.nth(7).inner_text().endswith("UTC")
    assert cells.nth(8).inner_text() == "42m 00s"  # 3 min per candidate + 6 min of meta-test
    running = page.locator("#runs tbody tr", has=page.locator(f"a[href='/runs/{world.running.id}']"))
    assert running.locator("td").nth(2).inner_text() == "running"
    shoot(page, screenshots, "runs")


def test_a_run_page_shows_the_chart_leaderboard_meta_test_and_budget(alice_page: Page, web: WebServer,
                                                                     world: World, screenshots: Path) -> None:
    page = alice_page
    run = world.llm
    page.goto(f"/runs/{run.id}")
    expect(page.locator("h1")).to_have_text("lpo · llm (qwen2.5-coder-7b)")
    expect(page.locator("#progress")).to_have_text("12 / 12")
    expect(page.locator("#best-score")).to_have_text(f"{run.best_score:.3f}")
    # Whether the run found anything is said first, in the words of the verdict; the best's interval beside it.
    with session_scope(web.runtime.factory) as session:
        best = session.get(Candidate, run.best_id)
        verdict, verified = best.verdict, best.stats.get("verification")
    expect(page.locator("#discovery")).to_contain_text("A discovery: the best candidate beats the warm start"
                                                       if verdict == "better" else "No candidate beat the warm start")
    if verified:
        expect(page.locator("#summary")).to_contain_text(f"95% CI {verified['ci'][0]:.2f}–{verified['ci'][1]:.2f}")
        expect(page.locator("#summary .verdict-" + verdict)).to_have_text(verdict)
    summary = page.locator("#summary").inner_text()
    assert "TOKENS" in summary.upper() and "of 200,000 budget" in summary and "$0.0480" in summary
    # The chart: one dot per scored candidate, one red cross per failed one, the best-so-far line, axes, legend.
    chart = page.locator("#scores svg")
    failed = [c for c in run.candidates if c.status == "failed"]
    scored = [c for c in run.candidates if c.score is not None and not c.is_warm_start]
    assert chart.locator("circle").count() == len(scored) + 1  # + the legend's dot
    assert chart.locator("g[stroke='#c62828']").count() == len(failed) + 1  # + the legend's cross
    assert chart.locator("polyline").count() == 1
    texts = chart.locator("text").all_text_contents()
    assert {"score", "best so far", "failed", "warm start", "candidates evaluated"} <= set(texts)
    assert "12" in texts  # the last x tick
    # The leaderboard: all 13 candidates, best first by default, the best row marked.
    rows = page.locator("#leaderboard tbody tr")
    expect(rows).to_have_count(13)
    expect(rows.first).to_have_class("best")
    best = next(c for c in run.candidates if c.id == run.best_id)
    expect(rows.first.locator("td").nth(1)).to_contain_text(best.name)
    # Sort by index, ascending: the warm start comes first.
    page.click("#leaderboard th >> text=#")
    expect(rows.first.locator("td").nth(0)).to_have_text("0")
    expect(rows.first).to_contain_text("warm start")
    page.click("#leaderboard th >> text=#")  # again: descending
    expect(rows.first.locator("td").nth(0)).to_have_text("12")
    # Meta-test: the best against the warm start on each held-out environment.
    meta = page.locator("#meta-test tbody tr")
    expect(meta).to_have_count(len(TEST_ENVS))
    with session_scope(web.runtime.factory) as session:
        tests = {e.env: e for e in session.query(Evaluation).filter_by(candidate_id=run.best_id, phase="test")}
        dpo = session.query(Candidate).filter_by(run_id=run.id, reference="DPO").one()
        references = {e.env: e for e in session.query(Evaluation).filter_by(candidate_id=dpo.id, phase="test")}
    for i, env in enumerate(TEST_ENVS):
        cells = meta.nth(i).locator("td")
        assert cells.nth(0).inner_text() == env
        ci, verdict = tests[env].stats["comparison"]["ci"], tests[env].stats["comparison"]["verdict"]
        assert cells.nth(1).inner_text() == f"{tests[env].normalised_score:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] {verdict}"
        assert cells.nth(2).inner_text().startswith(f"{tests[env].final_return:,.2f}")
        assert cells.nth(5).inner_text().startswith(f"{references[env].normalised_score:.3f} [")  # DPO, the reference
        assert cells.nth(7).inner_text() == "ok"
        # A score measured where the warm start was within noise of random is marked as a return ratio.
        assert ("return ratio" in cells.nth(2).inner_text()) == (tests[env].score_basis == "return_ratio")
    expect(page.locator("#meta-test thead")).to_contain_text("DPO: score")
    expect(page.locator("#lr-protocol")).to_have_text("fixed")
    page.goto(f"/runs/{run.id}")
    shoot(page, screenshots, "run-llm")
    page.goto(f"/runs/{world.evolution.id}")
    shoot(page, screenshots, "run-evolution")


def test_a_candidate_page_shows_code_diff_thought_curves_and_lineage(alice_page: Page, world: World,
                                                                    screenshots: Path) -> None:
    page = alice_page
    run = world.llm
    best = next(c for c in run.candidates if c.id == run.best_id)
    page.goto(f"/candidates/{best.id}")
    expect(page.locator("#candidate-name")).to_have_text(f"#{best.index} {best.name}")
    expect(page.locator("#thought")).to_contain_text(best.thought)
    # Highlighted on the server: pygments spans, the code readable as text.
    code = page.locator("#code .highlight")
    assert code.locator("span.kn").count() >= 1  # `import`
    assert "def drift(ratio, advantage, epsilon):" in code.inner_text()
    # The diff against the first parent: the changed clip width.
    parent = next(c for c in run.candidates if c.id == best.parent_ids[0])
    diff = page.locator("#diff")
    expect(diff.locator("h2")).to_contain_text(f"#{parent.index} {parent.name}")
    assert diff.locator("span.gi").count() >= 1 or diff.locator("span.gd").count() >= 1
    # Learning curves: one chart per evaluation (train, re-evaluation, test), candidate against the warm start.
    charts = page.locator("#curves svg")
    expect(charts).to_have_count(len(TRAIN_ENVS) * 2 + len(TEST_ENVS))
    first = charts.first
    assert first.locator("polyline").count() == 2
    legend = first.locator("text").all_text_contents()
    assert any(t.startswith("this candidate (lr") for t in legend)
    assert any(t.startswith("warm start (lr") for t in legend)
    assert f"{TRAIN_ENVS[0]} · meta-train" in legend
    expect(page.locator("#evaluations tbody tr").first).to_contain_text("ok")
    # How the update behaved: the five loss parts of the first evaluation, against the warm start's.
    parts = page.locator("#diagnostics-1 svg")
    expect(parts).to_have_count(5)
    kl = parts.nth(3)
    assert f"{TRAIN_ENVS[0]} · approximate KL (old ‖ new)" in kl.locator("text").all_text_contents()
    assert kl.locator("polyline").count() == 2
    expect(page.locator("#llm-call")).to_contain_text("qwen2.5-coder-7b")
    shoot(page, screenshots, "candidate-best")
    # Lineage: the parent link leads to the parent, whose children include this candidate.
    page.click(f"#parents a[href='/candidates/{parent.id}']")
    page.wait_for_url(f"**/candidates/{parent.id}")
    expect(page.locator(f"#children a[href='/candidates/{best.id}']")).to_be_visible()


def test_a_failed_candidate_shows_its_outcome_and_error(alice_page: Page, world: World, screenshots: Path) -> None:
    page = alice_page
    failed = next(c for c in world.llm.candidates if c.status == "failed")
    page.goto(f"/candidates/{failed.id}")
    expect(page.locator(".run-head .badge.outcome-error")).to_have_text("error")
    expect(page.locator("#error pre")).to_have_text(failed.error)
    expect(page.locator("#score")).to_have_text("—")
    expect(page.locator("#curves svg")).to_have_count(0)
    shoot(page, screenshots, "candidate-failed")


def test_what_a_model_wrote_is_shown_as_text_never_run(alice_page: Page, world: World, screenshots: Path) -> None:
    page = alice_page
    evil = next(c for c in world.llm.candidates if EVIL in c.name)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"/candidates/{evil.id}")
    expect(page.locator("#candidate-name")).to_have_text(f"#{evil.index} evil {EVIL}")
    expect(page.locator("#thought p")).to_have_text(f"I will run {EVIL} in your browser")
    assert EVIL in page.locator("#code").inner_text()
    html = page.content()
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned" in html
    page.goto(f"/runs/{world.llm.id}")
    expect(page.locator("#leaderboard")).to_contain_text(f"evil {EVIL}")
    assert "<script>window.__pwned" not in page.content()
    assert page.evaluate("typeof window.__pwned") == "undefined" and not dialogs
    page.goto(f"/candidates/{evil.id}")
    shoot(page, screenshots, "candidate-escaped")


def test_a_key_sees_only_its_own_runs(browser: Browser, web: WebServer, world: World, screenshots: Path) -> None:
    page = login(browser, web, world.bob)
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs")).to_contain_text(world.bobs.id[:8])
    for path in (f"/runs/{world.llm.id}", f"/runs/{world.llm.id}/live", f"/candidates/{world.llm.best_id}"):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        expect(page.locator("h1")).to_contain_text("No such")
    shoot(page, screenshots, "not-found")
    page.goto(f"/compare?run={world.llm.id}&run={world.bobs.id}")
    expect(page.locator("#compare-summary tbody tr")).to_have_count(1)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    events = httpx.get(f"{web.url}/runs/{world.llm.id}/events", cookies=cookies)
    assert events.status_code == 404
    page.context.close()


def test_the_comparison_page_sets_runs_side_by_side(alice_page: Page, web: WebServer, world: World,
                                                    screenshots: Path) -> None:
    page = alice_page
    page.check(f"input[name=run][value='{world.llm.id}']")
    page.check(f"input[name=run][value='{world.evolution.id}']")
    page.click("text=Compare selected runs")
    page.wait_for_url("**/compare?run=*")
    chart = page.locator("#compare-chart svg")
    assert chart.locator("polyline").count() == 2
    legend = chart.locator("text").all_text_contents()
    assert f"llm qwen2.5-coder-7b (history bounded) · lpo · {world.llm.id[:8]}" in legend
    assert f"evolution · lpo · {world.evolution.id[:8]}" in legend
    # One step per candidate evaluated: 12 for the LLM run, 16 for the evolution run.
    steps = sorted(len(line.get_attribute("points").split()) for line in chart.locator("polyline").all())
    assert steps == [2 * 12 - 1, 2 * 16 - 1]
    expect(page.locator("#compare-summary tbody tr")).to_have_count(2)
    meta = page.locator("#compare-meta-test")
    expect(meta.locator("thead th.group")).to_have_count(2)
    expect(meta.locator("tbody tr")).to_have_count(len(TEST_ENVS))
    first_row = meta.locator("tbody tr").first.locator("td")
    assert first_row.nth(0).inner_text() == TEST_ENVS[0]
    assert first_row.count() == 1 + 2 * 3
    assert first_row.nth(3).inner_text().startswith("DPO ")  # the run's reference algorithm, same seeds
    # Cost on one axis: each run's environment steps are what its evaluation rows recorded.
    for built in (world.llm, world.evolution):
        with session_scope(web.runtime.factory) as session:
            steps = session.scalar(select(func.sum(Evaluation.env_steps)).join(Candidate)
                                   .where(Candidate.run_id == built.id))
        row = page.locator("#compare-summary tbody tr", has_text=built.id[:8])
        expect(row.locator("td.steps")).to_have_text(f"{int(steps):,}")
        expect(row.locator("td.readable")).to_have_text("yes")
    expect(page.locator("#compare-summary thead")).to_contain_text("Env steps")
    expect(page.locator(f"input[name=run][value='{world.llm.id}']")).to_be_checked()
    shoot(page, screenshots, "compare")


def test_a_running_run_updates_live(alice_page: Page, web: WebServer, world: World, screenshots: Path) -> None:
    page = alice_page
    run = world.running
    page.goto(f"/runs/{run.id}")
    expect(page.locator("#live-badge")).to_be_visible()
    expect(page.locator("#progress")).to_have_text("8 / 8")
    page.wait_for_timeout(300)  # the EventSource connects
    # A worker finishes a new, better candidate: rows and events, as the service writes them.
    with session_scope(web.runtime.factory) as session:
        db_run = session.get(Run, run.id)
        db_run.budget = {**db_run.budget, "candidates": 9}
        now = utcnow()
        c = Candidate(run_id=run.id, index=9, name="late bloomer", code="def drift(r, a, e):\n    return 0.0\n",
                      parent_ids=[run.candidates[1].id], ast_hash="late", status="evaluated", outcome="ok",
                      score=1.9, verified_score=1.85, created_at=now - timedelta(seconds=5), evaluated_at=now)
        session.add(c)
        session.flush()
        session.add(evaluation(c.id, TRAIN_ENVS[0], "train", 1.9, random.Random(0)))
        db_run.best_candidate_id, db_run.best_score = c.id, 1.85
        session.add(Event(run_id=run.id, type="candidate.evaluated", payload={"candidate_id": c.id, "score": 1.9}))
        session.add(Event(run_id=run.id, type="candidate.new_best", payload={"candidate_id": c.id, "score": 1.85}))
    expect(page.locator("#best-score")).to_have_text("1.850", timeout=10_000)
    expect(page.locator("#progress")).to_have_text("9 / 9")
    expect(page.locator("#leaderboard tbody tr").first).to_contain_text("late bloomer")
    shoot(page, screenshots, "run-live")
    # The run finishes: the page says so without a reload.
    with session_scope(web.runtime.factory) as session:
        db_run = session.get(Run, run.id)
        db_run.status, db_run.finished_at = "completed", utcnow()
        session.add(Event(run_id=run.id, type="run.completed", payload={"run_id": run.id}))
    expect(page.locator(".run-head .badge.status-completed")).to_be_visible(timeout=10_000)
    expect(page.locator("#live-badge")).to_have_count(0)


def test_revoking_a_key_ends_its_browser_sessions(web: WebServer, world: World) -> None:
    from service.db.models import ApiKey

    key = web.new_key("carol")
    with httpx.Client(base_url=web.url) as client:
        client.post("/login", content=f"api_key={key}", headers={"content-type": "application/x-www-form-urlencoded"})
        assert client.get("/").status_code == 200
        with session_scope(web.runtime.factory) as session:
            session.get(ApiKey, web.key_id(key)).revoked_at = utcnow()
        response = client.get("/")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_the_new_run_form_previews_a_preset_and_starts_a_run_where_fields_win(
        browser: Browser, web: WebServer, screenshots: Path) -> None:
    key = web.new_key("carol")
    page = login(browser, web, key)
    page.goto("/runs/new?preset=paper")
    page.click("button[value=preview]")
    resolved = json.loads(page.locator("#resolved").inner_text())  # the paper's protocol, started by nothing
    assert resolved["preset"] == "paper" and resolved["environments"]["train"] == ["Breakout-MinAtar"]
    assert resolved["seeds_per_eval"] == 8 and resolved["metatest_seeds"] == 16 and resolved["profile"] == "full"
    expect(page.locator("select[name=preset]")).to_have_value("paper")  # the form keeps what was chosen
    shoot(page, screenshots, "new-run")
    page.fill("input[name=candidates]", "lots")
    page.click("button[value=preview]")
    expect(page.locator("#form-problems")).to_contain_text("candidates: 'lots' is not a whole number")
    # Fields given win over the preset's; the run belongs to the logged-in key.
    page.select_option("select[name=preset]", "quick")
    page.select_option("select[name=profile]", "smoke")
    page.select_option("select[name=train_envs]", ["CartPole-v1"])
    page.fill("input[name=candidates]", "3")
    page.click("button[value=start]")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    expect(page.locator("main")).to_contain_text("preset quick")
    run_id = page.url.rsplit("/", 1)[1]
    with session_scope(web.runtime.factory) as session:
        run = session.get(Run, run_id)
        assert run.owner_key_id == web.key_id(key) and run.profile == "smoke" and run.budget["candidates"] == 3
        assert run.train_envs == ["CartPole-v1"] and run.test_envs == ["Acrobot-v1"] and run.metatest_seeds == 4
    # A form posted from another site is refused, even with the session cookie.
    forged = page.request.post(f"{web.url}/runs/new", headers={"Origin": "http://evil.example"},
                               form={"action": "start", "preset": "paper"})
    assert forged.status == 403
    with session_scope(web.runtime.factory) as session:
        assert session.query(Run).filter_by(owner_key_id=web.key_id(key)).count() == 1
