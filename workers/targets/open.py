"""OPEN: the optimizer target under the training protocol of the paper's OPEN (Goldie et al., 2024 and 2025).

The same update rule, signature, warm start (Adam) and kernel as `workers.targets.optimizer`, trained the way
the paper's code trains its learned optimiser, so its experiments can be reproduced here (the `paper-open`
preset):
- its own learning rate per environment (the paper's, e.g. Breakout 7e-3, SpaceInvaders 3e-3; an environment
  it does not tune keeps the environment's rate);
- the `noise` input reaches the actor's tensors only (the critic's are zeros);
- `batch_proportion` is the epoch's position within the update (every minibatch of an epoch shares it);
- the actor's and the critic's gradients are clipped to the norm apart, not under one global norm.
Those change what the rule's inputs mean, so the card the model reads says so. The service's own variant is
`optimizer`. This is the target's card (JAX-free).
"""

from __future__ import annotations

from dataclasses import replace

from workers.targets import optimizer
from workers.targets.base import TargetInput, Training

# The paper's learning rates for its learned optimiser (`RECUR_LR` in its configs): not PPO's Adam rates.
OPEN_LEARNING_RATES = (
    ("Breakout-MinAtar", 7e-3),
    ("SpaceInvaders-MinAtar", 3e-3),
    ("Asterix-MinAtar", 3e-3),
    ("Freeway-MinAtar", 1e-3),
    ("CartPole-v1", 1e-3),
)

TRAINING = Training(learning_rates=OPEN_LEARNING_RATES, optimizer_noise="actor", batch_proportion="epoch",
                    gradient_clipping="per_network")

# What OPEN's protocol changes in the inputs' meaning; the other inputs read as the optimizer target's.
_CHANGED = {
    "grad": "the gradient of the PPO loss for this tensor, after clipping: the actor's gradients and the critic's "
            "are each clipped to global norm 0.5 on their own.",
    "batch_proportion": "a float scalar in [0, 1]: how far this step is through the epochs over the current batch "
                        "of data, by epoch: 0 for every minibatch of the first epoch, 1 for every minibatch of the "
                        "last (epoch index / (epochs - 1)).",
    "noise": "an array shaped like param: independent standard normal samples, fresh each step, for the actor's "
             "tensors; zeros for the critic's.",
    "lr": "a float scalar: OPEN's learning rate for this environment (Breakout 7e-3, SpaceInvaders and Asterix "
          "3e-3, Freeway and CartPole 1e-3), annealed linearly to 0 over training. It is the rule's own learning "
          "rate: scale the step with it.",
}

TARGET = replace(
    optimizer.TARGET,
    name="open",
    component="optimiser update rule for reinforcement learning, trained as the paper's OPEN (it replaces Adam "
              "in PPO)",
    summary=optimizer.TARGET.summary + " Training follows the OPEN protocol: the rule's own learning rate per "
            "environment, noise on the actor only, the batch proportion per epoch, and the actor's and the "
            "critic's gradients clipped apart.",
    inputs=tuple(TargetInput(i.name, _CHANGED.get(i.name, i.description)) for i in optimizer.TARGET.inputs),
    training=TRAINING,
)
