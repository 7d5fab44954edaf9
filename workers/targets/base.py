"""What a target is: one pluggable part of the RL pipeline that candidates replace.

A target's card (`workers/targets/<name>.py`, free of JAX, read by the API, the proposers and the
static check) declares what the model designs (the prompt's phrase), the function's name and
parameters (and which are plain numbers), a plain description of every input (the proposer shows
them to the language model), the rules a good candidate follows, the warm-start source (the
hand-made algorithm), known reference algorithms (meta-tested beside it) and what candidate code may
call. Its kernel (`workers/targets/kernels/<name>.py`, JAX, imported only by the tracer and the
trainer through `Target`'s properties) holds a probe that calls a candidate on small random arrays,
the checks, and how the candidate crosses the trust boundary: the modules the tracer exports
(`ModuleSpec`: the function batched over a leading lane axis, at symbolic shapes) and how the trainer
assembles them into the PPO plug-in (`assemble`).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Literal

import numpy as np


class CandidateError(ValueError):
    """The candidate's code does not define a usable function; the message is for the proposer."""


@dataclass(frozen=True)
class TargetInput:
    name: str
    description: str


@dataclass(frozen=True)
class ArgSpec:
    """One array argument or result of an exported module.

    `dims` are symbolic dimension names (shared names must agree); `lane` adds a leading lane axis
    (one row per seed, learning rate and candidate): per-lane data. Without it the value is shared
    by every lane (a constant such as PPO's epsilon).
    """

    dims: tuple[str, ...] = ()
    lane: bool = True


@dataclass(frozen=True)
class ModuleSpec:
    """One function the tracer exports and the trainer calls.

    `build(fn)` turns the candidate's function into the flat, lane-batched function that is exported:
    arrays in, a tuple of arrays out, exactly `args` and `results`.
    """

    name: str
    args: tuple[ArgSpec, ...]
    results: tuple[ArgSpec, ...]
    build: Callable[[Callable[..., Any]], Callable[..., Any]]


# What a candidate may import unless its target says otherwise: pure JAX and the standard library's math.
JAX_MODULES = frozenset({"jax", "jax.numpy", "jax.nn", "jax.lax", "math", "functools"})


def _names(module: str, names: str) -> frozenset[str]:
    return frozenset(f"{module}.{name}" for name in names.split())


# The functions and constants candidate code may name (fully qualified), unless its target says otherwise:
# array maths only. Nothing here reveals a shape, a dtype or how the function is being traced
# (no `jnp.shape`, `jnp.ndim`, `jnp.size`, `jnp.result_type`), runs host code, or changes gradients
# (no `stop_gradient`, `custom_vjp`).
JAX_FUNCTIONS = (
    _names("jax.numpy", """
        abs absolute add all any arccos arccosh arcsin arcsinh arctan arctan2 arctanh asarray array cbrt ceil clip
        concatenate copysign cos cosh cumprod cumsum divide dot einsum equal exp exp2 expm1 flip float32 floor
        fmax fmin full_like greater greater_equal heaviside hypot isfinite isnan less less_equal log log10
        log1p log2 logaddexp logical_and logical_not logical_or matmul max maximum mean median min minimum mod
        multiply nan_to_num negative not_equal ones_like outer power prod reciprocal roll round sign sin sinc
        sinh sqrt square stack std subtract sum tan tanh true_divide var where zeros_like ones zeros full arange
        linspace pi e inf nan newaxis""")
    | _names("jax.nn", """
        celu elu gelu hard_sigmoid hard_tanh leaky_relu log_sigmoid log_softmax relu relu6 selu sigmoid silu
        soft_sign softmax softplus swish""")
    | _names("jax.lax", """
        abs clamp cond cummax cummin cumprod cumsum digamma erf erf_inv erfc exp fori_loop lgamma log logistic
        max min rsqrt scan select sign sqrt square tanh while_loop""")
    | _names("math", "pi e inf tau sqrt log log1p exp expm1 tanh cos sin atan erf")
    | _names("functools", "partial")
)


@dataclass(frozen=True)
class Reference:
    """A known algorithm for a target, meta-tested beside the warm start in every run (a positive control)."""

    name: str
    description: str
    code: str


@dataclass(frozen=True)
class Training:
    """How PPO trains around a target's plug-in where it departs from the service's own loop: a protocol from a
    paper, kept exact so its results can be reproduced. The defaults are the service's loop.

    - `learning_rates`: (environment, rate) pairs that replace the environment's tuned rate for this target;
    - `optimizer_noise`: which parameter tensors the update rule's `noise` reaches (`"actor"`: the critic's get
      zeros);
    - `batch_proportion`: `"step"`, the position of the gradient step within the update's epochs x minibatches;
      `"epoch"`, the epoch's position within the update (every minibatch of an epoch shares it);
    - `gradient_clipping`: `"global"`, one global norm over every gradient; `"per_network"`, the actor's and the
      critic's gradients each clipped to the norm on their own.
    """

    learning_rates: tuple[tuple[str, float], ...] = ()
    optimizer_noise: Literal["all", "actor"] = "all"
    batch_proportion: Literal["step", "epoch"] = "step"
    gradient_clipping: Literal["global", "per_network"] = "global"

    def learning_rate(self, env: str, tuned: float) -> float:
        """This target's rate on `env`: its own where it names one, else the environment's `tuned` rate."""
        return dict(self.learning_rates).get(env, tuned)


SERVICE_TRAINING = Training()


MAX_WIDTH = 1024  # the widest hidden layer a sized network (a distilled student) may have


@dataclass(frozen=True)
class Network:
    """A network of the project's own whose parameters a meta-learner (ES) searches: project code, so only a float
    vector of `parameter_count` values comes in (validated by `workers.trainer.parameters`). `kernel` holds its JAX
    half (`PARAMETER_COUNT`, `network_drift`, and `make_plugin(vector)`: the target's plug-in at one vector, which the
    trainer calls per lane inside its training program), imported only by the trainer."""

    name: str
    kernel: str
    parameter_count: int
    description: str
    # The network as a standalone module in plain JAX, reading its flat vector from a module-level `PARAMETERS`
    # (a list of floats) that an export appends: what a network candidate's `best.py` is made of.
    source: str = ""
    # Its hidden width (`parameter_count` is at this width; 0: the network has no width to choose). A network with
    # a width has a sized variant per width (`sized`): a distilled student of another width, named `<name>-<width>`.
    hidden: int = 0
    # The module of its distillation (`grid`, `gradient_map`, `fit`; JAX, run only in the sandboxed tracer child),
    # "" when the network cannot be distilled into.
    distill_kernel: str = ""

    def sized(self, width: int) -> Network:
        """This network at another hidden width (itself at its own): the same layout, (parameters per unit) * width
        parameters, named `<name>-<width>`."""
        if not self.hidden or self.parameter_count % self.hidden:
            raise ValueError(f"{self.name} has no hidden width to choose")
        if width == self.hidden:
            return self
        if width < 1:
            raise ValueError(f"a hidden width is a positive number, got {width}")
        return replace(self, name=f"{self.name}-{width}", parameter_count=self.parameter_count // self.hidden * width,
                       hidden=width)

    def resolve(self, name: str) -> Network | None:
        """The variant of this network called `name` (itself, or `<name>-<width>`), or None."""
        if name == self.name:
            return self
        prefix = f"{self.name}-"
        if self.hidden and name.startswith(prefix) and name[len(prefix):].isdigit():
            width = int(name[len(prefix):])
            return self.sized(width) if 0 < width <= MAX_WIDTH else None
        return None

    def of_size(self, size: int) -> Network | None:
        """The variant of this network with `size` parameters, or None."""
        if size == self.parameter_count:
            return self
        unit = self.parameter_count // self.hidden if self.hidden else 0
        if unit and size % unit == 0 and 0 < size // unit <= MAX_WIDTH:
            return self.sized(size // unit)
        return None


@dataclass(frozen=True)
class Target:
    name: str
    component: str  # what the model designs, in the prompt's words ("a new <component>")
    function_name: str
    parameters: tuple[str, ...]
    scalar_inputs: frozenset[str]  # the parameters that are plain numbers (mutations keep arrays arrays)
    summary: str
    inputs: tuple[TargetInput, ...]
    returns: str
    rules: tuple[str, ...]
    warm_start: str
    default_train_envs: tuple[str, ...]
    default_test_envs: tuple[str, ...]
    # The module holding the target's JAX half (`workers.targets.kernels.<name>`): `probe`, `MODULES`,
    # `assemble` and, where the target has them, `check_rules`, `check_invariance` and `check_gradient`.
    # Read through the properties below, so that importing a card never imports JAX.
    kernel: str
    plugin_field: str  # the PPO plug-in slot the candidate fills (workers.rl.plugins builds the slots from these)
    references: tuple[Reference, ...] = ()
    allowed_modules: frozenset[str] = JAX_MODULES  # what the static check lets a candidate import
    allowed_functions: frozenset[str] = JAX_FUNCTIONS  # what candidate code may name in those modules
    network: Network | None = None  # the network an `es` run searches (None: the target has none, no ES)
    training: Training = SERVICE_TRAINING  # how PPO trains around the plug-in (the service's loop, or a paper's)

    @property
    def signature(self) -> str:
        return f"def {self.function_name}({', '.join(self.parameters)}):"

    def _kernel(self) -> ModuleType:
        return importlib.import_module(self.kernel)

    @property
    def probe(self) -> Callable[[Callable[..., Any]], Sequence[Any]]:
        """Calls the function on fixed inputs and returns its outputs (its behaviour, fingerprinted by
        `behaviour_fingerprint`); raises CandidateError when it misbehaves or breaks a checkable rule."""
        return self._kernel().probe

    @property
    def modules(self) -> tuple[ModuleSpec, ...]:
        """What the tracer exports."""
        return self._kernel().MODULES

    @property
    def assemble(self) -> Callable[[dict[str, Callable[..., Any]]], Callable[..., Any]]:
        """Builds the PPO plug-in from one lane call per module (`calls[name](*args) -> tuple of results`,
        called inside the lane-vmapped training program with unbatched shapes)."""
        return self._kernel().assemble

    @property
    def check_rules(self) -> Callable[[Callable[..., Any]], None] | None:
        """Checks the `rules` that can be checked by calling the function (raises CandidateError naming the
        rule); run on proposals before they are trained, and by the trainer on a run's artifacts."""
        return getattr(self._kernel(), "check_rules", None)

    @property
    def check_invariance(self) -> Callable[[Callable[..., Any], dict[str, int]], None] | None:
        """Calls the function at the training program's sizes (`{"m": minibatch, "t": steps, "n": envs}`) and at
        the probe's, and raises CandidateError when an output depends on how many samples share the call or on
        their order (the trainer runs it on the artifact: a candidate cannot behave one way on the probe and
        another in training)."""
        return getattr(self._kernel(), "check_invariance", None)

    @property
    def check_gradient(self) -> Callable[[Callable[..., Any]], None] | None:
        """Raises CandidateError unless the function's gradient is the gradient of its values (finite
        differences), for the targets the training loop differentiates; run by the trainer on the artifact."""
        return getattr(self._kernel(), "check_gradient", None)


FINGERPRINT_DIGITS = 4  # significant digits two behaviours must share on every probe output to be the same


def behaviour_fingerprint(outputs: Sequence[Any]) -> str:
    """A hash of what a function returned on the probe's fixed inputs, each value rounded to 4 significant
    digits: two programs that compute the same function (a no-op wrapper, a renamed term) share it."""
    digest = hashlib.sha256()
    for output in outputs:
        values = np.asarray(output, dtype=np.float64).ravel() + 0.0  # -0.0 and 0.0 are the same value
        digest.update(f"{values.shape}:".encode())
        digest.update(",".join(f"{v:.{FINGERPRINT_DIGITS}g}" for v in values).encode())
        digest.update(b";")
    return digest.hexdigest()


def load_function(code: str, target: Target) -> Callable[..., Any]:
    """Execute candidate source in a fresh namespace and return the target's function.

    Only ever called inside the sandbox child (or for the project's own warm starts).
    """
    namespace: dict[str, Any] = {"__name__": "candidate"}
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)  # noqa: S102 - sandboxed by the caller
    except SyntaxError as exc:
        raise CandidateError(f"line {exc.lineno}: syntax error: {exc.msg}") from exc
    fn = namespace.get(target.function_name)
    if not callable(fn):
        raise CandidateError(f"the code must define a function `{target.signature}`")
    code_obj = getattr(fn, "__code__", None)
    if code_obj is None:
        raise CandidateError(f"`{target.function_name}` must be a plain function")
    names = code_obj.co_varnames[: code_obj.co_argcount]
    if tuple(names) != target.parameters:
        raise CandidateError(
            f"`{target.function_name}` takes ({', '.join(names)}); expected ({', '.join(target.parameters)})"
        )
    return fn
