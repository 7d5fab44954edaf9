"""A zero ES-LPO network trains exactly as PPO: the trainer's own lane program (`train_lanes`) on CartPole's smoke
profile, with the warm start's drift and with the zero network's in its place, gives the same returns (on the CPU,
bit for bit: the offset changes the drift's value by at most 1e-4 but its gradient only where PPO's drift lies in
(0, 1e-4], which no sample hits here) and loss parts within the offset."""

from __future__ import annotations

import numpy as np
import pytest

from workers.targets.kernels.lpo_network import OFFSET, PARAMETER_COUNT, make_drift
from workers.trainer.server import train_lanes, warm_start_plugins

SEEDS = [0, 1]
LEARNING_RATES = [3e-4]


@pytest.mark.slow
def test_a_zero_network_trains_exactly_as_ppo() -> None:
    ppo = warm_start_plugins()
    zero = ppo._replace(drift=make_drift(np.zeros(PARAMETER_COUNT, np.float32)))
    expected = train_lanes("CartPole-v1", "smoke", SEEDS, LEARNING_RATES, ppo)
    got = train_lanes("CartPole-v1", "smoke", SEEDS, LEARNING_RATES, zero)
    assert expected.finite.all() and got.finite.all()
    assert expected.episodes.sum() > 0
    np.testing.assert_array_equal(got.episodes, expected.episodes)
    np.testing.assert_allclose(got.return_sum, expected.return_sum, rtol=1e-5)
    np.testing.assert_allclose(got.diagnostics, expected.diagnostics, rtol=0, atol=OFFSET)
