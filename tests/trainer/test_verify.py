"""The trainer's own verification: artifacts that could run host code or lie about their signature are refused.

Each hostile artifact is made by hand, as a candidate controlling its tracer could make it: with
jax.export's safety checks turned off, or at the wrong shapes, or not an artifact at all.
"""

from __future__ import annotations

import base64

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax._src.export import _export as _export_module

from tests.trainer.conftest import SMALL_DRIFT, artifact_of
from workers.artifact import Artifact
from workers.targets import TARGETS, get_target
from workers.trainer.protocol import TrainRequest
from workers.trainer.server import handle
from workers.trainer.verify import ArtifactRefused, verify_artifact

LPO = get_target("lpo")


def _module(fn, *structs, disabled=()) -> str:  # noqa: ANN001
    exported = export.export(jax.jit(fn), platforms=("cpu",), disabled_checks=list(disabled))(*structs)
    return base64.b64encode(exported.serialize(vjp_order=0)).decode()


def _lpo_artifact(drift_module: str) -> bytes:
    honest = Artifact.from_bytes(base64.b64decode(artifact_of(SMALL_DRIFT)))
    return Artifact(target="lpo", platforms=("cpu",), probe=honest.probe,
                    modules={"drift": drift_module, "drift_vjp": honest.modules["drift_vjp"]}).to_bytes()


def _symbolic(spec: str) -> tuple:
    return export.symbolic_shape(spec)


def callback_artifact() -> bytes:
    """A drift that calls back into Python on the host (what a forger would use to reach the trainer).

    jax.export refuses host callbacks twice over; a forger owns its tracer process, so it switches both
    checks off, as here.
    """
    lanes, m = _symbolic("lanes, m")
    f32 = jnp.float32

    def leak(x: np.ndarray) -> np.ndarray:
        return np.zeros_like(x)

    def drift(r, a, e):  # noqa: ANN001, ANN202
        scale = jax.pure_callback(leak, jax.ShapeDtypeStruct((), f32), e)  # runs Python on the host
        return (r * scale,)

    structs = (jax.ShapeDtypeStruct((lanes, m), f32), jax.ShapeDtypeStruct((lanes, m), f32),
               jax.ShapeDtypeStruct((), f32))
    checks = _export_module._check_lowering
    _export_module._check_lowering = lambda lowering: None
    try:
        module = _module(drift, *structs,
                         disabled=[export.DisabledSafetyCheck.custom_call("xla_ffi_python_cpu_callback"),
                                   export.DisabledSafetyCheck.custom_call("xla_python_cpu_callback")])
    finally:
        _export_module._check_lowering = checks
    return _lpo_artifact(module)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_warm_start_artifact_verifies(name: str) -> None:
    modules = verify_artifact(base64.b64decode(artifact_of(TARGETS[name].warm_start, name)), TARGETS[name], "cpu")
    assert set(modules) == {spec.name for spec in TARGETS[name].modules}


def test_a_host_callback_exported_without_safety_checks_is_refused() -> None:
    with pytest.raises(ArtifactRefused, match="custom_call to 'xla_ffi_python_cpu_callback'|custom_call to"):
        verify_artifact(callback_artifact(), LPO, "cpu")


def test_a_wrong_signature_is_refused() -> None:
    f32 = jnp.float32
    fixed = _module(lambda r, a, e: (r * a,), jax.ShapeDtypeStruct((4, 128), f32),
                    jax.ShapeDtypeStruct((4, 128), f32), jax.ShapeDtypeStruct((), f32))
    with pytest.raises(ArtifactRefused, match="takes"):
        verify_artifact(_lpo_artifact(fixed), LPO, "cpu")
    lanes, m = _symbolic("lanes, m")
    two_results = _module(lambda r, a, e: (r, a), jax.ShapeDtypeStruct((lanes, m), f32),
                          jax.ShapeDtypeStruct((lanes, m), f32), jax.ShapeDtypeStruct((), f32))
    with pytest.raises(ArtifactRefused, match="returns"):
        verify_artifact(_lpo_artifact(two_results), LPO, "cpu")


@pytest.mark.parametrize("data", [
    b"not json", b'{"format": 1, "target": "lpo", "platforms": ["cpu"], "modules": {}}',
    b'{"format": 1, "target": "optimizer", "platforms": ["cpu"], "modules": {"drift": "AAAA", "drift_vjp": "AAAA"}}',
    b'{"format": 1, "target": "lpo", "platforms": ["cpu"], "modules": {"drift": "AAAA", "drift_vjp": "AAAA"}}',
    b"x" * (5 * 1024 * 1024),
], ids=["garbage", "no-modules", "other-target", "unreadable-modules", "too-big"])
def test_malformed_artifacts_are_refused(data: bytes) -> None:
    with pytest.raises(ArtifactRefused):
        verify_artifact(data, LPO, "cpu")


def test_an_artifact_without_the_trainers_platform_is_refused() -> None:
    with pytest.raises(ArtifactRefused, match="exported for"):
        verify_artifact(base64.b64decode(artifact_of(SMALL_DRIFT)), LPO, "rocm")


def test_the_trainer_refuses_the_hostile_one_and_trains_the_rest() -> None:
    request = TrainRequest(target="lpo", env="CartPole-v1", profile="smoke", seeds=[0], learning_rates=[1e-3],
                           artifacts=[base64.b64encode(callback_artifact()).decode(), artifact_of(SMALL_DRIFT)])
    response = handle(request)
    assert set(response.refused) == {0} and "custom_call" in response.refused[0]
    assert response.trained == [1]
    assert response.return_sum is not None and response.return_sum.decode().shape[:3] == (1, 1, 1)
