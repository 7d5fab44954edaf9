"""Verify a candidate's artifact before the trainer runs any of it.

The exporter's own safety checks prove nothing (the exporting process is the candidate's), so the
trainer deserializes each module and checks, itself:
- every operation of every function in the module: only the StableHLO, CHLO and func dialects; no
  `custom_call` outside a short allowlist (never a Python callback target); no tokens or effects,
  infeed/outfeed, send/recv or collectives;
- the exact signature: argument and result shapes (symbolic names included) and dtypes, the tree of
  results, one device, the platform this trainer runs on, no VJP carried along;
- a size cap (the artifact as a whole and each module).
"""

from __future__ import annotations

import jax
from jax import export
from jax._src.interpreters import mlir as jax_mlir
from jax._src.lib.mlir import ir

from workers.artifact import Artifact
from workers.targets import Target
from workers.targets.base import ArgSpec, ModuleSpec

MAX_MODULE_BYTES = 1024 * 1024
ALLOWED_DIALECTS = ("stablehlo.", "chlo.", "func.")
ALLOWED_CUSTOM_CALLS = frozenset({
    "shape_assertion",  # jax.export's own checks of symbolic shapes
    "stablehlo.dynamic_reduce_window",  # cumulative sums over a symbolic length
    "stablehlo.dynamic_rng_bit_generator",
    "stablehlo.dynamic_top_k",
    "mhlo.topk",
    "mhlo.erf",
})
FORBIDDEN_OPS = frozenset({
    "stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send", "stablehlo.recv", "stablehlo.create_token",
    "stablehlo.after_all", "stablehlo.all_reduce", "stablehlo.all_gather", "stablehlo.all_to_all",
    "stablehlo.reduce_scatter", "stablehlo.collective_permute", "stablehlo.collective_broadcast",
    "stablehlo.partition_id", "stablehlo.replica_id",
})


class ArtifactRefused(ValueError):
    """The artifact breaks a rule; the message says which (it is shown to the proposer)."""


def _expected(arg: ArgSpec) -> str:
    dims = (("lanes",) if arg.lane else ()) + arg.dims
    return f"float32[{','.join(dims)}]"


def _aval(aval: jax.core.AbstractValue) -> str:
    return f"{aval.dtype}[{','.join(str(d) for d in aval.shape)}]"


def check_operations(module_text: str, name: str) -> None:
    """Walk every operation of the module; refuse what may run host code or talk to the outside."""
    problems: list[str] = []

    def visit(op: ir.Operation) -> ir.WalkResult:
        op_name = op.name
        if op_name == "builtin.module":
            return ir.WalkResult.ADVANCE
        if not op_name.startswith(ALLOWED_DIALECTS) or op_name in FORBIDDEN_OPS:
            problems.append(f"operation {op_name}")
        elif op_name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if target not in ALLOWED_CUSTOM_CALLS:
                problems.append(f"custom_call to {target!r}")
        types = [str(r.type) for r in op.results] + [str(o.type) for o in op.operands]
        if "function_type" in op.attributes:
            types.append(str(op.attributes["function_type"]))
        if any("token" in t for t in types):
            problems.append(f"a token in {op_name}")
        return ir.WalkResult.ADVANCE

    with jax_mlir.make_ir_context():
        module = ir.Module.parse(module_text)
        module.operation.walk(visit)
    if problems:
        shown = ", ".join(sorted(set(problems))[:5])
        raise ArtifactRefused(f"module {name} contains what a traced array function never needs: {shown}")


def verify_module(data: bytes, spec: ModuleSpec, platform: str) -> export.Exported:
    if len(data) > MAX_MODULE_BYTES:
        raise ArtifactRefused(f"module {spec.name} has {len(data)} bytes; the limit is {MAX_MODULE_BYTES}")
    try:
        exported = export.deserialize(bytearray(data))
    except Exception as exc:  # noqa: BLE001 - malformed bytes are the artifact's fault
        raise ArtifactRefused(f"module {spec.name} cannot be read: {type(exc).__name__}: {exc}") from None
    got_in = [_aval(a) for a in exported.in_avals]
    want_in = [_expected(a) for a in spec.args]
    if got_in != want_in:
        raise ArtifactRefused(f"module {spec.name} takes {got_in}; expected {want_in}")
    got_out = [_aval(a) for a in exported.out_avals]
    want_out = [_expected(a) for a in spec.results]
    if got_out != want_out or exported.out_tree != jax.tree.structure(tuple(range(len(spec.results)))):
        raise ArtifactRefused(f"module {spec.name} returns {got_out}; expected a tuple {want_out}")
    if exported.in_tree != jax.tree.structure((tuple(range(len(spec.args))), {})):
        raise ArtifactRefused(f"module {spec.name} has an unexpected argument structure")
    if platform not in exported.platforms:
        raise ArtifactRefused(f"module {spec.name} was exported for {list(exported.platforms)}, not {platform}")
    if exported.nr_devices != 1:
        raise ArtifactRefused(f"module {spec.name} needs {exported.nr_devices} devices")
    if exported.ordered_effects or exported.unordered_effects:
        raise ArtifactRefused(f"module {spec.name} has side effects")
    if exported.has_vjp():
        raise ArtifactRefused(f"module {spec.name} carries its own VJP; the trainer uses the exported modules only")
    check_operations(exported.mlir_module(), spec.name)
    return exported


def verify_artifact(data: bytes, target: Target, platform: str) -> dict[str, export.Exported]:
    """The verified modules by name, or ArtifactRefused."""
    try:
        artifact = Artifact.from_bytes(data)
    except ValueError as exc:
        raise ArtifactRefused(f"the artifact is malformed: {str(exc)[:300]}") from None
    if artifact.target != target.name:
        raise ArtifactRefused(f"the artifact is for target {artifact.target!r}, not {target.name!r}")
    wanted = {spec.name for spec in target.modules}
    if set(artifact.modules) != wanted:
        raise ArtifactRefused(f"the artifact has modules {sorted(artifact.modules)}; expected {sorted(wanted)}")
    try:
        return {spec.name: verify_module(artifact.module_bytes(spec.name), spec, platform) for spec in target.modules}
    except ArtifactRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - anything unreadable is refused, never trusted
        raise ArtifactRefused(f"the artifact could not be verified: {type(exc).__name__}: {str(exc)[:300]}") from None
