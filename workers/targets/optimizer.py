"""Optimizer: a learned update rule (in the spirit of OPEN) that replaces Adam in PPO.

The rule is called once per parameter tensor at every gradient step, after global-norm clipping. It
gets OPEN's inputs (Goldie et al., "Can Learned Optimization Make Reinforcement Learning Less
Difficult?"), computed by the training loop (`workers/rl/optimizer_inputs.py`): the gradient and the parameter,
momenta of the gradient at six timescales, the iteration and the training, layer and batch
proportions, the dormancy of the neurons the parameter feeds, standard normal noise and the
environment's learning rate. It carries its own state: a tuple of four arrays shaped like the
parameter, zero at the start. The warm start is Adam, which reads only the gradient, its state, the
iteration and the learning rate.

Across the trust boundary the rule is exported per parameter rank (`update_1d`, `update_2d`) as one
flat, lane-batched function: tensors first (grad, param, the state slots, the momenta one by one,
dormancy, noise), then the scalars (iteration, progress, layer and batch proportions, lr). This is the
target's card (JAX-free); its probe and modules are in `workers.targets.kernels.optimizer`.
"""

from __future__ import annotations

from workers.targets.base import Target, TargetInput

STATE_SLOTS = 4
# The timescales of the gradient momenta the training loop keeps for the rule (OPEN's), in this order.
MOMENTUM_BETAS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)

WARM_START = '''import jax.numpy as jnp


def update(grad, param, state, momenta, iteration, progress, layer_proportion, batch_proportion, dormancy, noise,
           lr):
    """Adam (b1 0.9, b2 0.999, eps 1e-5), the optimiser PPO is tuned with. It uses only grad, state,
    iteration and lr."""
    m, v, slot2, slot3 = state
    b1, b2, eps = 0.9, 0.999, 1e-5
    m = b1 * m + (1.0 - b1) * grad
    v = b2 * v + (1.0 - b2) * grad * grad
    t = iteration + 1.0
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    return -lr * m_hat / (jnp.sqrt(v_hat) + eps), (m, v, slot2, slot3)
'''


TARGET = Target(
    name="optimizer",
    component="optimiser update rule for reinforcement learning (it replaces Adam in PPO)",
    function_name="update",
    parameters=("grad", "param", "state", "momenta", "iteration", "progress", "layer_proportion",
                "batch_proportion", "dormancy", "noise", "lr"),
    scalar_inputs=frozenset({"iteration", "progress", "layer_proportion", "batch_proportion", "lr"}),
    summary=(
        "An optimiser update rule used instead of Adam to train PPO's actor-critic network (two MLPs, actor "
        "and critic, with two hidden layers each; tanh, or relu on MinAtar). It is called for every parameter "
        "tensor (a weight matrix or a bias vector) at every gradient step and returns the change to add to the "
        "parameter. "
        "Its inputs are those of OPEN, a learned optimiser for RL: momenta at several timescales, how far "
        "training, the layer and the batch are, neuron dormancy and noise."
    ),
    inputs=(
        TargetInput("grad", "the gradient of the PPO loss for this tensor (after global-norm clipping to 0.5)."),
        TargetInput("param", "the current value of the parameter tensor, same shape as grad."),
        TargetInput(
            "state",
            f"a tuple of {STATE_SLOTS} arrays shaped like param, all zeros at the first step; whatever this "
            "function returned as its new state at the previous step (use them for your own momenta).",
        ),
        TargetInput(
            "momenta",
            f"an array of shape ({len(MOMENTUM_BETAS)}, *param.shape): exponential moving averages of the gradient "
            f"kept by the training loop at the timescales beta = {', '.join(str(b) for b in MOMENTUM_BETAS)} "
            "(momenta[i] = beta_i * previous momenta[i] + (1 - beta_i) * grad, this step's grad included; zero "
            "before the first step, no bias correction). momenta[2] is the beta 0.9 momentum.",
        ),
        TargetInput("iteration", "a float scalar: how many gradient steps were made before this one (0, 1, 2, ...)."),
        TargetInput("progress", "a float scalar in [0, 1): the training proportion, the fraction of training done."),
        TargetInput(
            "layer_proportion",
            "a float scalar in [0, 1]: how deep this tensor's layer is in its network, 0 for the first layer, "
            "0.5 for the second and 1 for the output layer (the actor and the critic are separate networks).",
        ),
        TargetInput(
            "batch_proportion",
            "a float scalar in [0, 1]: how far this step is through the epochs over the current batch of "
            "data (0 at the first minibatch of the first epoch, 1 at the last minibatch of the last).",
        ),
        TargetInput(
            "dormancy",
            "an array shaped like param, >= 0: the dormancy score of the neuron each entry feeds (output unit j "
            "for a weight w[i, j] or a bias b[j]): the neuron's mean absolute activation over the minibatch "
            "divided by the mean of that over the layer's neurons (ReDo). About 1 is typical, near 0 is a "
            "dormant neuron; at most the layer's width. 1 for a Gaussian policy's log_std.",
        ),
        TargetInput("noise", "an array shaped like param of independent standard normal samples, fresh each step."),
        TargetInput(
            "lr",
            "a float scalar: the learning rate tuned for this environment, annealed linearly to 0 over training "
            "(Adam's step size). It is the rule's own learning rate: scale the step with it.",
        ),
    ),
    returns=f"a pair (delta, new_state): the parameter becomes param + delta; new_state is {STATE_SLOTS} arrays",
    rules=(
        f"delta must have the shape of param; new_state must be a tuple of {STATE_SLOTS} arrays shaped like param",
        "the step size should scale with lr, which is tuned per environment",
        "the rule may ignore any input; it must work for a 1-D bias as well as a 2-D weight matrix",
        "use only jax, jax.numpy, jax.nn, jax.lax, math and functools; the function is traced by JAX",
    ),
    warm_start=WARM_START,
    default_train_envs=("CartPole-v1",),
    default_test_envs=("Acrobot-v1",),
    kernel="workers.targets.kernels.optimizer",
    plugin_field="update",
)
