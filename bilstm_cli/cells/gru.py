"""GRU: gates z, r, h (update, reset, candidate).

Weights: kernel (input, 3u), recurrent_kernel (u, 3u), bias (3u,) or, with ``reset_after=True``,
(2, 3u): row 0 added to the input projection, row 1 to the recurrent one. The gate blocks are
column ranges of the last axis either way, so one slice selects a gate in both bias rows.

One step. ``reset_after=True``: ``h̃ = act(x·W_h + b_h + r ⊙ (h·U_h + b'_h))``;
``reset_after=False``: ``h̃ = act(x·W_h + b_h + (r ⊙ h)·U_h)``. Then
``h' = z ⊙ h + (1 − z) ⊙ h̃``: Keras keeps ``z`` of the old state, so z plays the forget role.
"""

from __future__ import annotations

import numpy as np

from bilstm_cli.cells.base import Cell, State, StepParams


def _step(p: np.ndarray, state: State, w: StepParams) -> State:
    (h,) = state
    u = w.units
    rk = w.recurrent_kernel
    act, ract = w.activation, w.recurrent_activation
    if w.reset_after:
        rec = h @ rk
        if w.recurrent_bias is not None:
            rec = rec + w.recurrent_bias
        zg = ract(p[:, :u] + rec[:, :u])
        r = ract(p[:, u : 2 * u] + rec[:, u : 2 * u])
        hh = act(p[:, 2 * u :] + r * rec[:, 2 * u :])
    else:
        rec = h @ rk[:, : 2 * u]
        zg = ract(p[:, :u] + rec[:, :u])
        r = ract(p[:, u : 2 * u] + rec[:, u:])
        hh = act(p[:, 2 * u :] + (r * h) @ rk[:, 2 * u :])
    return (zg * h + (1.0 - zg) * hh,)


CELL = Cell(
    name="GRU",
    gates=("z", "r", "h"),
    gate_names=("update", "reset", "candidate"),
    tracked_group="gru_cell",
    forget_gate="z",
    states=1,
    has_reset_after=True,
    step=_step,
)
