"""A NumPy forward pass of Keras' recurrent layers and of ``Bidirectional``.

Used to check a transplant without Keras: run the donor's layer and the written layer on the same
probe batch and compare. The math follows Keras exactly (Keras 3 and Keras 2/tf-keras, which
differ only in ``hard_sigmoid``), in float64, with a zero initial state, no masking and no
dropout (inference). This module runs the parts every cell shares (the input projection
``x·W + b``, the loop over time steps, the bidirectional merge); one time step is the cell
family's own ``step`` (see the family modules).

A layer with ``go_backwards=True`` reads the sequence reversed and returns its outputs in the
order it produced them; ``Bidirectional`` flips the backward layer's sequence back before merging
(only when it returns sequences), exactly as Keras does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from bilstm_cli.cells.base import Activation, StepParams, get
from bilstm_cli.errors import InputError

# tf.nn.selu's constants (Klambauer et al. 2017), which Keras uses on every backend.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

_erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    return out


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def _hard_sigmoid_k3(x: np.ndarray) -> np.ndarray:
    # Keras 3: relu6(x + 3) / 6, i.e. slope 1/6 between -3 and 3.
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hard_sigmoid_k2(x: np.ndarray) -> np.ndarray:
    # Keras 2 / tf.keras: clip(0.2 x + 0.5, 0, 1), slope 0.2 between -2.5 and 2.5.
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    # Keras' gelu activation defaults to the exact (erf) form.
    # np.asarray: frompyfunc gives a Python float, not an array, for a 0-d input.
    erf = np.asarray(_erf(x / math.sqrt(2.0)), dtype=np.float64)
    return 0.5 * x * (1.0 + erf)


_COMMON: dict[str, Activation] = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": _softplus,
    "elu": _elu,
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "exponential": np.exp,
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "log_sigmoid": lambda x: -_softplus(-x),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "gelu": _gelu,
}


def activation_names() -> tuple[str, ...]:
    """Activation names the reference understands."""
    return tuple(sorted({*_COMMON, "hard_sigmoid", "hard_silu", "hard_swish"}))


def get_activation(name: str | None, keras_major: int = 3) -> Activation:
    """The activation function Keras ``keras_major`` means by ``name``.

    ``None`` is linear, as in Keras. Raises :class:`InputError` naming an unknown activation.
    """
    if name is None:
        return _COMMON["linear"]
    key = str(name).strip().lower()
    if key == "hard_sigmoid":
        return _hard_sigmoid_k2 if keras_major < 3 else _hard_sigmoid_k3
    if key in ("hard_silu", "hard_swish"):
        hs = _hard_sigmoid_k2 if keras_major < 3 else _hard_sigmoid_k3
        return lambda x: x * hs(x)
    if key not in _COMMON:
        raise InputError(
            f"unknown activation {name!r}; the reference forward pass knows "
            f"{', '.join(activation_names())}"
        )
    return _COMMON[key]


@dataclass(frozen=True)
class CellConfig:
    """The settings of one recurrent layer that change its output."""

    cell: str
    units: int
    activation: str | None = "tanh"
    recurrent_activation: str | None = "sigmoid"
    use_bias: bool = True
    reset_after: bool = True
    go_backwards: bool = False
    keras_major: int = 3


def backward_config(cfg: CellConfig) -> CellConfig:
    """The backward layer Keras builds from a forward layer: ``go_backwards`` flipped."""
    return replace(cfg, go_backwards=not cfg.go_backwards)


def _matrix_cell(name: str) -> None:
    """Refuse an unknown cell, and a convolutional one, which this module does not run."""
    if get(name).spatial_dims:
        raise InputError(f"{name} convolves; its reference is bilstm_cli.cells.conv_forward")


def _as_f64(a: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not numeric: {exc}") from exc


def _shape_error(
    what: str, shape: tuple[int, ...], desc: str, expected: tuple[int, ...]
) -> InputError:
    return InputError(f"{what} of shape {shape} does not fit {desc}; expected {expected}")


def _describe(cfg: CellConfig) -> str:
    return f"{cfg.cell} with {int(cfg.units)} units"


def _check_recurrent(rk: np.ndarray, bias: np.ndarray | None, cfg: CellConfig) -> None:
    cell = get(cfg.cell)
    desc = _describe(cfg)
    expected = cell.shape("recurrent_kernel", cfg.units, 0)
    if rk.shape != expected:
        raise _shape_error("recurrent kernel", rk.shape, desc, expected)
    if not cfg.use_bias:
        if bias is not None:
            raise InputError(f"{desc} has use_bias=False but a bias was given")
        return
    if bias is None:
        raise InputError(f"{desc} has use_bias=True but no bias was given")
    expected = cell.shape("bias", cfg.units, 0, cfg.reset_after)
    if bias.shape != expected:
        extra = f" (reset_after={cfg.reset_after})" if cell.has_reset_after else ""
        raise _shape_error("bias", bias.shape, desc + extra, expected)


# Kernel rows converted to float64 at a time: a large kernel is never copied whole.
_PROJECTION_ROWS = 256


def _check_input(xs: np.ndarray, kernel: np.ndarray, cfg: CellConfig) -> None:
    if xs.ndim != 3:
        raise InputError(f"input of shape {xs.shape} is not (batch, time, features)")
    expected = get(cfg.cell).shape("kernel", cfg.units, xs.shape[2])
    if kernel.shape != expected:
        raise _shape_error(
            "kernel", kernel.shape, f"{_describe(cfg)} and {xs.shape[2]} input features", expected
        )


def input_projection(x: np.ndarray, kernel: np.ndarray, cfg: CellConfig) -> np.ndarray:
    """``x · W`` for every step at once, in float64, in the order the layer reads the steps
    (reversed for ``go_backwards``), without the bias: the part of the cell that does not
    depend on the state. Pass it to :func:`recurrence` with the recurrent kernel and bias."""
    _matrix_cell(cfg.cell)  # an unknown cell is reported before anything else
    xs = _as_f64(x, "input")
    kernel = np.asarray(kernel)
    _check_input(xs, kernel, cfg)
    if cfg.go_backwards:
        xs = xs[:, ::-1]
    batch, steps, features = xs.shape
    # One (batch·time, features) product per row block rather than one per sample, each
    # block converted into the same float64 buffer: the same sums in the same order.
    flat = np.ascontiguousarray(xs).reshape(batch * steps, features)
    proj = np.zeros((batch * steps, kernel.shape[1]))
    buffer = np.empty((min(_PROJECTION_ROWS, kernel.shape[0]), kernel.shape[1]))
    with np.errstate(all="ignore"):  # huge or non-finite weights give inf/NaN, not warnings
        for start in range(0, kernel.shape[0], _PROJECTION_ROWS):
            part = kernel[start : start + _PROJECTION_ROWS]
            rows = buffer[: part.shape[0]]
            try:
                np.copyto(rows, part, casting="unsafe")
            except (TypeError, ValueError) as exc:
                raise InputError(f"kernel is not numeric: {exc}") from exc
            proj += flat[:, start : start + part.shape[0]] @ rows
    return proj.reshape(batch, steps, kernel.shape[1])


def recurrence(
    proj: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    cfg: CellConfig,
    return_sequences: bool = True,
) -> np.ndarray:
    """Run the cell over the steps of ``proj`` (from :func:`input_projection`) from a zero
    state; see :func:`rnn_forward` for what it returns."""
    rk = _as_f64(recurrent_kernel, "recurrent kernel")
    b = None if bias is None else _as_f64(bias, "bias")
    _check_recurrent(rk, b, cfg)
    act = get_activation(cfg.activation, cfg.keras_major)
    ract = get_activation(cfg.recurrent_activation, cfg.keras_major)
    with np.errstate(all="ignore"):  # huge or non-finite weights give inf/NaN, not warnings
        return _run_steps(proj, rk, b, cfg, act, ract, return_sequences)


def _run_steps(
    proj: np.ndarray,
    rk: np.ndarray,
    b: np.ndarray | None,
    cfg: CellConfig,
    act: Activation,
    ract: Activation,
    return_sequences: bool,
) -> np.ndarray:
    u = int(cfg.units)
    batch, steps, _ = proj.shape
    recurrent_bias = None
    if b is not None:
        if b.ndim == 2:
            proj, recurrent_bias = proj + b[0], b[1]
        else:
            proj = proj + b

    cell = get(cfg.cell)
    params = StepParams(rk, recurrent_bias, u, cfg.reset_after, act, ract)
    state = tuple(np.zeros((batch, u)) for _ in range(cell.states))
    outputs = np.empty((batch, steps, u))
    for t in range(steps):
        state = cell.step(proj[:, t], state, params)
        outputs[:, t] = state[0]
    return outputs if return_sequences else outputs[:, -1]


def rnn_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    cfg: CellConfig,
    return_sequences: bool = True,
) -> np.ndarray:
    """Run one Keras recurrent layer on ``x`` (batch, time, features) from a zero state.

    Returns (batch, time, units) when ``return_sequences`` (in processing order, so reversed in
    time for ``go_backwards=True``, as Keras returns it), else the last output (batch, units).
    Raises :class:`InputError` when a shape or an activation does not fit ``cfg``.
    """
    _matrix_cell(cfg.cell)  # an unknown cell is reported before anything else
    _check_input(_as_f64(x, "input"), np.asarray(kernel), cfg)
    _check_recurrent(np.asarray(recurrent_kernel), None if bias is None else np.asarray(bias), cfg)
    get_activation(cfg.activation, cfg.keras_major)
    get_activation(cfg.recurrent_activation, cfg.keras_major)
    proj = input_projection(x, kernel, cfg)
    return recurrence(proj, recurrent_kernel, bias, cfg, return_sequences)


def _unpack(
    weights: Sequence[np.ndarray | None], cfg: CellConfig, which: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ws = list(weights)
    if len(ws) == 2:
        ws.append(None)
    if len(ws) != 3:
        raise InputError(
            f"{which} layer has {len(ws)} weights; expected kernel, recurrent kernel "
            "and (with use_bias) bias"
        )
    kernel, rk, bias = ws
    if kernel is None or rk is None:
        raise InputError(f"{which} layer lacks its kernel or recurrent kernel")
    return kernel, rk, bias


MERGE_MODES: tuple[str | None, ...] = ("concat", "sum", "mul", "ave", None)


def bidirectional_forward(
    x: np.ndarray,
    fwd: Sequence[np.ndarray | None] | Callable[[], Sequence[np.ndarray | None]],
    bwd: Sequence[np.ndarray | None] | Callable[[], Sequence[np.ndarray | None]],
    fwd_cfg: CellConfig,
    bwd_cfg: CellConfig,
    merge_mode: str | None,
    return_sequences: bool = True,
) -> np.ndarray | list[np.ndarray]:
    """Run a Keras ``Bidirectional`` layer: ``fwd``/``bwd`` are (kernel, recurrent, [bias]).

    ``bwd_cfg`` must describe the backward layer as it really is; for a Bidirectional built
    without a custom backward layer that is :func:`backward_config` of the forward settings.
    The two layers must have opposite ``go_backwards`` (Keras refuses anything else).
    ``merge_mode`` None returns ``[forward, backward]``. ``fwd``/``bwd`` may also be functions
    returning the weights, called just before their direction runs, so that only one
    direction's weights are held at a time.
    """
    if merge_mode not in MERGE_MODES:
        raise InputError(
            f"unknown merge_mode {merge_mode!r}; expected concat, sum, mul, ave or None"
        )
    check_directions(fwd_cfg, bwd_cfg)
    y = rnn_forward(
        x, *_unpack(fwd() if callable(fwd) else fwd, fwd_cfg, "forward"), fwd_cfg, return_sequences
    )
    y_rev = rnn_forward(
        x, *_unpack(bwd() if callable(bwd) else bwd, bwd_cfg, "backward"), bwd_cfg, return_sequences
    )
    return merge_directions(y, y_rev, merge_mode, return_sequences)


def check_directions(fwd_cfg: CellConfig, bwd_cfg: CellConfig) -> None:
    """Refuse a forward/backward pair that Keras would refuse: same ``go_backwards``."""
    if fwd_cfg.go_backwards == bwd_cfg.go_backwards:
        raise InputError(
            "the forward and backward layers must have opposite go_backwards; both have "
            f"go_backwards={fwd_cfg.go_backwards}"
        )


def merge_directions(
    y: np.ndarray, y_rev: np.ndarray, merge_mode: str | None, return_sequences: bool = True
) -> np.ndarray | list[np.ndarray]:
    """Combine the forward and backward layers' outputs as ``Bidirectional`` does: the
    backward sequence flipped back into time order, then merged (None: both, as a list)."""
    if merge_mode not in MERGE_MODES:
        raise InputError(
            f"unknown merge_mode {merge_mode!r}; expected concat, sum, mul, ave or None"
        )
    if return_sequences:
        y_rev = y_rev[:, ::-1]
    if merge_mode is None:
        return [y, y_rev]
    merged: np.ndarray
    if merge_mode == "concat":
        merged = np.concatenate([y, y_rev], axis=-1)
    elif merge_mode == "sum":
        merged = y + y_rev
    elif merge_mode == "mul":
        merged = y * y_rev
    else:
        merged = (y + y_rev) / 2.0
    return merged


def probe_batch(input_dim: int, seed: int = 0, batch: int = 2, time: int = 5) -> np.ndarray:
    """A reproducible float32 input batch (batch, time, input_dim) of standard normal values.

    float32 so that Keras (which computes in float32) and the float64 reference see exactly
    the same numbers.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, time, int(input_dim))).astype(np.float32)


__all__ = [
    "MERGE_MODES",
    "CellConfig",
    "activation_names",
    "backward_config",
    "bidirectional_forward",
    "check_directions",
    "get_activation",
    "input_projection",
    "merge_directions",
    "probe_batch",
    "recurrence",
    "rnn_forward",
]
