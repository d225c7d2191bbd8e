"""Summary statistics of weight arrays, safe to put in JSON.

All numbers are computed in float64 over the FINITE entries only, so a weight containing NaN or
Inf still gets meaningful numbers and the JSON output never holds NaN (which is not valid JSON).
``finite`` says whether every entry was finite; ``nonfinite`` counts the others.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bilstm_cli.cells.blocks import gate_blocks

STAT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max", "l2", "finite")


# Elements converted to float64 at a time: small enough that the 1 MiB float64 chunk stays
# in a core's cache through the passes over it (at twice this, it spilled and every pass
# took a fifth longer), so a weight is never copied whole and memory does not grow with it.
# The sums are taken per chunk and added in order, so this size is part of their last bits.
_CHUNK = 1 << 17


def _finite_values(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat values of ``a`` that are finite (in their own dtype), and how many were not."""
    x = np.asarray(a).ravel()
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)
    ok = np.isfinite(x)
    if ok.all():
        return x, 0
    return x[ok], int(x.size - np.count_nonzero(ok))


def _moments(x: np.ndarray, peak: float) -> tuple[float, float, float]:
    """(mean, population std, L2 norm) of a flat array of finite values, accumulated in
    float64 chunk by chunk. ``peak`` is the largest magnitude: values so large that their
    squares would overflow are scaled by a power of two first, which is exact."""
    n = x.size
    # 2**(e-2) with peak < 2**e: scaled values stay below 4 and the scale itself stays
    # representable even for weights at the float64 maximum (where 2**e would overflow).
    scale = math.ldexp(1.0, math.frexp(peak)[1] - 2) if peak > 1e150 else 1.0
    if scale == 1.0:
        total = float(np.add.reduce(x, dtype=np.float64))
    else:
        total = sum(
            float(np.add.reduce(x[i : i + _CHUNK].astype(np.float64) / scale))
            for i in range(0, n, _CHUNK)
        )
    mean = total / n  # in units of ``scale``
    squares, deviations, _, _ = _sums(x, mean, scale, extremes=False)
    return mean * scale, math.sqrt(deviations / n) * scale, math.sqrt(squares) * scale


def _sums(
    x: np.ndarray, mean: float, scale: float = 1.0, extremes: bool = True
) -> tuple[float, float, float, float]:
    """(sum of squares, sum of squared deviations from ``mean``, min, max) of a flat array of
    finite values, the sums in units of ``scale``: one pass, chunk by chunk through one
    float64 buffer, every number taken while the chunk is in cache. The extremes are only
    taken when asked (otherwise infinite)."""
    lo, hi = math.inf, -math.inf
    squares = deviations = 0.0
    buffer = np.empty(min(x.size, _CHUNK))
    for start in range(0, x.size, _CHUNK):
        part = x[start : start + _CHUNK]
        chunk = buffer[: part.size]
        np.copyto(chunk, part, casting="unsafe")
        if extremes:
            lo = min(lo, float(part.min()))
            hi = max(hi, float(part.max()))
        if scale != 1.0:
            chunk /= scale
        squares += float(np.dot(chunk, chunk))
        chunk -= mean
        deviations += float(np.dot(chunk, chunk))
    return squares, deviations, lo, hi


def _json_number(x: float) -> float | None:
    """A statistic of finite values can still exceed float64 (the L2 norm of many values near
    1e308); JSON has no infinity, so such a number is reported as unknown."""
    return x if math.isfinite(x) else None


def _narrow_float_stats(x: np.ndarray, total: float) -> dict[str, Any]:
    """Statistics of a flat float16/float32 array known finite (its float64 ``total`` is):
    one more pass. Squares of such values cannot overflow float64: no scaling."""
    n = x.size
    mean = total / n
    squares, deviations, lo, hi = _sums(x, mean)
    return {
        "mean": mean,
        "std": math.sqrt(deviations / n),
        "min": lo,
        "max": hi,
        "l2": math.sqrt(squares),
        "finite": True,
        "count": n,
        "nonfinite": 0,
    }


def weight_stats(a: np.ndarray) -> dict[str, Any]:
    """Statistics of one array: mean, std (population), min, max, l2, finite, count, nonfinite.

    The numbers are None when the array has no finite value at all.
    """
    flat = np.asarray(a).ravel()
    if flat.dtype.kind == "f" and flat.dtype.itemsize <= 4 and flat.size:
        # The common case, weights in float32: a finite float64 sum proves every value
        # finite (a sum of float32 values cannot overflow float64), and the rest is one pass.
        with np.errstate(invalid="ignore", over="ignore"):
            total = float(np.add.reduce(flat, dtype=np.float64))
        if math.isfinite(total):
            return _narrow_float_stats(flat, total)
    x, nonfinite = _finite_values(a)
    out: dict[str, Any]
    if x.size == 0:
        out = dict.fromkeys(("mean", "std", "min", "max", "l2"))
    else:
        lo, hi = float(np.min(x)), float(np.max(x))
        mean, std, l2 = _moments(x, max(abs(lo), abs(hi)))
        out = {
            "mean": _json_number(mean),
            "std": _json_number(std),
            "min": lo,
            "max": hi,
            "l2": _json_number(l2),
        }
    out["finite"] = nonfinite == 0
    out["count"] = int(np.asarray(a).size)
    out["nonfinite"] = nonfinite
    return out


def orthogonality_error(q: np.ndarray) -> float:
    """‖QᵀQ − I‖_F for a tall or square matrix, ‖QQᵀ − I‖_F for a wide one.

    The smaller Gram matrix is used so that a matrix with orthonormal rows (what Keras'
    orthogonal initializer gives for a wide shape) also scores near zero.
    """
    # Contiguous, so that the product of the matrix with its own transpose is BLAS' symmetric
    # rank-k update (half the work of a general product); a gate block of a wider matrix is a
    # strided view, for which NumPy would take the general product.
    m = np.ascontiguousarray(q, dtype=np.float64)
    if m.ndim != 2:
        m = m.reshape(-1, m.shape[-1]) if m.ndim > 2 else m.reshape(1, -1)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    gram[np.diag_indices_from(gram)] -= 1.0
    return float(np.linalg.norm(gram))


def max_singular_value(q: np.ndarray) -> float:
    """Largest singular value (spectral norm) of a 2-D array."""
    m = np.ascontiguousarray(q, dtype=np.float64)  # see orthogonality_error
    # The largest eigenvalue of the smaller Gram matrix is σ_max²; eigvalsh on it is several
    # times faster than a full SVD for the (u, u) blocks of large layers.
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    top = float(np.linalg.eigvalsh(gram)[-1]) if gram.size else 0.0
    return float(np.sqrt(max(top, 0.0)))


def gate_stats(a: np.ndarray, cell: str, role: str, units: int) -> list[dict[str, Any]]:
    """Statistics per gate block (one entry for SimpleRNN, whose ``gate`` is None).

    Each entry is ``{"gate": name, **weight_stats(block)}``. Recurrent-kernel blocks also carry
    ``orth_error`` (‖QᵀQ − I‖_F of the (u, u) block; a ConvLSTM block flattened to
    (receptive field × f, f)) and ``max_singular``; both are None when
    the block holds a non-finite value, since neither is meaningful then.
    """
    arr = np.asarray(a)
    out: list[dict[str, Any]] = []
    for gate, sl in gate_blocks(cell, units):
        block = arr[..., sl]
        entry: dict[str, Any] = {"gate": gate, **weight_stats(block)}
        if role == "recurrent_kernel" and block.ndim >= 2:
            # A convolution block (kernel_size + (f, f)) is judged flattened to
            # (receptive field × f, f), as the orthogonal initializer treats it.
            flat = block.reshape(-1, block.shape[-1])
            if entry["finite"] and block.size:
                entry["orth_error"] = orthogonality_error(flat)
                entry["max_singular"] = max_singular_value(flat)
            else:
                entry["orth_error"] = None
                entry["max_singular"] = None
        out.append(entry)
    return out


__all__ = [
    "STAT_KEYS",
    "gate_stats",
    "max_singular_value",
    "orthogonality_error",
    "weight_stats",
]
