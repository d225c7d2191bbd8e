"""Converting CuDNNLSTM / CuDNNGRU weights (Keras 2.0-2.3 files) to the LSTM / GRU layout.

The CuDNN layers stored each gate block of the input kernel in cuDNN's own (Fortran-order)
arrangement and each recurrent block transposed; the LSTM bias holds the input and recurrent
biases one after the other (8u) and the GRU bias likewise (6u). Keras' legacy loader converted
them the same way on load: a CuDNNLSTM becomes an ``LSTM`` (the two biases summed) and a
CuDNNGRU a ``GRU(reset_after=True)`` (the two biases as its two bias rows). Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.errors import InputError

KERAS_CELL = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
_BLOCKS = {"CuDNNLSTM": 4, "CuDNNGRU": 3}


def is_cudnn(cell: str) -> bool:
    return cell in KERAS_CELL


def to_keras(cell: str, role: str, values: np.ndarray, units: int) -> np.ndarray:
    """One CuDNN weight in the layout of the equivalent Keras cell."""
    blocks = _BLOCKS[cell]
    if role == "kernel":
        parts = np.split(values, blocks, axis=-1)
        return np.concatenate([p.T.reshape(p.shape, order="F") for p in parts], axis=-1)
    if role == "recurrent_kernel":
        parts = np.split(values, blocks, axis=-1)
        return np.concatenate([p.T for p in parts], axis=-1)
    if role == "bias":
        if values.shape != (2 * blocks * units,):
            raise InputError(f"a {cell} bias of shape {values.shape} cannot be converted")
        halves = values.reshape(2, blocks * units)
        if cell == "CuDNNLSTM":
            return halves[0] + halves[1]
        return halves.copy()
    raise InputError(f"a {cell} has no weight called {role}")
