"""Presets resolve to exactly their protocol; every field a request gives wins over the preset's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service.runs.spec import RunSpec
from tests.runs.conftest import REPO

PAPER_TEST_ENVS = ["Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar", "CartPole-v1"]


def test_the_paper_preset_is_the_papers_llm_lpo_protocol() -> None:
    spec = RunSpec.model_validate({"preset": "paper"})
    assert spec.target == "lpo" and spec.profile == "full"
    assert spec.environments.train == ["Breakout-MinAtar"] and spec.environments.test == PAPER_TEST_ENVS
    assert spec.seeds_per_eval == 8 and spec.metatest_seeds == 16
    assert spec.learning_rate == "fixed" and spec.budget.candidates == 30


def test_fields_given_win_over_the_preset_and_nested_objects_merge() -> None:
    spec = RunSpec.model_validate({"preset": "paper", "budget": {"tokens": 1000}, "metatest_seeds": 4,
                                   "environments": {"test": ["CartPole-v1"]}})
    assert spec.budget.candidates == 30 and spec.budget.tokens == 1000  # merged, not replaced
    assert spec.metatest_seeds == 4 and spec.environments.test == ["CartPole-v1"]
    assert spec.environments.train == ["Breakout-MinAtar"]


def test_the_quick_preset_is_the_default_and_still_meta_tests() -> None:
    quick, default = RunSpec.model_validate({"preset": "quick"}), RunSpec()
    assert quick.model_dump(exclude={"preset"}) == default.model_dump(exclude={"preset"})
    assert default.environments.test == ["Acrobot-v1"]  # the target's held-out environment


def test_dry_run_prints_the_resolved_spec_and_starts_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCOVERY_")}
    database = tmp_path / "db.sqlite"
    env.update(DISCOVERY_DATABASE_URL=f"sqlite:///{database}", DISCOVERY_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "service.cli", "run", "--preset", "paper", "--seeds-per-eval", "3",
                           "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert spec["preset"] == "paper" and spec["seeds_per_eval"] == 3 and spec["metatest_seeds"] == 16
    assert spec["environments"]["test"] == PAPER_TEST_ENVS and spec["budget"]["candidates"] == 30
    assert not database.exists()  # nothing started
    bad = subprocess.run([sys.executable, "-m", "service.cli", "run", "--preset", "nope", "--dry-run"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "preset" in bad.stderr
