"""Facts a strategy promises about a written weight, and the tolerances that decide them.

A fact is ``(name, ok, detail, checked)``: ``checked`` is how many things it checked (gate
blocks, say), so that a report can say "orthogonal blocks 16/16". Tolerances allow a few ulps
of the weight's own dtype, since a value drawn in float32 and stored as float16 or bfloat16
has been rounded once more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilstm_cli import dtypes
from bilstm_cli.results import Fact as Fact  # its home; named here too, as before


def fmt(x: float) -> str:
    """A number as descriptions and fact details show it: four significant digits."""
    return f"{x:.4g}"


def _eps(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype, bfloat16 included (float32 arrays tagged as
    holding bfloat16 values, see :mod:`bilstm_cli.dtypes`)."""
    if dtype.kind in "iub":
        return 0.0
    name = dtypes.storage(dtype)
    if name in dtypes.FLOAT_NAMES:
        return dtypes.eps(name)
    # bfloat16 keeps 8 significant bits; anything else unknown is treated as float32.
    return 2.0**-7 if "bfloat16" in dtype.name else float(np.finfo(np.float32).eps)


def _tolerance(dtype: np.dtype, magnitude: float) -> float:
    eps = _eps(dtype)
    return 4.0 * eps * max(abs(magnitude), 1e-30)


def bounds_fact(values: np.ndarray, lo: Any, hi: Any, text: str) -> Fact:
    """Inclusive bounds check with a few ulps of slack for the rounding of scale * u + shift."""
    if values.size == 0:
        return Fact("within bounds", True, text)
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    tol = _tolerance(values.dtype, float(np.max(np.abs([lo_a, hi_a]))))
    # The extremes decide it (per column when the bounds are), taken in the array's own
    # dtype, which float64 holds exactly; a NaN makes them NaN, and NaN fails both tests.
    if lo_a.ndim == 0 and hi_a.ndim == 0:
        low, high = values.min(), values.max()
    else:
        columns = values.reshape(-1, values.shape[-1])
        low, high = columns.min(axis=0), columns.max(axis=0)
    low_a = np.asarray(low, dtype=np.float64)
    high_a = np.asarray(high, dtype=np.float64)
    ok = bool(np.all(low_a >= lo_a - tol) and np.all(high_a <= hi_a + tol))
    if not ok:
        v = values.astype(np.float64)
        text += f"; found values in [{fmt(float(np.nanmin(v)))}, {fmt(float(np.nanmax(v)))}]"
    return Fact("within bounds", ok, text)


def constant_fact(values: np.ndarray, value: float, label: str = "constant") -> Fact:
    """Every entry of ``values`` equals ``value`` as the array's dtype holds it."""
    expected = dtypes.cast(np.asarray(value, dtype=np.float64), dtypes.storage(values))
    ok = bool(np.all(values == expected))
    return Fact(label, ok, f"all {fmt(value)}" if ok else f"expected all {fmt(value)}")


def orth_tolerance(dtype: np.dtype, n: int) -> float:
    """Largest ‖QᵀQ−I‖ accepted of an orthogonal matrix of size ``n`` stored as ``dtype``."""
    eps = _eps(dtype) or 1e-7
    return max(1e-6, 10.0 * eps * n)


def range_problem(largest: float, dtype: str, what: str) -> str | None:
    """Why values up to ``largest`` in magnitude cannot be stored as ``dtype``, or None.
    ``what`` says where the number comes from, e.g. ``constant 70000``."""
    if dtypes.representable(largest, dtype):
        return None
    return (
        f"{what}: beyond the range of {dtype} weights (largest "
        f"{dtypes.largest(dtype):.6g}); use a smaller scale"
    )
