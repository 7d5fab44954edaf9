"""The RL core: PPO with pluggable parts trains, scores honestly and fails cleanly."""

from __future__ import annotations

import math

import pytest

from workers.evaluate import evaluate_in_process
from workers.rl.envs import ENVIRONMENTS, get_config
from workers.rl.random_policy import random_policy_returns
from workers.rl.scoring import normalised_score
from workers.targets import TARGETS
from workers.vocabulary import Outcome

SEEDS = [0, 1]

ANTI_GRADIENT_DRIFT = """
def drift(ratio, advantage, epsilon):
    return 2.0 * ratio * advantage
"""

EXPLODING_OPTIMIZER = """
def update(grad, param, state, momenta, iteration, progress, layer_proportion, batch_proportion, dormancy, noise,
           lr):
    return -lr * 1e30 * grad, state
"""


def run(target: str, code: str, env: str = "CartPole-v1", seeds: list[int] = SEEDS, **kw: bool):
    """The candidate traced and trained as the trainer does (exported modules), here in this process."""
    return evaluate_in_process(target, [code], env, "smoke", seeds, **kw)[0]


@pytest.fixture(scope="module")
def warm_start():
    result = run("lpo", TARGETS["lpo"].warm_start, with_random_baseline=True)
    assert result.outcome is Outcome.ok, result.error
    return result.result


def test_warm_start_beats_random_policy_clearly_on_cartpole(warm_start) -> None:
    random_returns = random_policy_returns("CartPole-v1", get_config("CartPole-v1", "smoke"), SEEDS)
    assert len(random_returns) == len(SEEDS)
    assert all(15 < r < 30 for r in random_returns)  # a random CartPole policy lasts about 22 steps
    assert warm_start.random_returns == pytest.approx(random_returns)
    assert warm_start.final_return > 3 * max(random_returns)
    assert len(warm_start.returns) == len(warm_start.learning_rates)
    assert all(len(row) == len(SEEDS) for row in warm_start.returns)
    assert warm_start.curves[0][-1] > warm_start.curves[0][0]  # it learned during training


def test_bad_drift_scores_below_the_warm_start(warm_start) -> None:
    bad = run("lpo", ANTI_GRADIENT_DRIFT)
    assert bad.outcome is Outcome.ok, bad.error
    best = warm_start.learning_rates.index(warm_start.best_lr)
    score, basis = normalised_score(bad.result.final_return, warm_start.returns[best], warm_start.random_returns, 0.0)
    assert basis == "normalised"
    assert score < 0.5


def test_every_targets_warm_start_trains_as_well(warm_start) -> None:
    """Exported and compiled separately, the warm starts do not reproduce the same bits, but all learn."""
    for name in ("optimizer", "advantage"):
        result = run(name, TARGETS[name].warm_start)
        assert result.outcome is Outcome.ok, result.error
        assert result.result.final_return > 3 * max(warm_start.random_returns)


def test_training_is_reproducible_for_the_same_seeds(warm_start) -> None:
    again = run("lpo", TARGETS["lpo"].warm_start)
    assert again.result.returns == warm_start.returns


def test_nan_during_training_is_a_clear_failed_result() -> None:
    result = run("optimizer", EXPLODING_OPTIMIZER, seeds=[0])
    assert result.outcome is Outcome.nan
    assert "NaN" in result.error


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 1\n", "must define a function `def drift(ratio, advantage, epsilon):`"),
        ("def drift(ratio, advantage):\n    return ratio\n", "expected (ratio, advantage, epsilon)"),
        ("def drift(ratio, advantage, epsilon):\n    return ratio.sum()\n", "must return the shape of ratio"),
        ("def drift(ratio, advantage, epsilon):\n    return ratio +\n", "syntax error"),
        ("def drift(ratio, advantage, epsilon):\n    return float(ratio)\n", "calling drift on random inputs failed"),
    ],
)
def test_unusable_code_is_invalid_with_a_readable_reason(code: str, expected: str) -> None:
    result = run("lpo", code)
    assert result.outcome is Outcome.invalid
    assert expected in result.error


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if e != "CartPole-v1"])
def test_every_environment_trains_on_the_smoke_profile(env: str) -> None:
    result = run("lpo", TARGETS["lpo"].warm_start, env=env, seeds=[0])
    assert result.outcome is Outcome.ok, result.error
    assert result.result.env_steps == get_config(env, "smoke").env_steps
    assert len(result.result.curves[0]) > 1


def test_cli_evaluate_reports_bad_code_in_one_line(tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    bad = tmp_path / "bad.py"
    bad.write_text("def drift(ratio, advantage):\n    return ratio\n")
    out = subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--code", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "(ratio, advantage, epsilon)" in out.stderr
    missing = subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--env", "Nope-v0"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "unknown environment 'Nope-v0'" in missing.stderr


def test_cli_evaluate_prints_json_for_scripts(tmp_path) -> None:  # noqa: ANN001
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DISCOVERY_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--profile", "smoke", "--seeds", "0",
                          "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    [scored] = json.loads(out.stdout)
    assert scored["result"]["env"] == "CartPole-v1" and scored["result"]["seeds"] == [0]
    assert scored["anchor"]["warm_return"] > scored["anchor"]["random_return"] and scored["anchor"]["seeds"] == 64
    assert isinstance(scored["score"], float) and scored["seeds"] == 1 and len(scored["score_ci"]) == 2
    assert scored["verdict"] in ("better", "worse", "inconclusive") and 0.0 <= scored["p_improvement"] <= 1.0


def test_training_reports_ppos_loss_parts_over_time(warm_start) -> None:
    parts = warm_start.diagnostics
    assert set(parts) == {"actor_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    points = get_config("CartPole-v1", "smoke").log_points
    assert all(len(curve) == points for curve in parts.values())
    assert all(0.0 <= x <= math.log(2) + 1e-6 for x in parts["entropy"])  # two actions
    assert all(0.0 <= x <= 1.0 for x in parts["clip_fraction"])
    assert all(x >= -1e-6 for x in parts["approx_kl"]) and max(parts["approx_kl"]) > 0  # (r - 1) - log r >= 0
    assert parts["entropy"][-1] < parts["entropy"][0]  # the policy grew surer as it learned
