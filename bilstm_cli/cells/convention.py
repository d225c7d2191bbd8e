"""Other frameworks' conventions for the same recurrent cells, and conversion to and from Keras'.

Keras keeps each weight as ``(inputs, blocks * units)`` with the gate blocks along the last
axis (LSTM i,f,c,o; GRU z,r,h). PyTorch and ONNX keep ``(blocks * units, inputs)`` with the
blocks along the first axis, in their own orders, and two biases (input and recurrent):

============  =================  ==============  ===========================================
framework     LSTM               GRU             biases
============  =================  ==============  ===========================================
Keras         i, f, c, o         z, r, h         one (GRU reset_after=True: two rows)
PyTorch       i, f, g(=c), o     r, z, n(=h)     ``bias_ih`` and ``bias_hh``
ONNX          i, o, f, c         z, r, h         ``B`` = input biases then recurrent biases
============  =================  ==============  ===========================================

Keras ← other: transpose, reorder, LSTM/SimpleRNN bias = input + recurrent bias; GRU with a
reset gate applied after the recurrent projection (PyTorch always, ONNX
``linear_before_reset=1``) is Keras ``reset_after=True`` with the two biases as its two rows;
ONNX ``linear_before_reset=0`` is ``reset_after=False`` with the biases summed. Keras → other:
the same backwards, a single Keras bias going to the input bias (the recurrent one zero).
``reset_after=False`` has no PyTorch equivalent and is refused by name. Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.cells.base import get
from bilstm_cli.errors import InputError

FRAMEWORKS = ("pytorch", "onnx")

#: Each framework's gate blocks, named by the Keras gate each one is.
ORDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "pytorch": {"LSTM": ("i", "f", "c", "o"), "GRU": ("r", "z", "h"), "SimpleRNN": ()},
    "onnx": {"LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h"), "SimpleRNN": ()},
}

#: Each framework's own name of a cell family.
CELL_NAMES: dict[str, dict[str, str]] = {
    "pytorch": {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"},
    "onnx": {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"},
}


def cell_for(framework: str, name: str) -> str:
    """The Keras family of a framework's cell name (``RNN`` → ``SimpleRNN``)."""
    for keras, own in CELL_NAMES[framework].items():
        if own == name:
            return keras
    raise InputError(f"{framework} has no recurrent cell {name!r}")


def _order(framework: str, cell: str) -> tuple[str, ...]:
    if framework not in ORDERS:
        raise InputError(f"unknown framework {framework!r}; expected {', '.join(FRAMEWORKS)}")
    get(cell)
    return ORDERS[framework][cell]


def reorder(values: np.ndarray, cell: str, units: int, src: str, dst: str, axis: int) -> np.ndarray:
    """``values`` with its gate blocks along ``axis`` moved from convention ``src`` to ``dst``
    (``keras``, ``pytorch`` or ``onnx``); a gateless cell is returned as it is."""
    keras = get(cell).gates
    have = keras if src == "keras" else _order(src, cell)
    want = keras if dst == "keras" else _order(dst, cell)
    if not have or have == want:
        return values
    u = int(units)
    if values.shape[axis] != len(have) * u:
        raise InputError(
            f"a {cell} weight of shape {values.shape} does not hold {len(have)} blocks of {u}"
        )
    parts = np.split(values, len(have), axis=axis)
    by_gate = dict(zip(have, parts))
    return np.concatenate([by_gate[g] for g in want], axis=axis)


def _width(cell: str, units: int) -> int:
    return get(cell).blocks * int(units)


# Rows of a matrix transposed at a time: their columns then land in the cache together.
_BAND = 128


def _transposed(matrix: np.ndarray) -> np.ndarray:
    """``matrix.T`` as a new C-ordered array, copied a band of rows at a time. NumPy's one
    pass over a large transpose strides through memory: five times slower for a 4 MiB
    kernel."""
    rows, cols = matrix.shape
    out = np.empty((cols, rows), dtype=matrix.dtype)
    for start in range(0, rows, _BAND):
        out[:, start : start + _BAND] = matrix[start : start + _BAND].T
    return out


def kernel_to_keras(framework: str, cell: str, matrix: np.ndarray, units: int) -> np.ndarray:
    """A framework's input or recurrent matrix ``(blocks * units, n)`` as a Keras kernel
    ``(n, blocks * units)``."""
    if matrix.ndim != 2 or matrix.shape[0] != _width(cell, units):
        raise InputError(
            f"a {framework} {cell} matrix of shape {matrix.shape} does not fit {units} units"
        )
    return _transposed(reorder(matrix, cell, units, framework, "keras", 0))


def kernel_from_keras(framework: str, cell: str, kernel: np.ndarray, units: int) -> np.ndarray:
    """A Keras kernel ``(n, blocks * units)`` as the framework's ``(blocks * units, n)``."""
    return _transposed(reorder(kernel, cell, units, "keras", framework, 1))


def bias_to_keras(
    framework: str,
    cell: str,
    input_bias: np.ndarray,
    recurrent_bias: np.ndarray,
    units: int,
    reset_after: bool = True,
) -> np.ndarray:
    """The Keras bias of a framework's two biases: a GRU with ``reset_after`` keeps both as
    its two rows; everything else sums them (in their own dtype, as the framework adds them)."""
    width = _width(cell, units)
    for b in (input_bias, recurrent_bias):
        if b.shape != (width,):
            raise InputError(f"a {framework} {cell} bias of shape {b.shape} does not fit {units}")
    a = reorder(input_bias, cell, units, framework, "keras", 0)
    b = reorder(recurrent_bias, cell, units, framework, "keras", 0)
    if get(cell).has_reset_after and reset_after:
        return np.stack([a, b])
    summed: np.ndarray = a + b
    return summed


def bias_from_keras(
    framework: str, cell: str, bias: np.ndarray, units: int
) -> tuple[np.ndarray, np.ndarray]:
    """The framework's (input bias, recurrent bias) of a Keras bias: a two-row GRU bias gives
    both; a one-row bias goes to the input bias and the recurrent one is zero. The caller
    refuses a one-row GRU bias for PyTorch (``reset_after=False`` has no equivalent there)."""
    if bias.ndim == 2:
        first, second = bias[0], bias[1]
    else:
        first, second = bias, np.zeros_like(bias)
    return (
        np.ascontiguousarray(reorder(first, cell, units, "keras", framework, 0)),
        np.ascontiguousarray(reorder(second, cell, units, "keras", framework, 0)),
    )


#: Relative tolerance of a forward pass across frameworks, by the coarsest dtype involved:
#: the same cell computed in another order (summed biases, reordered blocks) agrees to about
#: a hundred units in the last place of the stored values, relative to the output scale.
CROSS_TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}


def cross_tolerance(dtypes: list[str]) -> float:
    """The relative tolerance for a comparison across frameworks of weights in ``dtypes``."""
    return max((CROSS_TOLERANCE.get(d, 1e-5) for d in dtypes), default=1e-5)


def pytorch_refusal(cell: str, reset_after: bool | None) -> str | None:
    """Why a Keras cell has no PyTorch equivalent, naming the setting; None when it has one."""
    if cell == "GRU" and reset_after is False:
        return (
            "reset_after=False: PyTorch's GRU applies the reset gate after the recurrent "
            "projection (Keras reset_after=True) and has no equivalent"
        )
    return None


__all__ = [
    "CELL_NAMES",
    "CROSS_TOLERANCE",
    "FRAMEWORKS",
    "ORDERS",
    "bias_from_keras",
    "bias_to_keras",
    "cell_for",
    "cross_tolerance",
    "kernel_from_keras",
    "kernel_to_keras",
    "pytorch_refusal",
    "reorder",
]
