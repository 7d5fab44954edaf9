"""The web UI under a real browser: the app on uvicorn, runs with real-looking data built in the database,
headless Chromium (Debian's /usr/bin/chromium) driven by playwright's sync API.

The server's runtime has a null executor: nothing proposes or evaluates, so the hand-built runs stay
exactly as the tests wrote them (a running run only changes when a test adds rows). Screenshots go to
artifacts/screenshots/ in the repository; the folder is printed at the end of the session.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from service.api.app import create_app
from service.db import make_engine, make_session_factory, session_scope, upgrade_database, utcnow
from service.db.models import Candidate, Evaluation, Event, LlmCall, Run
from service.keys import create_key
from service.runtime import Runtime
from service.settings import Settings
from tests.api.conftest import uvicorn_in_thread
from workers.rl.envs import ENVIRONMENTS
from workers.vocabulary import Task

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRAIN_ENVS = ["CartPole-v1", "Acrobot-v1"]
TEST_ENVS = ["Breakout-MinAtar", "SpaceInvaders-MinAtar"]
# (random-policy return, warm-start return) per environment, roughly the real ones (CartPole at the
# `quick` profile, so that candidates that beat it still stay under its maximum of 500).
REFERENCE = {"CartPole-v1": (22.0, 300.0), "Acrobot-v1": (-500.0, -90.0), "Breakout-MinAtar": (0.5, 12.0),
             "SpaceInvaders-MinAtar": (2.8, 60.0)}
LRS = [3e-4, 1e-3, 3e-3]
STEPS_PER_LANE = 16_384  # what a recorded evaluation cost: learning rates x 2 seeds x this
POINTS = 24
EVIL = "<script>window.__pwned = 1</script>"

WARM_CODE = '''import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    """PPO's clipped objective written as a drift: zero inside the trust region."""
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.maximum(0.0, (ratio - clipped) * advantage)
'''


class NullExecutor:
    """Publishes nothing: the hand-built runs must not be advanced by an executor or a sweeper."""

    def publish(self, jobs: list[Task]) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class WebServer:
    url: str
    runtime: Runtime

    def new_key(self, name: str) -> str:
        with session_scope(self.runtime.factory) as session:
            key, _ = create_key(session, name)
        return key

    def key_id(self, key: str) -> str:
        from service.keys import find_key

        with session_scope(self.runtime.factory) as session:
            return find_key(session, key).id


@dataclass
class BuiltRun:
    id: str
    key: str
    candidates: list[Candidate] = field(default_factory=list)  # detached rows, index order (0 = warm start)
    best_id: str | None = None
    best_score: float | None = None

    def by_name(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)


def possible(env: str, value: float) -> float:
    """A return the environment can produce (a CartPole episode is at most 500)."""
    low, high = ENVIRONMENTS[env].return_range
    return round(min(max(value, low), high), 3)


def curve(final: float, start: float, rng: random.Random) -> list[float]:
    """A plausible learning curve: a noisy logistic rise from `start` to `final`."""
    return [round(start + (final - start) / (1 + math.exp(-(i - POINTS / 3) / 2.5)) + rng.gauss(0, abs(final - start)
                                                                                               * 0.03), 3)
            for i in range(POINTS)]


def comparison(score: float, seeds: int, half_width: float) -> dict:
    """A stored comparison with the anchor (workers.results.Comparison) around `score`."""
    low, high = score - half_width, score + half_width
    verdict = "better" if low > 1.0 else "worse" if high < 1.0 else "inconclusive"
    return {"score": score, "ci": [round(low, 4), round(high, 4)], "confidence": 0.95, "looks": 1,
            "method": "normal, anchor noise", "verdict": verdict, "p_improvement": 0.5, "iqm": score, "seeds": seeds}


def evaluation(candidate_id: str, env: str, phase: str, score: float | None, rng: random.Random,
               outcome: str = "ok", error: str | None = None, basis: str = "normalised") -> Evaluation:
    rand, warm = REFERENCE[env]
    if score is None:
        return Evaluation(candidate_id=candidate_id, env=env, phase=phase, seeds=[0, 1], learning_rates=LRS,
                          outcome=outcome, error=error)
    final = possible(env, rand + score * (warm - rand))
    best = rng.randrange(len(LRS))
    returns = [[possible(env, final - (0 if i == best else abs(final - rand) * 0.2 * (1 + j))) for j in range(2)]
               for i in range(len(LRS))]
    rows = [[possible(env, v) for v in curve(final if i == best else final - abs(final - rand) * 0.3, rand, rng)]
            for i in range(len(LRS))]
    rows[best][-1] = final
    # PPO's loss parts as the worker stores them: the KL and clip fraction shrink as the learning rate anneals.
    diagnostics = {
        "actor_loss": [round(-0.01 * rng.random(), 5) for _ in range(POINTS)],
        "value_loss": [round(40.0 * (1 - i / POINTS) + rng.random(), 3) for i in range(POINTS)],
        "entropy": [round(0.69 - 0.2 * i / POINTS, 4) for i in range(POINTS)],
        "approx_kl": [round(0.02 * (1 - i / POINTS) * (1 + score), 5) for i in range(POINTS)],
        "clip_fraction": [round(0.15 * (1 - i / POINTS), 4) for i in range(POINTS)],
    }
    return Evaluation(candidate_id=candidate_id, env=env, phase=phase, seeds=[0, 1], learning_rates=LRS,
                      returns=returns, curves={"learning_rates": LRS, "returns": rows, "diagnostics": diagnostics},
                      best_lr=LRS[best],
                      final_return=round(final, 3), normalised_score=round(score, 4), score_basis=basis, outcome="ok",
                      stats={"scores": [score, score], "comparison": comparison(round(score, 4), 2, 0.3)},
                      compile_seconds=4.2 + rng.random(), train_seconds=38.0 + 10 * rng.random(),
                      env_steps=len(LRS) * 2 * STEPS_PER_LANE, trainer_seconds=round(20.0 + 5 * rng.random(), 3))


def build_run(factory, owner_key_id: str, key: str, *, proposer: str = "llm", candidates: int = 12,  # noqa: ANN001
              seed: int = 0, status: str = "completed", evil: bool = False) -> BuiltRun:
    """A run as the service leaves it: warm start, evaluated and failed candidates, re-evaluation, meta-test,
    events and (for the LLM proposer) the language-model calls."""
    rng = random.Random(seed)
    started = utcnow() - timedelta(minutes=40 + seed)
    proposer_spec = {"kind": "llm", "model": "qwen2.5-coder-7b", "temperature": 0.8} if proposer == "llm" \
        else {"kind": "evolution"}
    built = BuiltRun(id="", key=key)
    with session_scope(factory) as session:
        run = Run(owner_key_id=owner_key_id, status="running", target="lpo", train_envs=TRAIN_ENVS,
                  test_envs=TEST_ENVS, profile="smoke", proposer=proposer_spec,
                  budget={"candidates": candidates, "tokens": 200_000 if proposer == "llm" else None,
                          "cost_usd": 2.0 if proposer == "llm" else None},
                  concurrency=2, seed=seed, seeds_per_eval=2, metatest_seeds=4, lr_protocol="fixed", config={},
                  created_at=started, started_at=started)
        session.add(run)
        session.flush()
        events = [Event(run_id=run.id, type="run.started", payload={"run_id": run.id}, created_at=started)]
        warm = Candidate(run_id=run.id, index=0, is_warm_start=True, name="PPO clip (warm start)", code=WARM_CODE,
                         ast_hash="warm", status="evaluated", outcome="ok", score=1.0, verified_score=1.0,
                         created_at=started, evaluated_at=started + timedelta(minutes=1), eval_seconds=92.0)
        session.add(warm)
        session.flush()
        rows: list[Candidate] = [warm]
        for env in TRAIN_ENVS:
            session.add(evaluation(warm.id, env, "train", 1.0, rng))
        best, best_score = warm, 1.0
        tokens = cost = 0
        for i in range(1, candidates + 1):
            parent = rng.choice(rows[: max(1, i)])
            when = started + timedelta(minutes=1 + 3 * i)
            failed = i % 5 == 3
            score = None if failed else round(max(-0.4, rng.gauss(0.88 + 0.03 * i, 0.15)), 4)
            name = f"{'smooth' if proposer == 'llm' else 'mutant'} drift {i}"
            thought = (f"Penalise the ratio quadratically outside a band of width {0.1 + i / 100:.2f}, scaled by "
                       f"|advantage|, so large steps cost more when the signal is strong.") if proposer == "llm" else ""
            code = WARM_CODE.replace("1.0 - epsilon", f"1.0 - epsilon * {1 + i / 10:.1f}")
            if failed:
                code = code.replace("jnp.maximum", "jnp.maximun")
            if evil and i == 2:
                name, thought = f"evil {EVIL}", f"I will run {EVIL} in your browser"
                code = code + f'\n# {EVIL}\nNOTE = "{EVIL}"\n'
            c = Candidate(run_id=run.id, index=i, name=name, thought=thought, code=code, parent_ids=[parent.id],
                          ast_hash=f"h{i}", status="failed" if failed else "evaluated",
                          outcome="error" if failed else "ok", score=score,
                          error="AttributeError: module 'jax.numpy' has no attribute 'maximun'" if failed else None,
                          created_at=when - timedelta(minutes=2), evaluated_at=when,
                          eval_seconds=None if failed else 80 + 20 * rng.random(), propose_seconds=3.0)
            session.add(c)
            session.flush()
            if proposer == "llm":
                call = LlmCall(run_id=run.id, candidate_id=c.id, model="qwen2.5-coder-7b",
                               messages=[{"role": "user", "content": "propose"}],
                               reply=f'{{"name": "{c.name}", "thought": "...", "code": "..."}}',
                               prompt_tokens=2400 + 30 * i, completion_tokens=310, latency_ms=5200.0, cost_usd=0.004)
                session.add(call)
                session.flush()
                c.llm_call_id = call.id
                tokens += 2710 + 30 * i
                cost += 0.004
            events.append(Event(run_id=run.id, type="candidate.proposed", payload={"candidate_id": c.id, "index": i},
                                created_at=c.created_at))
            if failed:
                session.add(evaluation(c.id, TRAIN_ENVS[0], "train", None, rng, outcome="error", error=c.error))
            else:
                for env in TRAIN_ENVS:
                    session.add(evaluation(c.id, env, "train", score + rng.gauss(0, 0.03), rng))
                c.stats = {"search": comparison(score, 2, 0.4)}
                if score > best_score:
                    c.verified_score = round(score - abs(rng.gauss(0, 0.02)), 4)
                    c.stats = {**c.stats, "verification": comparison(c.verified_score, 8, 0.08)}
                    c.verdict = c.stats["verification"]["verdict"]
                    for env in TRAIN_ENVS:
                        session.add(evaluation(c.id, env, "reeval", c.verified_score, rng))
                    if c.verified_score > best_score:
                        best, best_score = c, c.verified_score
                        events.append(Event(run_id=run.id, type="candidate.new_best",
                                            payload={"candidate_id": c.id, "score": best_score}, created_at=when))
            events.append(Event(run_id=run.id, type="candidate.evaluated",
                                payload={"candidate_id": c.id, "index": i, "score": score}, created_at=when))
            rows.append(c)
        finished = started + timedelta(minutes=3 * candidates + 6)
        if status == "completed":
            dpo = Candidate(run_id=run.id, index=-1, reference="DPO", name="DPO", code=WARM_CODE, ast_hash="dpo",
                            status="evaluated", outcome="ok", created_at=finished)
            session.add(dpo)
            session.flush()
            for k, env in enumerate(TEST_ENVS):
                # On the last held-out environment the warm start was within noise of random: flagged scores.
                basis = "return_ratio" if k == len(TEST_ENVS) - 1 else "normalised"
                session.add(evaluation(warm.id, env, "test", 1.0, rng, basis=basis))
                session.add(evaluation(dpo.id, env, "test", 0.97 + 0.01 * k, rng, basis=basis))
                if best is not warm:
                    session.add(evaluation(best.id, env, "test", best_score + rng.gauss(-0.05, 0.1), rng, basis=basis))
            events.append(Event(run_id=run.id, type="run.completed", payload={"run_id": run.id}, created_at=finished))
            run.finished_at = finished
        run.status = status
        run.best_candidate_id, run.best_score, run.best_verdict = best.id, best_score, best.verdict
        run.tokens_used, run.cost_usd = tokens, round(cost, 4)
        session.add_all(events)
        session.flush()
        built.id, built.best_id, built.best_score = run.id, best.id, best_score
        for c in rows:
            session.refresh(c)
        session.expunge_all()
        built.candidates = rows
    return built


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the page tests save their screenshots: TEST_SCREENSHOTS_DIR to keep them, else the session's temporary
    folder (the suite writes nothing into the checkout)."""
    kept = os.environ.get("TEST_SCREENSHOTS_DIR")
    if not kept:
        return tmp_path_factory.mktemp("screenshots")
    Path(kept).mkdir(parents=True, exist_ok=True)
    return Path(kept)


@pytest.fixture(scope="module")
def web(postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """The API and UI on uvicorn (loopback, free port), a fresh PostgreSQL database, a null executor."""
    settings = Settings(database_url=postgres_database(), broker_url=None, cache_dir=tmp_path_factory.mktemp("cache"))
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    runtime = Runtime(settings=settings, factory=make_session_factory(engine), executor=NullExecutor())
    try:
        with uvicorn_in_thread(create_app(runtime)) as url:
            yield WebServer(url=url, runtime=runtime)
    finally:
        engine.dispose()


@dataclass
class World:
    """Two keys: alice owns an LLM run, an evolution run (same target) and a running run; bob owns one run."""

    alice: str
    bob: str
    llm: BuiltRun
    evolution: BuiltRun
    running: BuiltRun
    bobs: BuiltRun


@pytest.fixture(scope="module")
def world(web: WebServer) -> World:
    alice, bob = web.new_key("alice"), web.new_key("bob")
    alice_id, bob_id = web.key_id(alice), web.key_id(bob)
    factory = web.runtime.factory
    return World(
        alice=alice, bob=bob,
        evolution=build_run(factory, alice_id, alice, proposer="evolution", candidates=16, seed=2),
        llm=build_run(factory, alice_id, alice, proposer="llm", candidates=12, seed=1, evil=True),
        running=build_run(factory, alice_id, alice, proposer="evolution", candidates=8, seed=3, status="running"),
        bobs=build_run(factory, bob_id, bob, proposer="evolution", candidates=4, seed=4),
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def login(browser: Browser, web: WebServer, key: str) -> Page:
    """A fresh browser context, logged in with `key` through the login form."""
    context = browser.new_context(base_url=web.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/")
    return page


def watched_page(browser: Browser, web: WebServer, key: str) -> Iterator[Page]:
    """A page logged in with `key` (for a fixture to yield from); the test fails if the browser reports an error."""
    page = login(browser, web, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    page.context.close()
    assert not errors, f"the browser reported errors: {errors}"


@pytest.fixture
def alice_page(browser: Browser, web: WebServer, world: World) -> Iterator[Page]:
    yield from watched_page(browser, web, world.alice)
