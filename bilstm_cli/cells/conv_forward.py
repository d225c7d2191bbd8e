"""A NumPy forward pass of Keras' ConvLSTM1D/2D/3D layers, alone and inside ``Bidirectional``.

The same split as :mod:`bilstm_cli.cells.forward`, for convolutions: :func:`input_projection`
convolves every step's input with the kernel at once (the layer's ``padding``, ``strides`` and
``dilation_rate``), :func:`recurrence` runs the cell over the steps from a zero state, the
recurrent kernel convolving the previous output with padding ``same``, strides 1 and no
dilation, exactly as ``ConvLSTMCell.recurrent_conv`` does. Inputs are channels_last,
(batch, time, *spatial, channels); everything is computed in float64, inference only (no
dropout, no masking). Padding ``same`` pads as TensorFlow does: the total padding
``max((out - 1)·stride + (k - 1)·dilation + 1 - size, 0)`` with ``out = ceil(size / stride)``,
the smaller half before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bilstm_cli.cells.base import StepParams, get
from bilstm_cli.cells.forward import CellConfig, check_directions, get_activation, merge_directions
from bilstm_cli.errors import InputError
from bilstm_cli.model import CellSettings, ConvSettings

PADDINGS = ("valid", "same")
#: The probe input's spatial positions stay below this (a config may declare any dilation);
#: ordinary windows need tens to a few hundred.
MAX_PROBE_POSITIONS = 4096


@dataclass(frozen=True)
class ConvCellConfig(CellConfig):
    """The settings of one ConvLSTM layer that change its output."""

    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: str = "valid"
    dilation_rate: tuple[int, ...] = ()
    data_format: str = "channels_last"


def conv_problem(cell: str, conv: ConvSettings | None) -> str | None:
    """Why the reference cannot run a ConvLSTM with these settings (None when it can)."""
    if conv is None or conv.strides is None or conv.dilation_rate is None:
        return f"{cell} without its strides, padding and dilation (the file holds none)"
    if conv.data_format != "channels_last":
        return f"{cell} with data_format={conv.data_format} (the reference runs channels_last)"
    if conv.padding not in PADDINGS:
        return f"{cell} with padding={conv.padding!r} (Keras convolves with valid or same)"
    n = get(cell).spatial_dims
    lengths = {len(conv.kernel_size), len(conv.strides), len(conv.dilation_rate)}
    if lengths != {n}:
        return f"{cell} settings of the wrong length for {n} spatial dimension(s)"
    values = (*conv.kernel_size, *conv.strides, *conv.dilation_rate)
    if min(values, default=1) < 1:
        return f"{cell} with a kernel size, stride or dilation below 1"
    if max(conv.strides) > 1 and max(conv.dilation_rate) > 1:
        return f"{cell} with both strides and dilation_rate above 1 (Keras refuses that)"
    positions = math.prod(
        _probe_length(k, s, d)
        for k, s, d in zip(conv.kernel_size, conv.strides, conv.dilation_rate)
    )
    if positions > MAX_PROBE_POSITIONS:
        return (
            f"{cell} whose window and strides need a probe of {positions} positions "
            f"(more than {MAX_PROBE_POSITIONS})"
        )
    return None


def _probe_length(kernel: int, stride: int, dilation: int) -> int:
    """One spatial axis of the probe input: the dilated window plus two strides, so that
    every window position and a stride are exercised, with valid padding too."""
    return (kernel - 1) * dilation + 1 + 2 * stride


def _check_config(cfg: ConvCellConfig) -> int:
    cell = get(cfg.cell)
    if not cell.spatial_dims:
        raise InputError(f"{cfg.cell} is not a convolutional cell")
    conv = ConvSettings(
        cfg.kernel_size, cfg.strides, cfg.padding, cfg.dilation_rate, cfg.data_format
    )
    problem = conv_problem(cfg.cell, conv)
    if problem is not None:
        raise InputError(f"the reference forward pass cannot run a {problem}")
    return cell.spatial_dims


def _as_f64(a: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not numeric: {exc}") from exc


def output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Length of one spatial axis after the convolution (0: the input is too small)."""
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    return (size - span) // stride + 1 if size >= span else 0


def conv(
    x: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    padding: str,
    dilation: Sequence[int],
) -> np.ndarray:
    """Convolve channels_last ``x`` (batch, *spatial, in) with ``w`` (*window, in, out).

    As Keras' ``ops.conv`` does (a cross-correlation, no kernel flip), in the dtype of the
    operands; one matrix product per window position.
    """
    n = w.ndim - 2
    spatial = x.shape[1:-1]
    if len(spatial) != n or x.shape[-1] != w.shape[-2]:
        raise InputError(
            f"input of shape {x.shape} does not fit a kernel of shape {w.shape} "
            f"(batch, {n} spatial axes, {w.shape[-2]} channels)"
        )
    pads: list[tuple[int, int]] = []
    outs: list[int] = []
    for size, k, s, d in zip(spatial, w.shape[:n], strides, dilation):
        out = output_size(size, k, s, d, padding)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
        outs.append(out)
    if min(outs, default=1) < 1:
        raise InputError(
            f"input of spatial shape {tuple(spatial)} is smaller than the kernel window "
            f"{tuple(w.shape[:n])} with dilation {tuple(dilation)} and padding valid"
        )
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    y = np.zeros((x.shape[0], *outs, w.shape[-1]), dtype=np.result_type(x, w))
    for offset in np.ndindex(*w.shape[:n]):
        window = tuple(
            slice(o * d, o * d + (out - 1) * s + 1, s)
            for o, d, s, out in zip(offset, dilation, strides, outs)
        )
        y += xp[(slice(None), *window)] @ w[offset]
    return y


def recurrent_conv(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The recurrent kernel applied to the previous output: padding same, strides 1, no
    dilation, whatever the layer's own convolution (``ConvLSTMCell.recurrent_conv``)."""
    ones = (1,) * (w.ndim - 2)
    return conv(h, w, ones, "same", ones)


def _describe(cfg: ConvCellConfig) -> str:
    return f"{cfg.cell} with {int(cfg.units)} filters and kernel_size {tuple(cfg.kernel_size)}"


def _check_shape(cfg: ConvCellConfig, what: str, role: str, arr: np.ndarray, dim: int) -> None:
    want = get(cfg.cell).shape(role, cfg.units, dim, kernel_size=cfg.kernel_size)
    if tuple(arr.shape) != want:
        raise InputError(
            f"{what} of shape {tuple(arr.shape)} does not fit {_describe(cfg)}; expected {want}"
        )


def _check_bias(cfg: ConvCellConfig, bias: np.ndarray | None) -> None:
    if cfg.use_bias != (bias is not None):
        having = "no bias was given" if bias is None else "a bias was given"
        raise InputError(f"{_describe(cfg)} has use_bias={cfg.use_bias} but {having}")
    if bias is not None:
        _check_shape(cfg, "bias", "bias", bias, 0)


def input_projection(x: np.ndarray, kernel: np.ndarray, cfg: ConvCellConfig) -> np.ndarray:
    """Every step's input convolved with the kernel, in float64, in the order the layer reads
    the steps (reversed for ``go_backwards``), without the bias: (batch, time, *out, 4f).
    Pass it to :func:`recurrence` with the recurrent kernel and bias."""
    n = _check_config(cfg)
    xs = _as_f64(x, "input")
    if xs.ndim != n + 3:
        raise InputError(
            f"input of shape {xs.shape} is not (batch, time, {n} spatial axes, channels)"
        )
    w = _as_f64(kernel, "kernel")
    _check_shape(cfg, "kernel", "kernel", w, xs.shape[-1])
    if cfg.go_backwards:
        xs = xs[:, ::-1]
    batch, steps = xs.shape[:2]
    with np.errstate(all="ignore"):  # huge or non-finite weights give inf/NaN, not warnings
        flat = conv(
            xs.reshape(batch * steps, *xs.shape[2:]),
            w,
            cfg.strides,
            cfg.padding,
            cfg.dilation_rate,
        )
    return flat.reshape(batch, steps, *flat.shape[1:])


def recurrence(
    proj: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    cfg: ConvCellConfig,
    return_sequences: bool = True,
) -> np.ndarray:
    """Run the cell over the steps of ``proj`` (from :func:`input_projection`) from a zero
    state; see :func:`rnn_forward` for what it returns."""
    _check_config(cfg)
    rk = _as_f64(recurrent_kernel, "recurrent kernel")
    b = None if bias is None else _as_f64(bias, "bias")
    _check_shape(cfg, "recurrent kernel", "recurrent_kernel", rk, 0)
    _check_bias(cfg, b)
    act = get_activation(cfg.activation, cfg.keras_major)
    ract = get_activation(cfg.recurrent_activation, cfg.keras_major)
    cell = get(cfg.cell)
    f = int(cfg.units)
    batch, steps = proj.shape[:2]
    params = StepParams(rk, None, f, False, act, ract)
    with np.errstate(all="ignore"):
        p = proj if b is None else proj + b
        state = tuple(np.zeros((batch, *proj.shape[2:-1], f)) for _ in range(cell.states))
        outputs = np.empty((batch, steps, *proj.shape[2:-1], f))
        for t in range(steps):
            state = cell.step(p[:, t], state, params)
            outputs[:, t] = state[0]
    return outputs if return_sequences else outputs[:, -1]


def rnn_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    cfg: ConvCellConfig,
    return_sequences: bool = True,
) -> np.ndarray:
    """Run one Keras ConvLSTM layer on ``x`` (batch, time, *spatial, channels) from a zero
    state: (batch, time, *out, filters) in processing order (reversed in time for
    ``go_backwards``, as Keras returns it) with ``return_sequences``, else the last output."""
    _check_config(cfg)
    _check_shape(cfg, "recurrent kernel", "recurrent_kernel", np.asarray(recurrent_kernel), 0)
    _check_bias(cfg, None if bias is None else np.asarray(bias))
    get_activation(cfg.activation, cfg.keras_major)
    get_activation(cfg.recurrent_activation, cfg.keras_major)
    proj = input_projection(x, kernel, cfg)
    return recurrence(proj, recurrent_kernel, bias, cfg, return_sequences)


Weights = Sequence[np.ndarray | None]


def bidirectional_forward(
    x: np.ndarray,
    fwd: Weights | Callable[[], Weights],
    bwd: Weights | Callable[[], Weights],
    fwd_cfg: ConvCellConfig,
    bwd_cfg: ConvCellConfig,
    merge_mode: str | None,
    return_sequences: bool = True,
) -> np.ndarray | list[np.ndarray]:
    """Run a Keras ``Bidirectional`` around ConvLSTM layers, as
    :func:`bilstm_cli.cells.forward.bidirectional_forward` does for the other cells: the
    backward sequence flipped back in time, then merged along the channel axis."""
    check_directions(fwd_cfg, bwd_cfg)
    outputs = []
    for weights, cfg, which in ((fwd, fwd_cfg, "forward"), (bwd, bwd_cfg, "backward")):
        ws = list(weights() if callable(weights) else weights)
        if len(ws) == 2:
            ws.append(None)
        if len(ws) != 3 or ws[0] is None or ws[1] is None:
            raise InputError(
                f"{which} layer needs kernel, recurrent kernel and (with use_bias) bias"
            )
        outputs.append(rnn_forward(x, ws[0], ws[1], ws[2], cfg, return_sequences))
    return merge_directions(outputs[0], outputs[1], merge_mode, return_sequences)


def probe_shape(
    cfg: ConvCellConfig, input_dim: int, batch: int = 2, time: int = 4
) -> tuple[int, ...]:
    """An input shape every position of the kernel window reaches, with valid padding too:
    each spatial axis as long as the dilated window plus two strides."""
    spatial = tuple(
        _probe_length(k, s, d) for k, s, d in zip(cfg.kernel_size, cfg.strides, cfg.dilation_rate)
    )
    return (batch, time, *spatial, int(input_dim))


def probe_batch(cfg: ConvCellConfig, input_dim: int, seed: int = 0) -> np.ndarray:
    """A reproducible float32 input batch of :func:`probe_shape` (standard normal values),
    float32 so that Keras and the float64 reference see the same numbers."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(probe_shape(cfg, input_dim)).astype(np.float32)


def config_for(settings: CellSettings, keras_major: int, go_backwards: bool) -> ConvCellConfig:
    """The configuration of a ConvLSTM layer from its cell settings; :class:`InputError` when
    :func:`conv_problem` says the reference cannot run it."""
    conv_settings = settings.conv
    problem = conv_problem(settings.cell, conv_settings)
    if problem is not None:
        raise InputError(f"the reference forward pass cannot run a {problem}")
    assert conv_settings is not None and conv_settings.strides is not None
    assert conv_settings.dilation_rate is not None and conv_settings.padding is not None
    return ConvCellConfig(
        cell=settings.cell,
        units=settings.units,
        activation=settings.activation,
        recurrent_activation=settings.recurrent_activation,
        use_bias=settings.use_bias,
        reset_after=False,
        go_backwards=go_backwards,
        keras_major=keras_major,
        kernel_size=tuple(conv_settings.kernel_size),
        strides=tuple(conv_settings.strides),
        padding=conv_settings.padding,
        dilation_rate=tuple(conv_settings.dilation_rate),
        data_format=str(conv_settings.data_format),
    )


__all__ = [
    "PADDINGS",
    "ConvCellConfig",
    "bidirectional_forward",
    "config_for",
    "conv",
    "conv_problem",
    "input_projection",
    "output_size",
    "probe_batch",
    "probe_shape",
    "recurrence",
    "recurrent_conv",
    "rnn_forward",
]
