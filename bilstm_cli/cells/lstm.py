"""LSTM: gates i, f, c, o (input, forget, cell, output).

Weights: kernel (input, 4u), recurrent_kernel (u, 4u), bias (4u,), the four gate blocks side by
side along the last axis in that order. One step, with ``z = x·W + h·U + b``:
``c' = σ(f)·c + σ(i)·act(c̃)`` and ``h' = σ(o)·act(c')`` (σ the recurrent activation).
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.cells.base import Cell, State, StepParams


def _step(p: np.ndarray, state: State, w: StepParams) -> State:
    h, c = state
    u = w.units
    ract = w.recurrent_activation
    z = p + h @ w.recurrent_kernel
    i = ract(z[:, :u])
    f = ract(z[:, u : 2 * u])
    c = f * c + i * w.activation(z[:, 2 * u : 3 * u])
    h = ract(z[:, 3 * u :]) * w.activation(c)
    return h, c


CELL = Cell(
    name="LSTM",
    gates=("i", "f", "c", "o"),
    gate_names=("input", "forget", "cell", "output"),
    tracked_group="lstm_cell",
    forget_gate="f",
    states=2,
    has_reset_after=False,
    step=_step,
)
