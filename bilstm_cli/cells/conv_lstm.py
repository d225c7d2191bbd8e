"""ConvLSTM1D / ConvLSTM2D / ConvLSTM3D: an LSTM whose products are convolutions.

Gates i, f, c, o (input, forget, cell, output), as LSTM. Weights: kernel
``kernel_size + (input channels, 4f)``, recurrent_kernel ``kernel_size + (f, 4f)``, bias
``(4f,)``, the four gate blocks side by side along the last axis; ``f`` is the layer's
``filters``, which the tool reports as its units. One step, with
``z = conv(x, W) + conv_same(h, U) + b`` (see :mod:`bilstm_cli.cells.conv_forward`):
``c' = σ(f)·c + σ(i)·act(c̃)`` and ``h' = σ(o)·act(c')``.

Keras tracks the cell of all three layers under one group, ``conv_lstm_cell``; the number of
spatial axes comes from the configuration (or, without one, from the weights' rank).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilstm_cli.cells.base import Cell, State, StepParams, get
from bilstm_cli.errors import InputError
from bilstm_cli.model import ConvSettings


def _step(p: np.ndarray, state: State, w: StepParams) -> State:
    # The convolution reference loads with the first step run, not with the cell registry.
    from bilstm_cli.cells.conv_forward import recurrent_conv

    h, c = state
    f = w.units
    ract = w.recurrent_activation
    z = p + recurrent_conv(h, w.recurrent_kernel)
    i = ract(z[..., :f])
    fg = ract(z[..., f : 2 * f])
    c = fg * c + i * w.activation(z[..., 2 * f : 3 * f])
    h = ract(z[..., 3 * f :]) * w.activation(c)
    return h, c


def _cell(rank: int) -> Cell:
    return Cell(
        name=f"ConvLSTM{rank}D",
        gates=("i", "f", "c", "o"),
        gate_names=("input", "forget", "cell", "output"),
        tracked_group="conv_lstm_cell",
        forget_gate="f",
        states=2,
        has_reset_after=False,
        step=_step,
        spatial_dims=rank,
    )


CELLS = (_cell(1), _cell(2), _cell(3))


def _int_tuple(value: Any, rank: int, key: str, where: str) -> tuple[int, ...]:
    """A Keras integer-or-tuple argument (``kernel_size=3`` or ``[3, 3]``) as ``rank`` ints."""
    items = [value] * rank if isinstance(value, int) else value
    if (
        not isinstance(items, list | tuple)
        or len(items) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items)
    ):
        raise InputError(f"{where}: {key} {value!r} is not {rank} non-negative integer(s)")
    return tuple(int(v) for v in items)


def conv_settings(class_name: str, conf: dict[str, Any], where: str) -> ConvSettings | None:
    """The convolution settings of a ConvLSTM layer's config (None for any other class).

    Keras' own defaults fill what a config leaves out (strides and dilation 1, padding
    ``valid``, channels_last); a value of the wrong kind is :class:`InputError`."""
    try:
        cell = get(class_name)
    except InputError:
        return None
    rank = cell.spatial_dims
    if not rank:
        return None
    if "kernel_size" not in conf:
        raise InputError(f"{where}: {class_name} has no kernel_size in the configuration")
    kernel_size = _int_tuple(conf["kernel_size"], rank, "kernel_size", where)
    if min(kernel_size) < 1:
        raise InputError(f"{where}: {class_name} kernel_size {kernel_size} has an empty axis")
    padding = conf.get("padding", "valid")
    data_format = conf.get("data_format") or "channels_last"
    if not isinstance(padding, str) or not isinstance(data_format, str):
        raise InputError(f"{where}: {class_name} padding and data_format must be text")
    return ConvSettings(
        kernel_size=kernel_size,
        strides=_int_tuple(conf.get("strides", 1), rank, "strides", where),
        padding=padding.lower(),
        dilation_rate=_int_tuple(conf.get("dilation_rate", 1), rank, "dilation_rate", where),
        data_format=data_format,
    )


def describe(cell: str, conv: ConvSettings) -> str:
    """One line on a ConvLSTM layer's convolution, for the layer's notes."""

    def text(values: tuple[int, ...] | None) -> str:
        return "unknown" if values is None else "x".join(str(v) for v in values)

    parts = [f"{cell}: units are filters; kernel_size {text(conv.kernel_size)}"]
    if conv.padding is None:
        parts.append("padding, strides and dilation unknown (no configuration)")
    else:
        parts.append(f"padding {conv.padding}")
        parts.append(f"strides {text(conv.strides)}")
        parts.append(f"dilation_rate {text(conv.dilation_rate)}")
        parts.append(str(conv.data_format))
    return ", ".join(parts)
