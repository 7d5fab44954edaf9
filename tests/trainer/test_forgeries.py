"""Reward hacking, tried as a hostile proposer would, through the whole worker path.

Each forgery reaches the builtins by aliasing `getattr`; it passed the static check of old and turned a
useless drift (honest score about 0) into a reported 2.7 when candidates trained in their own process.
Now the static check (the allow-listed subset) refuses every one, and past it, through the tracer
alone, a candidate only traces: it earns its honest score or is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.evaluation import EvaluationFailed, ScoredResult, evaluate_code, score_artifact, trace_code, tracer_limits
from service.settings import Settings
from tests.trainer.conftest import ENDLESS_IN_TRAINING_DRIFT, USELESS_DRIFT
from workers.results import TraceRequest, TraceResult
from workers.sandbox import check_source, format_issues, run_tracer
from workers.targets import get_target
from workers.trainer.client import POOL
from workers.vocabulary import Outcome

REACH_BUILTINS = '''
import jax.numpy as jnp

g = getattr
builtins = g(print, "_" * 2 + "self" + "_" * 2)
load = g(builtins, "_" * 2 + "import" + "_" * 2)
sys = load("sys")
os = load("os")
'''

FORGE_RESULT_DESCRIPTOR = REACH_BUILTINS + '''
fd = int(sys.argv[sys.argv.index("--result-fd") + 1])
fake = b'{"outcome": "ok", "result": {"final_return": 500.0, "returns": [[500.0, 500.0]]}, "artifact": null}'
written = g(os, "write")(fd, fake)
gone = g(os, "_exit")(0)
''' + USELESS_DRIFT

WRAP_RESULT_WRITER = REACH_BUILTINS + '''
tracer = sys.modules["workers.sandbox.tracer"]
honest_writer = tracer.write_result


def inflate(fd, result, max_bytes):
    data = result.model_dump()
    data["result"] = {"final_return": 500.0, "score": 2.7}
    g(os, "write")(fd, load("json").dumps(data).encode())
    g(os, "close")(fd)


patched = g(builtins, "setattr")(tracer, "write_result", inflate)
''' + USELESS_DRIFT

PATCH_THE_ENVIRONMENT = REACH_BUILTINS + '''
cartpole = load("gymnax.environments.classic_control.cartpole", fromlist=["CartPole"])
never_falls = g(builtins, "setattr")(cartpole.CartPole, "is_terminal", lambda self, state, params: jnp.array(False))
''' + USELESS_DRIFT


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    yield Settings(cache_dir=Path(tmp_path_factory.mktemp("forgery-cache")), database_url="sqlite://")
    POOL.close()


def trace_past_the_static_check(settings: Settings, code: str) -> TraceResult:
    """The tracer alone, as if the static check had let the code through."""
    return run_tracer(TraceRequest(target="lpo", code=code), tracer_limits(settings))


def evaluate_past_the_static_check(settings: Settings, code: str) -> ScoredResult:
    traced = trace_past_the_static_check(settings, code)
    if traced.outcome is not Outcome.ok or traced.artifact is None:
        raise EvaluationFailed(traced.outcome.value, traced.error or "no artifact")
    return score_artifact(settings, "lpo", traced.artifact, "CartPole-v1", "smoke", [0, 1])


@pytest.fixture(scope="module")
def honest(settings: Settings) -> ScoredResult:
    return evaluate_code(settings, "lpo", USELESS_DRIFT, "CartPole-v1", "smoke", [0, 1])


@pytest.mark.parametrize("code", [FORGE_RESULT_DESCRIPTOR, WRAP_RESULT_WRITER, PATCH_THE_ENVIRONMENT],
                         ids=["fake-result-on-the-descriptor", "wrap-the-result-writer", "patch-the-environment"])
def test_a_forgery_earns_its_honest_score_or_is_refused(code: str, settings: Settings, honest: ScoredResult) -> None:
    assert "`getattr` is not allowed" in format_issues(check_source(code, get_target("lpo")))
    with pytest.raises(EvaluationFailed, match="getattr"):
        evaluate_code(settings, "lpo", code, "CartPole-v1", "smoke", [0, 1])
    assert honest.scored.comparison.score < 0.5  # the useless drift, trained honestly
    try:
        scored = evaluate_past_the_static_check(settings, code)
    except EvaluationFailed as failed:
        assert failed.outcome in (Outcome.error, Outcome.invalid, Outcome.refused, Outcome.killed), failed
        return
    assert scored.result.final_return <= 500
    assert scored.scored.comparison.score < 0.5, (scored.scored.comparison, honest.scored.comparison)
    assert scored.scored.comparison.verdict == "worse"


def test_the_fake_result_is_an_error_not_a_score(settings: Settings) -> None:
    traced = trace_past_the_static_check(settings, FORGE_RESULT_DESCRIPTOR)
    assert traced.outcome is Outcome.error and traced.artifact is None
    assert "unreadable result" in (traced.error or "")


def test_patching_the_environment_changes_nothing_the_trainer_runs(settings: Settings, honest: ScoredResult) -> None:
    patched = evaluate_past_the_static_check(settings, PATCH_THE_ENVIRONMENT)
    assert patched.result.returns == honest.result.returns  # the same artifact, the same lanes: the same bits


PARK_THREADS = REACH_BUILTINS + '''
threading = load("threading")
time = load("time")
parked = [threading.Thread(target=time.sleep, args=(40,), daemon=True) for _ in range(300)]
started = [t.start() for t in parked[:240]]
''' + USELESS_DRIFT


def test_parked_threads_do_not_stop_a_concurrent_honest_evaluation(settings: Settings) -> None:
    parker = threading.Thread(target=trace_past_the_static_check, args=(settings, PARK_THREADS))
    parker.start()
    time.sleep(2.0)  # the parker's threads are up
    honest = trace_code(settings, "lpo", get_target("lpo").warm_start)
    parker.join()
    assert honest.outcome is Outcome.ok, honest.error


def test_an_endless_loop_on_smoke_ends_as_a_timeout_within_two_minutes(settings: Settings) -> None:
    evaluate_code(settings, "lpo", USELESS_DRIFT, "CartPole-v1", "smoke", [0, 1])  # baseline and trainer up
    started = time.monotonic()
    with pytest.raises(EvaluationFailed) as failed:
        evaluate_code(settings, "lpo", ENDLESS_IN_TRAINING_DRIFT, "CartPole-v1", "smoke", [0, 1])
    assert failed.value.outcome == Outcome.timeout
    assert time.monotonic() - started < 120
