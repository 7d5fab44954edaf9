"""The trainer's gate for network parameters (workers/trainer/parameters.py): a finite, bounded float32 vector of
exactly the expected size passes, as a read-only copy; anything else is refused as it is, never converted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from workers.trainer.parameters import decode_parameters, validate_parameters
from workers.trainer.protocol import EncodedArray

SIZE = 1152
BOUND = 100.0


class _Subclass(np.ndarray):
    pass


def _good() -> np.ndarray:
    return np.linspace(-1.0, 1.0, SIZE, dtype=np.float32)


def _with(value: float) -> np.ndarray:
    array = _good()
    array[17] = value
    return array


HOSTILE: dict[str, tuple[Callable[[], object], str]] = {
    "nan": (lambda: _with(np.nan), "finite"),
    "inf": (lambda: _with(np.inf), "finite"),
    "minus inf": (lambda: _with(-np.inf), "finite"),
    "huge": (lambda: _with(1e30), "within"),
    "just over the bound": (lambda: _with(np.nextafter(np.float32(BOUND), np.float32(np.inf))), "within"),
    "too short": (lambda: _good()[:-1], "exactly 1152"),
    "too long": (lambda: np.zeros(SIZE + 1, np.float32), "exactly 1152"),
    "empty": (lambda: np.zeros(0, np.float32), "exactly 1152"),
    "scalar": (lambda: np.float32(0.0), "numpy.ndarray"),
    "0-d array": (lambda: np.array(0.0, np.float32), "exactly 1152"),
    "2-D": (lambda: _good().reshape(8, 144), "exactly 1152"),
    "2-D of one row": (lambda: _good()[None], "exactly 1152"),
    "float64": (lambda: _good().astype(np.float64), "float32"),
    "float16": (lambda: _good().astype(np.float16), "float32"),
    "big-endian float32": (lambda: _good().astype(">f4"), "float32"),
    "int32": (lambda: np.zeros(SIZE, np.int32), "float32"),
    "int64": (lambda: np.zeros(SIZE, np.int64), "float32"),
    "bool": (lambda: np.zeros(SIZE, bool), "float32"),
    "object": (lambda: np.array([0.0] * SIZE, dtype=object), "float32"),
    "complex": (lambda: np.zeros(SIZE, np.complex64), "float32"),
    "structured": (lambda: np.zeros(SIZE, dtype=[("x", np.float32)]), "float32"),
    "bytes": (lambda: _good().tobytes(), "numpy.ndarray"),
    "list": (lambda: _good().tolist(), "numpy.ndarray"),
    "None": (lambda: None, "numpy.ndarray"),
    "subclass": (lambda: _good().view(_Subclass), "numpy.ndarray"),
    "masked": (lambda: np.ma.masked_array(_good()), "numpy.ndarray"),
    "matrix": (lambda: np.asmatrix(_good()), "numpy.ndarray"),
}


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # numpy's matrix, built on purpose
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_parameters_are_refused(name: str) -> None:
    make, message = HOSTILE[name]
    with pytest.raises(ValueError, match=message):
        validate_parameters(make(), SIZE, BOUND)


def test_a_memmap_is_refused(tmp_path: Path) -> None:
    mapped = np.memmap(tmp_path / "p.bin", dtype=np.float32, mode="w+", shape=(SIZE,))
    with pytest.raises(ValueError, match="numpy.ndarray"):
        validate_parameters(mapped, SIZE, BOUND)


def test_good_parameters_pass_as_a_read_only_copy() -> None:
    original = _with(-BOUND)  # the bound itself is allowed
    checked = validate_parameters(original, SIZE, BOUND)
    np.testing.assert_array_equal(checked, original)
    assert checked.dtype == np.float32 and checked.shape == (SIZE,)
    assert not checked.flags.writeable and not np.shares_memory(checked, original)
    original[0] = np.nan  # the caller's array changing afterwards does not reach what was checked
    assert np.isfinite(checked).all()


def test_a_non_contiguous_float32_view_passes_as_a_contiguous_copy() -> None:
    strided = np.zeros(2 * SIZE, np.float32)[::2]
    checked = validate_parameters(strided, SIZE, BOUND)
    assert checked.flags.c_contiguous


def test_the_message_names_the_offending_value() -> None:
    with pytest.raises(ValueError, match="value 17 is nan"):
        validate_parameters(_with(np.nan), SIZE, BOUND)
    with pytest.raises(ValueError, match=r"value 17 is 1e\+30"):
        validate_parameters(_with(1e30), SIZE, BOUND)


@pytest.mark.parametrize(("size", "bound"), [(0, 1.0), (-1, 1.0), (SIZE, 0.0), (SIZE, float("inf")),
                                             (SIZE, float("nan")), (1152.0, 1.0)])
def test_the_gate_itself_refuses_a_meaningless_size_or_bound(size: object, bound: float) -> None:
    with pytest.raises(ValueError, match="expected_size"):
        validate_parameters(_good(), size, bound)  # type: ignore[arg-type]


def test_encoded_parameters_round_trip_through_the_gate() -> None:
    checked = decode_parameters(EncodedArray.of(_good()), SIZE, BOUND)
    np.testing.assert_array_equal(checked, _good())
    assert not checked.flags.writeable


def _encoded(**change: object) -> EncodedArray:
    return EncodedArray.of(_good()).model_copy(update=change)


@pytest.mark.parametrize(("encoded", "message"), [
    (lambda: EncodedArray.of(_good().astype(np.float64)), "float32 of shape"),
    (lambda: EncodedArray.of(np.zeros(SIZE, bool)), "float32 of shape"),
    (lambda: EncodedArray.of(_good().reshape(8, 144)), "float32 of shape"),
    (lambda: EncodedArray.of(_good()[:-1]), "float32 of shape"),
    (lambda: _encoded(data=EncodedArray.of(_good()[:-1]).data), "bytes"),
    (lambda: _encoded(data=EncodedArray.of(np.zeros(SIZE + 1, np.float32)).data), "bytes"),
    (lambda: _encoded(data="!" * len(EncodedArray.of(_good()).data)), "decoded"),
    (lambda: EncodedArray.of(_with(np.nan)), "finite"),
    (lambda: EncodedArray.of(_with(-1e9)), "within"),
])
def test_hostile_encoded_parameters_are_refused(encoded: Callable[[], EncodedArray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_parameters(encoded(), SIZE, BOUND)
