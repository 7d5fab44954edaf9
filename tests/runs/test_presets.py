"""Presets resolve to exactly their protocol; every field a request gives wins over the preset's; the seed
plans keep the seeds that choose a learning rate apart from the seeds that are scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from service.db.models import Run
from service.runs.protocol import seed_plan
from service.runs.spec import RunSpec
from tests.conftest import process_env
from tests.runs.conftest import REPO
from workers.vocabulary import EvalPhase

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
    env = process_env()
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


def _dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}", DISCOVERY_CACHE_DIR=str(tmp_path / "c"))
    return subprocess.run([sys.executable, "-m", "service.cli", "run", *args, "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_spec_file_and_the_same_flags_give_the_same_spec_and_flags_win(tmp_path: Path) -> None:
    flags = ["--target", "lpo", "--env", "CartPole-v1", "--env", "Breakout-MinAtar", "--profile", "smoke",
             "--candidates", "5", "--seed", "3", "--proposer", "llm", "--model", "m1", "--history", "none"]
    spec = {"target": "lpo", "environments": {"train": ["CartPole-v1", "Breakout-MinAtar"]}, "profile": "smoke",
            "budget": {"candidates": 5}, "seed": 3, "proposer": {"kind": "llm", "models": ["m1"], "history": "none"}}
    (tmp_path / "run.json").write_text(json.dumps(spec))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    from_flags = _dry_run(tmp_path, *flags)
    assert from_flags.returncode == 0, from_flags.stderr
    for name in ("run.json", "run.yaml"):
        from_file = _dry_run(tmp_path, "--spec", str(tmp_path / name))
        assert from_file.returncode == 0, from_file.stderr
        assert json.loads(from_file.stdout) == json.loads(from_flags.stdout)
    overridden = json.loads(_dry_run(tmp_path, "--spec", str(tmp_path / "run.yaml"), "--candidates", "9",
                                     "--proposer", "evolution").stdout)
    assert overridden["budget"]["candidates"] == 9 and overridden["proposer"]["kind"] == "evolution"
    assert overridden["environments"]["train"] == ["CartPole-v1", "Breakout-MinAtar"]  # the file's, kept
    (tmp_path / "bad.yaml").write_text("target: [lpo\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, phrase in (("bad.yaml", "not valid YAML"), ("list.json", "a run spec is an object"),
                         ("missing.json", "No such file")):
        bad = _dry_run(tmp_path, "--spec", str(tmp_path / name))
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and phrase in bad.stderr, bad.stderr


def test_grid_seed_plans_never_score_on_the_seeds_that_choose_a_rate() -> None:
    grid = Run(seed=3, seeds_per_eval=2, metatest_seeds=4, verification_seeds=16, lr_protocol="grid")
    train, reeval, test = (seed_plan(grid, phase, 1) for phase in (EvalPhase.TRAIN, EvalPhase.REEVAL, EvalPhase.TEST))
    assert train.choose == [3000, 3001] and train.score == [3300, 3301]
    # A re-evaluation scores fresh seeds at the rates the search seeds chose (the warm start's too).
    assert reeval.choose == train.choose and reeval.score == [3100, 3101]
    assert test.choose == [3400, 3401, 3402, 3403] and test.score == [3200, 3201, 3202, 3203]
    # The race's later rounds continue on fresh seeds: 2 more, then 8 more (rounds end at 2, 8, 16 seeds).
    later = [seed_plan(grid, EvalPhase.REEVAL, r).score for r in (2, 3)]
    assert later == [list(range(3102, 3108)), list(range(3108, 3116))]
    scored = train.score + reeval.score + later[0] + later[1] + test.score
    assert len(set(scored)) == len(scored) and not set(scored) & set(train.choose + test.choose)
    fixed = Run(seed=3, seeds_per_eval=2, metatest_seeds=4, lr_protocol="fixed")
    assert seed_plan(fixed, EvalPhase.TRAIN).choose is None and seed_plan(fixed, EvalPhase.TRAIN).score == [3000, 3001]
