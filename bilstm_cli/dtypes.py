"""The float dtypes Keras stores weights in, and exact conversions between them.

float16, float32 and float64 weights are NumPy arrays of their own dtype. NumPy has no
bfloat16 (ml_dtypes adds one, but the tool does not depend on it), so a bfloat16 weight is
held as a float32 array whose dtype carries ``metadata={"storage": "bfloat16"}``
(:data:`BF16`): every bfloat16 value widens to float32 exactly, slices and copies keep the
tag, and :func:`storage` tells any array's stored dtype. On disk Keras keeps bfloat16 as
2-byte opaque HDF5 data (``|V2``) with a ``dtype="bfloat16"`` attribute; :func:`decode_bf16`
and :func:`encode_bf16` convert with bit operations.

Casting to a narrower dtype rounds once, to nearest with ties to even (float64 to bfloat16
included: it goes through float32 rounded to odd, which makes the second rounding exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BFLOAT16 = "bfloat16"
#: Float32 arrays holding bfloat16 values.
BF16 = np.dtype(np.float32, metadata={"storage": BFLOAT16})
#: The float dtypes a Keras weight can have, narrowest range first.
FLOAT_NAMES = ("float16", BFLOAT16, "float32", "float64")
# The largest finite bfloat16: 0x7F7F, (2 - 2**-7) * 2**127.
_BF16_MAX = float.fromhex("0x1.fep127")


def storage(dtype: Any) -> str:
    """The stored dtype's name (``float16``, ``bfloat16``, ``float32``, ``float64``, or
    NumPy's name for anything else) of an array, a dtype or a dtype name."""
    if isinstance(dtype, np.ndarray):
        dtype = dtype.dtype
    if isinstance(dtype, str) and dtype == BFLOAT16:
        return BFLOAT16
    dt = np.dtype(dtype)
    if dt.metadata and dt.metadata.get("storage") == BFLOAT16:
        return BFLOAT16
    return str(dt.name)


def memory_dtype(name: str) -> np.dtype[Any]:
    """The NumPy dtype that holds values stored as ``name`` (native byte order)."""
    if name == BFLOAT16:
        return BF16
    return np.dtype(name).newbyteorder("=")


def largest(name: str) -> float:
    """The largest finite value of the float dtype ``name``."""
    if name == BFLOAT16:
        return _BF16_MAX
    return float(np.finfo(np.dtype(name)).max)


def eps(name: str) -> float:
    """Machine epsilon of the float dtype ``name``."""
    if name == BFLOAT16:
        return 2.0**-7
    return float(np.finfo(np.dtype(name)).eps)


def representable(value: float, name: str) -> bool:
    """Whether the finite ``value`` stays finite once rounded to ``name``."""
    if not np.isfinite(value):
        return False
    # Beyond the largest finite value by less than half an ulp still rounds down to it.
    top = largest(name)
    if name == "float64":
        return True
    if name == BFLOAT16:
        half_ulp = 2.0**119
    else:  # the spacing just below the top: at the top itself it would overflow
        below = np.nextafter(memory_dtype(name).type(top), memory_dtype(name).type(0))
        half_ulp = float(np.spacing(below)) / 2
    return abs(value) < top + half_ulp


def decode_bf16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 values from their 16-bit patterns (any 2-byte dtype, little-endian), widened
    exactly to a :data:`BF16` array."""
    bits = np.ascontiguousarray(raw).view("<u2").astype(np.uint32)
    bits <<= 16
    return bits.view(np.float32).view(BF16)


def _round_to_odd_f32(x: np.ndarray) -> np.ndarray:
    """float64 to float32 rounding to odd: inexact results get their last bit set, so a
    later rounding to fewer bits is correctly rounded (no double-rounding error)."""
    with np.errstate(over="ignore", invalid="ignore"):
        near = x.astype(np.float32)
    inexact = np.isfinite(near) & (near.astype(np.float64) != x)
    if not inexact.any():
        return near
    away = np.abs(near.astype(np.float64)) > np.abs(x)
    toward_zero = np.where(away, np.nextafter(near, np.float32(0)), near)
    bits = toward_zero.view(np.uint32).copy()
    bits[inexact] |= np.uint32(1)
    return np.where(inexact, bits.view(np.float32), near)


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32/float64 values to bfloat16 (nearest, ties to even); their bit patterns."""
    x = np.asarray(values)
    f32 = _round_to_odd_f32(x.astype(np.float64, copy=False)) if x.dtype == np.float64 else x
    bits = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)
    nan = np.isnan(f32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    with np.errstate(over="ignore"):
        rounded = ((bits + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype(np.uint16)
    if nan.any():  # keep NaN a (quiet) NaN: rounding could carry it into infinity
        rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def round_bf16(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16, as a :data:`BF16` array of the same shape."""
    return decode_bf16(_bf16_bits(values))


def encode_bf16(values: np.ndarray) -> np.ndarray:
    """The 16-bit patterns (native uint16) of ``values`` rounded to bfloat16."""
    return _bf16_bits(values)


def cast(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as the stored dtype ``name`` holds them: rounded once, to nearest even.
    Values beyond the dtype's range become infinite (callers check with :func:`overflowed`);
    no floating-point warning is raised."""
    arr = np.asarray(values)
    if storage(arr) == name:
        return arr
    if name == BFLOAT16:
        source = arr if arr.dtype.kind == "f" else arr.astype(np.float64)
        return round_bf16(source)
    target = memory_dtype(name)
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(target).view(target)  # the view drops a bfloat16 tag


def overflowed(before: np.ndarray, after: np.ndarray) -> int:
    """How many finite values of ``before`` are not finite in ``after`` (the same shape)."""
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero(np.isfinite(before) & ~np.isfinite(after)))


def check_range(
    cast_values: np.ndarray, drawn: np.ndarray, spec: str, name: str, from_file: bool = False
) -> np.ndarray:
    """``cast_values`` when every value is finite; otherwise (a strategy drew values its
    dtype cannot hold) a :class:`~bilstm_cli.errors.UsageError` naming ``spec`` and the dtype.
    With ``from_file``, values already non-finite in ``drawn`` are the file's own and are
    left for the verification to report."""
    with np.errstate(invalid="ignore"):
        lost = int(np.count_nonzero(~np.isfinite(cast_values)))
        given = int(np.count_nonzero(~np.isfinite(drawn))) if from_file else 0
    if lost > given:
        from bilstm_cli.errors import UsageError

        raise UsageError(
            f"--init '{spec}' gives values beyond the range of {name} weights "
            f"(largest {largest(name):.6g}); use a smaller scale"
        )
    return cast_values
