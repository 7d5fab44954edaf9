"""The environments we train on and the hyperparameter profiles for each environment family.

`full` for MinAtar and CartPole follows PureJaxRL's configs, which the paper uses too; Acrobot reuses
CartPole's classic config and Pendulum's config is our own (neither is the paper's, PureJaxRL's or
gymnax-blines'). `quick` is about ten times cheaper (for laptops and demos); `smoke` is small enough
for tests. The paper tunes the learning rate per environment, so every config carries its own
learning rate (the paper's for MinAtar and CartPole, ours for Acrobot and Pendulum) and a grid of
multipliers around it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

from workers.targets.base import SERVICE_TRAINING, Training

PROFILES = ("full", "quick", "smoke")
Profile = Literal["full", "quick", "smoke"]


class PPOConfig(BaseModel, frozen=True):
    num_envs: int
    num_steps: int
    total_timesteps: int
    update_epochs: int
    num_minibatches: int
    lr: float
    lr_multipliers: tuple[float, ...]
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    activation: Literal["tanh", "relu"] = "tanh"
    anneal_lr: bool = True
    log_points: int = 50  # learning-curve resolution (updates are grouped into this many points)
    training: Training = SERVICE_TRAINING  # where the target's protocol departs from the service's loop

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // (self.num_envs * self.num_steps))

    @property
    def env_steps(self) -> int:
        return self.num_updates * self.num_envs * self.num_steps

    def learning_rates(self) -> list[float]:
        return [self.lr * m for m in self.lr_multipliers]


class EnvSpec(BaseModel, frozen=True):
    name: str
    family: Literal["classic", "minatar", "continuous"]
    lr: float  # the tuned learning rate (the paper's where it gives one)
    description: str
    return_range: tuple[float, float]  # what one episode's return can be; anything else is refused


ENVIRONMENTS: dict[str, EnvSpec] = {
    e.name: e
    for e in (
        EnvSpec(name="CartPole-v1", family="classic", lr=1e-3, description="balance a pole; 500 is the maximum",
                return_range=(0.0, 500.0)),
        EnvSpec(name="Acrobot-v1", family="classic", lr=1e-3, description="swing a two-link arm up; -500 to ~-60",
                return_range=(-500.0, 0.0)),
        EnvSpec(name="Breakout-MinAtar", family="minatar", lr=1e-2, description="MinAtar Breakout, 10x10x4",
                return_range=(0.0, float("inf"))),
        EnvSpec(name="SpaceInvaders-MinAtar", family="minatar", lr=7e-3, description="MinAtar SpaceInvaders",
                return_range=(0.0, float("inf"))),
        EnvSpec(name="Asterix-MinAtar", family="minatar", lr=3e-3, description="MinAtar Asterix",
                return_range=(0.0, float("inf"))),
        EnvSpec(name="Freeway-MinAtar", family="minatar", lr=1e-3, description="MinAtar Freeway",
                return_range=(0.0, float("inf"))),
        EnvSpec(
            name="Pendulum-v1", family="continuous", lr=1e-3, description="swing up a pendulum, Gaussian policy",
            return_range=(-200 * (math.pi**2 + 0.1 * 8**2 + 0.001 * 2**2), 0.0),
        ),
    )
}

_FAMILY_PROFILES: dict[str, dict[str, dict[str, object]]] = {
    "classic": {
        "full": dict(num_envs=4, num_steps=128, total_timesteps=500_000, update_epochs=4, num_minibatches=4,
                     lr_multipliers=(0.25, 0.5, 1.0)),
        "quick": dict(num_envs=4, num_steps=128, total_timesteps=50_000, update_epochs=4, num_minibatches=4,
                      lr_multipliers=(0.5, 1.0)),
        "smoke": dict(num_envs=4, num_steps=64, total_timesteps=16_384, update_epochs=4, num_minibatches=4,
                      lr_multipliers=(0.5, 1.0), log_points=16),
    },
    "minatar": {
        "full": dict(num_envs=64, num_steps=128, total_timesteps=10_000_000, update_epochs=4, num_minibatches=8,
                     activation="relu", lr_multipliers=(0.5, 1.0)),
        "quick": dict(num_envs=64, num_steps=128, total_timesteps=1_000_000, update_epochs=4, num_minibatches=8,
                      activation="relu", lr_multipliers=(1.0,)),
        "smoke": dict(num_envs=16, num_steps=32, total_timesteps=8_192, update_epochs=2, num_minibatches=4,
                      activation="relu", lr_multipliers=(1.0,), log_points=16),
    },
    "continuous": {
        "full": dict(num_envs=16, num_steps=256, total_timesteps=2_000_000, update_epochs=10, num_minibatches=32,
                     ent_coef=0.0, gae_lambda=0.95, lr_multipliers=(0.5, 1.0, 2.0)),
        "quick": dict(num_envs=16, num_steps=256, total_timesteps=200_000, update_epochs=10, num_minibatches=32,
                      ent_coef=0.0, lr_multipliers=(1.0,)),
        "smoke": dict(num_envs=8, num_steps=64, total_timesteps=8_192, update_epochs=2, num_minibatches=4,
                      ent_coef=0.0, lr_multipliers=(1.0,), log_points=16),
    },
}


def get_env_spec(name: str) -> EnvSpec:
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise KeyError(f"unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}") from None


def get_config(env: str, profile: str, training: Training = SERVICE_TRAINING) -> PPOConfig:
    """The profile's PPO config on `env`, under a target's `training` protocol (its own learning rate there, if it
    names one)."""
    spec = get_env_spec(env)
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    return PPOConfig(lr=training.learning_rate(env, spec.lr), training=training,  # type: ignore[arg-type]
                     **_FAMILY_PROFILES[spec.family][profile])
