"""CuDNNLSTM / CuDNNGRU (Keras 2.0-2.3 files): stored variants of LSTM and GRU.

The CuDNN layers stored each gate block of the input kernel in cuDNN's own (Fortran-order)
arrangement and each recurrent block transposed; the LSTM bias holds the input and recurrent
biases one after the other (8u) and the GRU bias likewise (6u). Keras' legacy loader converted
them the same way on load: a CuDNNLSTM becomes an ``LSTM`` (the two biases summed) and a
CuDNNGRU a ``GRU(reset_after=True)`` (the two biases as its two bias rows). Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.cells import gru, lstm
from bilstm_cli.cells.base import StoredVariant, variant
from bilstm_cli.errors import InputError


def to_keras(cell: str, role: str, values: np.ndarray, units: int) -> np.ndarray:
    """One weight of the CuDNN layer class ``cell`` in the layout of the equivalent Keras cell."""
    stored = variant(cell)
    if stored is None:
        raise InputError(f"{cell} is not a CuDNN layer")
    blocks = stored.cell.blocks
    if role == "kernel":
        parts = np.split(values, blocks, axis=-1)
        return np.concatenate([p.T.reshape(p.shape, order="F") for p in parts], axis=-1)
    if role == "recurrent_kernel":
        parts = np.split(values, blocks, axis=-1)
        return np.concatenate([p.T for p in parts], axis=-1)
    if role == "bias":
        if values.shape != stored.shape("bias", units, 0):
            raise InputError(f"a {cell} bias of shape {values.shape} cannot be converted")
        halves = values.reshape(2, blocks * units)
        if stored.reset_after:
            return halves.copy()
        summed: np.ndarray = halves[0] + halves[1]
        return summed
    raise InputError(f"a {cell} has no weight called {role}")


# The CuDNN kernels had no activation settings: they always ran tanh / sigmoid with a bias.
CUDNN_LSTM = StoredVariant(
    name="CuDNNLSTM",
    cell=lstm.CELL,
    activation="tanh",
    recurrent_activation="sigmoid",
    use_bias=True,
    reset_after=None,
    convert=to_keras,
)
CUDNN_GRU = StoredVariant(
    name="CuDNNGRU",
    cell=gru.CELL,
    activation="tanh",
    recurrent_activation="sigmoid",
    use_bias=True,
    reset_after=True,
    convert=to_keras,
)

#: The Keras cell each CuDNN layer class is read as.
KERAS_CELL: dict[str, str] = {v.name: v.cell.name for v in (CUDNN_LSTM, CUDNN_GRU)}


def is_cudnn(cell: str) -> bool:
    """Whether ``cell`` is a CuDNN layer class."""
    return cell in KERAS_CELL
