"""SimpleRNN: no gates; every weight is one block.

Weights: kernel (input, u), recurrent_kernel (u, u), bias (u,). One step:
``h' = act(x·W + b + h·U)``.
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.cells.base import Cell, State, StepParams


def _step(p: np.ndarray, state: State, w: StepParams) -> State:
    (h,) = state
    return (w.activation(p + h @ w.recurrent_kernel),)


CELL = Cell(
    name="SimpleRNN",
    gates=(),
    gate_names=(),
    tracked_group="simple_rnn_cell",
    forget_gate=None,
    states=1,
    has_reset_after=False,
    step=_step,
)
