"""Cheap spectral estimates for recurrent blocks: a few Krylov steps instead of a full
eigendecomposition per block.

For a (u, u) block, ``top_singular`` runs Lanczos on the Gram matrix (the largest Ritz value
of a few dozen steps matches σ_max² to many digits, since extreme eigenvalues converge
first) and ``spectral_radius`` runs Arnoldi on the block itself (the largest Ritz value's
modulus: an estimate, exact once the subspace spans the block). Both start from a fixed
vector, so the same block always gives the same figure.
"""

from __future__ import annotations

import math

import numpy as np

STEPS = 32


def _start(n: int) -> np.ndarray:
    v = np.random.default_rng(0x5EED).standard_normal(n)
    out: np.ndarray = v / np.linalg.norm(v)
    return out


def top_singular(m: np.ndarray, steps: int = STEPS) -> float:
    """Largest singular value of a 2-D float64 array (Lanczos on its smaller Gram matrix)."""
    if m.size == 0:
        return 0.0
    tall = m.shape[0] >= m.shape[1]
    n = m.shape[1] if tall else m.shape[0]
    if n <= steps:
        gram = m.T @ m if tall else m @ m.T
        return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0))

    def apply(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = m.T @ (m @ v) if tall else m @ (m.T @ v)
        return out

    basis = np.zeros((steps + 1, n))
    basis[0] = _start(n)
    alpha, beta = np.zeros(steps), np.zeros(steps)
    k = steps
    for j in range(steps):
        w = apply(basis[j])
        alpha[j] = float(basis[j] @ w)
        # Full re-orthogonalization: cheap at this size and keeps the Ritz values honest.
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta[j] = float(np.linalg.norm(w))
        if beta[j] <= 1e-12 * max(1.0, abs(alpha[j])):
            k = j + 1
            break
        basis[j + 1] = w / beta[j]
    t = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
    return math.sqrt(max(float(np.linalg.eigvalsh(t)[-1]), 0.0))


def spectral_radius(m: np.ndarray, steps: int = STEPS) -> float:
    """Largest eigenvalue modulus of a square float64 array: exact for small blocks, an
    Arnoldi estimate (``steps`` steps) for larger ones."""
    n = m.shape[0]
    if n == 0:
        return 0.0
    if n <= steps:
        return float(np.max(np.abs(np.linalg.eigvals(m))))
    q = np.zeros((steps + 1, n))
    h = np.zeros((steps + 1, steps))
    q[0] = _start(n)
    k = steps
    for j in range(steps):
        w = m @ q[j]
        for _ in range(2):
            c = q[: j + 1] @ w
            h[: j + 1, j] += c
            w -= q[: j + 1].T @ c
        h[j + 1, j] = float(np.linalg.norm(w))
        if h[j + 1, j] <= 1e-12:
            k = j + 1
            break
        q[j + 1] = w / h[j + 1, j]
    return float(np.max(np.abs(np.linalg.eigvals(h[:k, :k]))))


def gram_error(m: np.ndarray) -> float:
    """Largest entry of |QᵀQ − I| for a tall or square matrix, |QQᵀ − I| for a wide one:
    zero for orthonormal columns (rows); the figure ``init.fresh`` compares with its
    tolerance, independent of the matrix size."""
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    gram[np.diag_indices_from(gram)] -= 1.0
    return float(np.max(np.abs(gram))) if gram.size else 0.0


def orth_error(m: np.ndarray) -> float:
    """‖QᵀQ − I‖_F (‖QQᵀ − I‖_F for a wide matrix), as ``inspect --gates`` reports it."""
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    gram[np.diag_indices_from(gram)] -= 1.0
    return float(np.linalg.norm(gram))


__all__ = ["gram_error", "orth_error", "spectral_radius", "top_singular"]
