"""The trainer's gate for a network candidate's parameters: numbers only, checked before they reach JAX.

A network candidate (an ES member or mean, a distilled student) is project code plus a float vector; the
vector is the only thing that comes from outside, so it is refused unless it is exactly what the network
takes: a plain `numpy.ndarray` (no subclass), dtype float32 (native byte order), one dimension of the
expected size, every value finite and within the bound. Nothing is converted on the way (no `np.asarray`,
no `astype`): a float64, int, object, bool or 2-D array, bytes, a list, a masked array or a memmap are
refused as they are, not coerced into something that would pass. Numpy only (the worker imports it too).
`decode_parameters` is the same gate for a vector as it crosses a process boundary (`EncodedArray`, base64).
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from workers.trainer.protocol import EncodedArray

DEFAULT_BOUND = 1e3  # no sensible network of ours has a weight near it; ES moves a weight ~lr per generation


def encode_parameters(vector: np.ndarray) -> EncodedArray:
    """A vector as it crosses to the trainer: float32 (little-endian, as `parameters_sha256` hashes it)."""
    return EncodedArray.of(np.ascontiguousarray(vector, dtype="<f4").astype(np.float32, copy=False))


def parameters_sha256(encoded: EncodedArray) -> str:
    """The content address of a vector: the SHA-256 of its float32 bytes."""
    return hashlib.sha256(base64.b64decode(encoded.data)).hexdigest()


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def validate_parameters(array: object, expected_size: int, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """The array itself when it is a numpy float32 vector of `expected_size` finite values with |value| <= bound;
    otherwise a ValueError that says which check it failed. Returns a read-only copy, so what was checked is
    what runs, whatever the caller does with its own array afterwards."""
    if not (isinstance(expected_size, int) and expected_size > 0 and 0.0 < bound < float("inf")):
        raise ValueError(f"expected_size must be a positive int and bound positive and finite, "
                         f"got {expected_size!r} and {bound!r}")
    if type(array) is not np.ndarray:
        raise ValueError(f"network parameters must be a numpy.ndarray of float32, got {_describe(array)}")
    if array.dtype != np.dtype(np.float32) or not array.dtype.isnative:
        raise ValueError(f"network parameters must be float32 (native byte order), got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != expected_size:
        raise ValueError(f"network parameters must be a vector of exactly {expected_size} values, "
                         f"got shape {array.shape}")
    checked = array.copy()  # what is checked below cannot change under the caller's hands afterwards
    checked.flags.writeable = False
    finite = np.isfinite(checked)
    if not finite.all():
        index = int(np.argmin(finite))
        raise ValueError(f"network parameters must be finite: value {index} is {checked[index]}")
    too_large = np.abs(checked) > bound
    if too_large.any():
        index = int(np.argmax(too_large))
        raise ValueError(f"network parameters must lie within +-{bound:g}: value {index} is {checked[index]:g}")
    return checked


def decode_parameters(encoded: EncodedArray, expected_size: int, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """The vector an `EncodedArray` carries, refused unless it says float32 and [expected_size] and its bytes are
    exactly that many float32s (checked before decoding), then through `validate_parameters`."""
    if encoded.dtype != "float32" or encoded.shape != [expected_size]:
        raise ValueError(f"network parameters must be float32 of shape [{expected_size}], "
                         f"got {encoded.dtype} of shape {encoded.shape}")
    if len(encoded.data) != 4 * ((4 * expected_size + 2) // 3):
        raise ValueError(f"network parameters must be exactly {4 * expected_size} bytes, base64-encoded")
    try:
        array = encoded.decode()
    except ValueError as exc:  # binascii.Error included
        raise ValueError(f"network parameters could not be decoded: {exc}") from exc
    return validate_parameters(array, expected_size, bound)
