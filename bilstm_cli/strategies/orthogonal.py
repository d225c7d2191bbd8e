"""Strategies for square-ish matrices: ``orthogonal`` and ``identity``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from bilstm_cli.cells.blocks import CELL_GATES, gate_blocks, selected_blocks
from bilstm_cli.concurrency import each
from bilstm_cli.errors import UsageError
from bilstm_cli.stats import orthogonality_error
from bilstm_cli.strategies.checks import Fact, fmt, orth_tolerance
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.sampling import WORKERS, draw, stream
from bilstm_cli.strategies.spec import ArgValue, Param, Spec, WeightInfo

T = TypeVar("T")


def _each_block(work: Callable[[int], T], count: int) -> list[T]:
    """``work(b)`` for every block ``b``, spread over :data:`WORKERS` threads: LAPACK's QR and
    BLAS' products let go of the interpreter, so blocks run side by side on the cores. Each
    block's numbers come from its own stream and its own factorization, so the results are
    the same bits whatever the number of threads. Each runs in a copy of the caller's
    context, so NumPy's error state (``np.errstate``) holds in the threads as well."""
    return each(work, count, WORKERS)


def _tall_shape(rows: int, cols: int) -> tuple[int, int]:
    return max(rows, cols), min(rows, cols)


def _orthogonal_matrix(rows: int, cols: int, normal: np.ndarray) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal columns (tall) or rows (wide), Keras' recipe.

    ``normal`` holds standard normal draws of shape :func:`_tall_shape` ``(rows, cols)``, in
    float64; it is overwritten.
    """
    q, r_diagonal = _qr(normal)
    # Multiplying by the signs of R's diagonal makes the factorization unique, so Q is
    # distributed uniformly (Haar) rather than biased by the QR algorithm's sign convention.
    d = np.sign(r_diagonal)
    d[d == 0] = 1.0
    q *= d
    return q if rows >= cols else q.T


def _qr(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q of the reduced QR factorization of the tall float64 matrix ``a``, and R's diagonal;
    ``a`` is overwritten.

    The same LAPACK calls as ``np.linalg.qr`` and so the same bits, without its defensive
    copy of ``a`` and its full upper-triangular R, of which only the diagonal is used: two
    matrices fewer per gate block, on each thread. Where NumPy's LAPACK functions are not
    found under that name, ``np.linalg.qr`` is called as it is.
    """
    try:
        from numpy.linalg import _umath_linalg as lapack

        factor, expand = lapack.qr_r_raw, lapack.qr_reduced
    except (ImportError, AttributeError):
        q, r = np.linalg.qr(a)
        return q, np.diagonal(r).copy()
    # The factorization is written into its input: it must be this very float64 array, not
    # a converted copy of it.
    a = np.require(a, np.float64, ["C", "W"])
    tau = factor(a, signature="d->d")  # a now holds R in its upper triangle
    q = expand(a, tau, signature="dd->d")
    return q, np.diagonal(a).copy()


def _whole_matrix(spec: Spec, info: WeightInfo) -> bool:
    """Whether the matrix as a whole is orthogonal rather than each gate block."""
    return not bool(spec.args["per_gate"]) and bool(CELL_GATES.get(info.cell))


@register
class Orthogonal(Strategy):
    """``orthogonal:gain=G``: each gate block G times its own orthogonal matrix;
    ``per_gate=false`` is Keras' whole-matrix behaviour."""

    name = "orthogonal"
    usage = "orthogonal:gain=1.0[,per_gate=false]"
    params = (Param("gain", "float", 1.0), Param("per_gate", "bool", True))

    def validate(self, args: Mapping[str, ArgValue]) -> None:
        if float(args["gain"]) == 0:
            raise UsageError("orthogonal: gain must be non-zero; use zeros for an all-zero weight")

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        if info.role == "bias" or len(info.shape) < 2:
            raise UsageError(
                f"orthogonal fits kernels and recurrent kernels, not the {info.where()}"
            )

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        gain = float(spec.args["gain"])
        shape = tuple(info.shape)
        rows = int(np.prod(shape[:-1]))
        if not bool(spec.args["per_gate"]):
            normal = draw("normal", _tall_shape(rows, shape[-1]), seed, np.dtype(np.float64))
            q = _orthogonal_matrix(rows, shape[-1], normal)
            return (gain * q).reshape(shape).astype(work)
        out = np.empty((rows, shape[-1]), dtype=work)
        blocks = gate_blocks(info.cell, info.units)

        def one_block(b: int) -> None:
            # Each block draws from its own child stream, so blocks do not depend on each
            # other, and each thread writes its own columns.
            sl = blocks[b][1]
            cols = sl.stop - sl.start
            normal = stream(seed, b).standard_normal(_tall_shape(rows, cols))
            q = _orthogonal_matrix(rows, cols, normal)
            out[:, sl] = q if gain == 1.0 else gain * q  # 1·q is q, bit for bit

        _each_block(one_block, len(blocks))
        return out.reshape(shape)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        gain = fmt(float(spec.args["gain"]))
        if not _whole_matrix(spec, info):
            return f"orthogonal per gate block (gain {gain})"
        return (
            f"orthogonal over the whole matrix as Keras does (gain {gain}); "
            "gate blocks are not orthogonal"
        )

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        rows = int(np.prod(arr.shape[:-1]))
        mat = arr.reshape(rows, arr.shape[-1]).astype(np.float64)
        gain = float(spec.args["gain"])
        if gain != 1.0:
            mat /= gain  # in place: the same quotients as a new array
        if not _whole_matrix(spec, info):
            blocks = selected_blocks(info.cell, info.units, mask)
            errors = _each_block(lambda b: orthogonality_error(mat[:, blocks[b][1]]), len(blocks))
            worst = max(errors, default=0.0)
            tol = orth_tolerance(arr.dtype, max(rows, 1))
            ok = bool(np.isfinite(worst) and worst <= tol)
            detail = f"max ‖QᵀQ−I‖ {worst:.1e} over {len(errors)} block(s)"
            return [Fact("orthogonal blocks", ok, detail, len(errors))]
        if mask is not None and not mask.all():
            # Part of a Keras-style orthogonal matrix is not orthogonal by itself: nothing to check.
            return []
        err = orthogonality_error(mat)
        ok = bool(np.isfinite(err) and err <= orth_tolerance(arr.dtype, min(mat.shape)))
        return [Fact("orthogonal matrix", ok, f"‖QᵀQ−I‖ {err:.1e} over the whole matrix")]


@register
class Identity(Strategy):
    """``identity:gain=G``: each gate block of a recurrent kernel G times the identity."""

    name = "identity"
    usage = "identity:gain=1.0 (recurrent kernels)"
    params = (Param("gain", "float", 1.0),)

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        if info.role != "recurrent_kernel":
            raise UsageError(f"identity fits recurrent kernels only, not the {info.where()}")
        rows = int(np.prod(info.shape[:-1]))
        if len(info.shape) != 2 or rows != info.units:
            raise UsageError(
                f"identity needs square ({info.units}, {info.units}) gate blocks; "
                f"the {info.where()} has ({rows}, {info.units}) blocks"
            )

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        out = np.zeros(tuple(info.shape), dtype=work)
        eye = float(spec.args["gain"]) * np.eye(info.units, dtype=work)
        for _, sl in gate_blocks(info.cell, info.units):
            out[:, sl] = eye
        return out

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        return f"identity per gate block (gain {fmt(float(spec.args['gain']))})"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        gain = float(spec.args["gain"])
        eye = np.asarray(gain * np.eye(info.units), dtype=arr.dtype)
        blocks = selected_blocks(info.cell, info.units, mask)
        ok = all(bool(np.array_equal(arr[:, sl], eye)) for _, sl in blocks)
        detail = f"{len(blocks)} block(s) equal {fmt(gain)}·I"
        return [Fact("identity blocks", ok, detail, len(blocks))]
