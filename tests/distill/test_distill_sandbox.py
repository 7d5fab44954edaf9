"""A code teacher's grid is computed in the sandbox, and only numbers come out: the tracer child's grid mode gives
the map the kernel computes in-process; hostile programs (run past the static check, straight into the child) that
print, raise, or forge the child's answer get nothing but numbers of the grid's exact shape through
`workers.distill.keep_grid`, and none of their words. The fit mode runs no candidate code and its vector passes the
parameter gate."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from workers.distill import fit_student, keep_grid, teacher_grid
from workers.results import FitSpec, GridSpec, TraceRequest
from workers.sandbox import SandboxLimits, probe_isolation, run_tracer
from workers.targets import load_function, lpo
from workers.targets.kernels import lpo_distill, lpo_network
from workers.trainer.parameters import encode_parameters
from workers.vocabulary import Outcome

MARKER = "MARKER-only-numbers-may-leave"
GRID = GridSpec(advantages=32, ratios=32)


@pytest.fixture(scope="module", autouse=True)
def require_bwrap() -> None:
    report = probe_isolation()
    if not report.bwrap:
        pytest.fail(f"bubblewrap does not work here: {report.bwrap_detail}")


@pytest.fixture()
def limits() -> SandboxLimits:
    return SandboxLimits(timeout_seconds=60, memory_mb=2048, cpu_seconds=120, max_output_bytes=8192, isolation="bwrap")


def test_a_code_teachers_grid_is_computed_in_the_sandbox(limits: SandboxLimits) -> None:
    got = teacher_grid("lpo", lpo.WARM_START, GRID, limits)
    assert got.outcome == Outcome.ok and got.values is not None, got.error
    ratio, advantage = lpo_distill.grid(GRID.advantages, GRID.ratios)
    expected = lpo_distill.gradient_map(load_function(lpo.WARM_START, lpo.TARGET), ratio, advantage)
    np.testing.assert_array_equal(got.values, expected)
    refused = teacher_grid("lpo", "import os\n\n\ndef drift(ratio, advantage, epsilon):\n    return ratio\n",
                           GRID, limits)
    assert refused.outcome == Outcome.invalid and refused.values is None
    assert refused.error.startswith("the teacher's code is refused: line 1")


def _forge(answer: dict) -> str:
    """A program that writes `answer` as the child's result and exits before the tracer can write its own."""
    payload = base64.b64encode(json.dumps(answer).encode()).decode()
    return (f"import base64, os, sys\nfd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
            f"os.write(fd, base64.b64decode('{payload}'))\nos._exit(0)\n")


def _array(values: np.ndarray, dtype: str | None = None) -> dict:
    return {"dtype": dtype or str(values.dtype), "shape": list(values.shape),
            "data": base64.b64encode(values.tobytes()).decode()}


HOSTILE = {
    "prints and raises": (f"print('{MARKER}')\nimport sys\nsys.stderr.write('{MARKER}')\n"
                          f"def drift(ratio, advantage, epsilon):\n    raise RuntimeError('{MARKER}')\n"),
    "forged ok with the wrong shape": _forge({"outcome": "ok", "error": MARKER, "stdout": MARKER,
                                              "values": _array(np.zeros(7, np.float32))}),
    "forged ok with a dtype that speaks": _forge({"outcome": "ok", "values": _array(np.zeros(GRID.size, np.float32),
                                                                                    dtype=MARKER)}),
    "forged ok with NaN": _forge({"outcome": "ok", "values": _array(np.full(GRID.size, np.nan, np.float32))}),
    "forged ok with huge values": _forge({"outcome": "ok", "values": _array(np.full(GRID.size, 1e30, np.float32))}),
    "forged ok with an artifact only": _forge({"outcome": "ok", "artifact": base64.b64encode(MARKER.encode()).decode(),
                                               "error": MARKER}),
    "forged error that speaks": _forge({"outcome": "error", "error": MARKER}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_teacher_gets_nothing_but_numbers_out(name: str, limits: SandboxLimits) -> None:
    result = run_tracer(TraceRequest(target="lpo", code=HOSTILE[name], grid=GRID), limits)  # past the static check
    kept = keep_grid(result, GRID)
    assert kept.outcome != Outcome.ok and kept.values is None
    assert MARKER not in kept.model_dump_json()
    assert set(type(kept).model_fields) == {"outcome", "error", "report", "values"}  # no output, no artifact


def test_a_forged_map_of_the_right_shape_is_only_numbers(limits: SandboxLimits) -> None:
    """A teacher may answer any finite map of the grid's shape: it is its own map, and numbers are all that come."""
    forged = np.linspace(-1.0, 1.0, GRID.size, dtype=np.float32)
    result = run_tracer(TraceRequest(target="lpo", code=_forge({"outcome": "ok", "error": MARKER,
                                                                "values": _array(forged)}), grid=GRID), limits)
    kept = keep_grid(result, GRID)
    assert kept.outcome == Outcome.ok and kept.error is None and MARKER not in kept.model_dump_json(exclude={"values"})
    np.testing.assert_array_equal(kept.values, forged)


def test_a_fit_runs_no_candidate_code_and_its_vector_passes_the_gate(limits: SandboxLimits) -> None:
    with pytest.raises(ValueError, match="no candidate code"):
        TraceRequest(target="lpo", code="def drift(ratio, advantage, epsilon):\n    return ratio\n",
                     fit=FitSpec(width=8, grid=GRID, teacher_map=encode_parameters(np.zeros(GRID.size))))
    zero = np.zeros(lpo_network.PARAMETER_COUNT, np.float32)  # the zero network: PPO
    spec = FitSpec(width=16, steps=20, grid=GRID, teacher_parameters=encode_parameters(zero), teacher_width=128)
    done = fit_student("lpo", spec, lpo_network.parameter_count(16), limits.model_copy(update={"timeout_seconds": 300}))
    assert done.outcome == Outcome.ok, done.error
    assert done.values.shape == (144,) and done.values.dtype == np.float32
    assert done.report.steps == 20 and done.report.final_mse <= 1e-8
