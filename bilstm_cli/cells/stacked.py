"""A NumPy forward pass of ``RNN(StackedRNNCells([...]))`` and of a Bidirectional around it.

Keras runs a stack's cells in order within each time step: cell 0 reads the step's input,
every later cell reads the output the cell before it just produced, each keeps its own state,
and the layer outputs the last cell's output. Cell ``k`` at step ``t`` thus depends only on
cell ``k - 1``'s output at step ``t`` and on its own state from step ``t - 1``, so the stack
computes exactly what the cells compute when each runs over the whole sequence in turn: that is
how it is run here, each cell with :func:`bilstm_cli.cells.forward.rnn_forward`.

``go_backwards`` belongs to the ``RNN`` layer around the stack: the sequence is read reversed
once, before cell 0, and the outputs are returned in processing order, as Keras does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from bilstm_cli.cells.forward import CellConfig, check_directions, merge_directions, rnn_forward
from bilstm_cli.errors import InputError

#: One cell of a stack: its (kernel, recurrent kernel, bias or None) and its settings.
StackCell = tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], CellConfig]


def stacked_forward(
    x: np.ndarray, cells: Sequence[StackCell], return_sequences: bool = True
) -> np.ndarray:
    """Run ``RNN(StackedRNNCells(cells))`` on ``x`` (batch, time, features) from zero states.

    Every cell's config must carry the ``RNN`` layer's ``go_backwards``. Returns (batch, time,
    units of the last cell) with ``return_sequences``, else the last step's output.
    """
    if not cells:
        raise InputError("a StackedRNNCells needs at least one cell")
    go_backwards = cells[0][1].go_backwards
    if any(cfg.go_backwards != go_backwards for _, cfg in cells):
        raise InputError("the cells of one stack must share the RNN layer's go_backwards")
    h = np.asarray(x)
    for k, (weights, cfg) in enumerate(cells):
        # The sequence is reversed once, on the way into the first cell.
        h = rnn_forward(h, *weights, replace(cfg, go_backwards=go_backwards and k == 0))
    return h if return_sequences else h[:, -1]


def bidirectional_stacked_forward(
    x: np.ndarray,
    forward: Sequence[StackCell],
    backward: Sequence[StackCell],
    merge_mode: str | None,
    return_sequences: bool = True,
) -> np.ndarray | list[np.ndarray]:
    """Run a ``Bidirectional`` around ``RNN(StackedRNNCells(...))``: each direction's stack,
    then the merge (the backward sequence flipped back into time order first)."""
    if not forward or not backward:
        raise InputError("a StackedRNNCells needs at least one cell in each direction")
    check_directions(forward[0][1], backward[0][1])
    y = stacked_forward(x, forward, return_sequences)
    y_rev = stacked_forward(x, backward, return_sequences)
    return merge_directions(y, y_rev, merge_mode, return_sequences)


__all__ = ["StackCell", "bidirectional_stacked_forward", "stacked_forward"]
