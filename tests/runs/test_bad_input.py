"""Bad run requests are refused at the boundary, with a message that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.db import upgrade_database
from service.runs.runner import RunRefused, start_run
from service.runs.spec import RunSpec
from service.runtime import build_runtime
from service.settings import Settings
from tests.conftest import process_env
from tests.runs.conftest import REPO, count_rows


@pytest.mark.parametrize(("request_body", "message"), [
    ({"target": "nope"}, "Input should be 'lpo', 'optimizer', 'advantage' or 'open'"),
    ({"environments": {"train": ["NoSuchEnv-v0"]}}, "environments.train.0\n  Input should be 'CartPole-v1'"),
    ({"environments": {"train": ["CartPole-v1"], "test": ["Nope-v9"]}}, "environments.test.0\n  Input should be"),
    ({"budget": {"candidates": 0}}, "greater than or equal to 1"),
    ({"budget": {"candidates": 10**6}}, "less than or equal to 1000"),
    ({"proposer": {"kind": "llm"}}, "give the model (or an ensemble: models)"),
    ({"proposer": {"kind": "llm", "models": ["a", "a"]}}, "a model is listed twice"),
    ({"proposer": {"kind": "llm", "model": "c", "models": ["a", "b"]}}, "model 'c' is not one of models"),
    ({"search": {"islands": 0}}, "greater than or equal to 1"),
    ({"search": {"early_stopping": {"margin": -1}}}, "greater than 0"),
    ({"concurrency": 0}, "greater than or equal to 1"),
    ({"proposer": {"kind": "evolution", "mutation_weights": {"constant": 0.0, "swap": 0.0}}},
     "give at least one mutation a positive weight"),
    ({"proposer": {"kind": "evolution", "mutation_weights": {"exec": 1.0}}}, "Input should be 'constant', 'swap'"),
    ({"proposer": {"kind": "evolution", "mutation_weights": {"delete": -1.0}}}, "greater than or equal to 0"),
])
def test_run_spec_refuses(request_body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RunSpec.model_validate(request_body)
    assert message in str(refused.value)


def test_start_run_refuses_an_llm_proposer_without_endpoint(sqlite_url: str, cache_dir: Path) -> None:
    from service.db.models import Run

    upgrade_database(sqlite_url)
    runtime = build_runtime(Settings(database_url=sqlite_url, broker_url=None, cache_dir=cache_dir,
                                     openai_base_url=None), local_workers=1, sweep_interval=60)
    try:
        spec = RunSpec.model_validate({"proposer": {"kind": "llm", "model": "gpt-test"}, "profile": "smoke"})
        with pytest.raises(RunRefused, match="needs an endpoint"):
            start_run(runtime, spec)
        assert count_rows(runtime.factory, Run) == 0  # nothing half-created
    finally:
        runtime.executor.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "nope"], "error: target: Input should be 'lpo', 'optimizer', 'advantage' or 'open'"),
    (["--proposer", "llm"], "error: --proposer llm needs --model NAME"),
])
def test_discovery_run_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}", DISCOVERY_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "service.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "never.db").exists()  # refused before touching the database
