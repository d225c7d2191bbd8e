"""A NumPy forward pass of PyTorch's and ONNX's recurrent layers, in their own semantics.

The counterpart of :mod:`bilstm_cli.cells.forward` (Keras) for the tensors as another framework
stores them: the blocks in its own gate order along the first axis, two biases, PyTorch's GRU
(reset gate after the recurrent projection), ONNX's ``linear_before_reset``, ``clip``,
``input_forget`` and activation list. The check of a conversion runs the donor here, on its raw
tensors, and the written Keras layer in :mod:`~bilstm_cli.cells.forward`: the two share no
conversion code, so an error in the conversion shows as a difference in the outputs.

Every function takes ``x`` as (batch, time, features), starts from a zero state and returns
(batch, time, units) in time order (a reverse direction reads the sequence backwards and its
outputs are put back in time order, as both frameworks return them). Float64 throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bilstm_cli.cells.forward import get_activation
from bilstm_cli.errors import InputError

Fn = Callable[[np.ndarray], np.ndarray]

_sigmoid = get_activation("sigmoid")


def _f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


def _steps(x: np.ndarray, reverse: bool) -> tuple[np.ndarray, list[int]]:
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 3:
        raise InputError(f"input of shape {xs.shape} is not (batch, time, features)")
    order = list(range(xs.shape[1]))
    return xs, order[::-1] if reverse else order


def pytorch_forward(
    x: np.ndarray,
    cell: str,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray | None = None,
    bias_hh: np.ndarray | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> np.ndarray:
    """One direction of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``cell`` the Keras family name)
    as PyTorch computes it: ``W_ih x + b_ih + W_hh h + b_hh``; GRU
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``."""
    xs, order = _steps(x, reverse)
    w_ih, w_hh = _f64(weight_ih), _f64(weight_hh)
    assert w_ih is not None and w_hh is not None
    units = w_hh.shape[1]
    b_ih = np.zeros(w_ih.shape[0]) if bias_ih is None else _f64(bias_ih)
    b_hh = np.zeros(w_hh.shape[0]) if bias_hh is None else _f64(bias_hh)
    if w_ih.shape[1] != xs.shape[2]:
        raise InputError(f"weight_ih of shape {w_ih.shape} does not take {xs.shape[2]} inputs")
    act: Fn = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0.0))
    batch = xs.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    out = np.zeros((batch, xs.shape[1], units))
    u = units
    with np.errstate(all="ignore"):
        for t in order:
            gi = xs[:, t] @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            if cell == "LSTM":
                g = gi + gh
                i, f = _sigmoid(g[:, :u]), _sigmoid(g[:, u : 2 * u])
                cand, o = np.tanh(g[:, 2 * u : 3 * u]), _sigmoid(g[:, 3 * u :])
                c = f * c + i * cand
                h = o * np.tanh(c)
            elif cell == "GRU":
                r = _sigmoid(gi[:, :u] + gh[:, :u])
                z = _sigmoid(gi[:, u : 2 * u] + gh[:, u : 2 * u])
                n = np.tanh(gi[:, 2 * u :] + r * gh[:, 2 * u :])
                h = (1.0 - z) * n + z * h
            elif cell == "SimpleRNN":
                h = act(gi + gh)
            else:
                raise InputError(f"PyTorch has no {cell}")
            out[:, t] = h
    return out


def _onnx_activation(name: str, alpha: float | None, beta: float | None) -> Fn:
    """The ONNX recurrent operators' activation functions, with their default alpha/beta."""
    key = name.lower()
    if key == "sigmoid":
        return _sigmoid
    if key == "tanh":
        return np.tanh
    if key == "relu":
        return lambda v: np.maximum(v, 0.0)
    if key == "softsign":
        return lambda v: v / (1.0 + np.abs(v))
    if key == "softplus":
        return lambda v: np.logaddexp(0.0, v)
    a = alpha
    if key == "hardsigmoid":
        a, b = (0.2 if a is None else a), (0.5 if beta is None else beta)
        return lambda v: np.clip(a * v + b, 0.0, 1.0)
    if key == "leakyrelu":
        a = 0.01 if a is None else a
        return lambda v: np.where(v >= 0, v, a * v)
    if key == "elu":
        a = 1.0 if a is None else a
        return lambda v: np.where(v >= 0, v, a * np.expm1(np.minimum(v, 0.0)))
    if key == "thresholdedrelu":
        a = 1.0 if a is None else a
        return lambda v: np.where(v > a, v, 0.0)
    if key in ("affine", "scaledtanh"):
        a, b = (1.0 if a is None else a), (1.0 if beta is None else beta)
        if key == "affine":
            return lambda v: a * v + b
        return lambda v: a * np.tanh(b * v)
    raise InputError(f"ONNX activation {name!r} is not one the reference knows")


def _clipped(fn: Fn, limit: float) -> Fn:
    """``fn`` with its input clipped to [-limit, limit] (the operators' ``clip``)."""
    return lambda v: fn(np.clip(v, -limit, limit))


_TAKES_ALPHA = ("hardsigmoid", "leakyrelu", "elu", "thresholdedrelu", "affine", "scaledtanh")
_TAKES_BETA = ("hardsigmoid", "affine", "scaledtanh")


def onnx_activation_params(
    names: Sequence[str], alphas: Sequence[float], betas: Sequence[float]
) -> tuple[list[float | None], list[float | None]]:
    """A node's ``activation_alpha``/``activation_beta`` lists, one entry per activation
    (None where it takes none): onnxruntime hands them out in the order of the activations,
    each to the next activation that takes one, across both directions."""
    a_iter, b_iter = iter(alphas), iter(betas)
    a_out: list[float | None] = []
    b_out: list[float | None] = []
    for n in names:
        key = n.lower()
        a_out.append(next(a_iter, None) if key in _TAKES_ALPHA else None)
        b_out.append(next(b_iter, None) if key in _TAKES_BETA else None)
    return a_out, b_out


#: The default activations of each ONNX operator, one direction's worth.
ONNX_DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "SimpleRNN": ("Tanh",),
}


def onnx_forward(
    x: np.ndarray,
    cell: str,
    w: np.ndarray,
    r: np.ndarray,
    b: np.ndarray | None = None,
    reverse: bool = False,
    activations: Sequence[str] | None = None,
    alphas: Sequence[float | None] = (),
    betas: Sequence[float | None] = (),
    clip: float | None = None,
    input_forget: int = 0,
    linear_before_reset: int = 0,
) -> np.ndarray:
    """One direction of an ONNX ``LSTM`` / ``GRU`` / ``RNN`` node: ``w`` (blocks*h, in), ``r``
    (blocks*h, h) and ``b`` (2*blocks*h: input biases then recurrent ones) of that direction,
    ``activations`` that direction's names (defaults as in the operator) and ``alphas``/``betas``
    one per activation (see :func:`onnx_activation_params`), ``clip`` applied to
    every activation's input, LSTM ``input_forget`` coupling the forget gate to the input gate
    and GRU ``linear_before_reset``, all as the operator specification defines them."""
    xs, order = _steps(x, reverse)
    wf, rf = _f64(w), _f64(r)
    assert wf is not None and rf is not None
    units = rf.shape[1]
    width = wf.shape[0]
    bf = np.zeros(2 * width) if b is None else _f64(b)
    assert bf is not None
    wb, rb = bf[:width], bf[width:]
    names = list(activations or ONNX_DEFAULT_ACTIVATIONS[cell])
    alpha, beta = list(alphas), list(betas)
    fns = [
        _onnx_activation(
            n, alpha[k] if k < len(alpha) else None, beta[k] if k < len(beta) else None
        )
        for k, n in enumerate(names)
    ]
    if clip is not None:
        fns = [_clipped(fn, float(clip)) for fn in fns]
    batch, u = xs.shape[0], units
    h = np.zeros((batch, u))
    c = np.zeros((batch, u))
    out = np.zeros((batch, xs.shape[1], u))
    with np.errstate(all="ignore"):
        for t in order:
            gi = xs[:, t] @ wf.T + wb
            if cell == "LSTM":
                f_act, g_act, h_act = fns
                g = gi + h @ rf.T + rb
                i = f_act(g[:, :u])
                o = f_act(g[:, u : 2 * u])
                f = 1.0 - i if input_forget else f_act(g[:, 2 * u : 3 * u])
                c = f * c + i * g_act(g[:, 3 * u :])
                h = o * h_act(c)
            elif cell == "GRU":
                f_act, g_act = fns
                z = f_act(gi[:, :u] + h @ rf[:u].T + rb[:u])
                rg = f_act(gi[:, u : 2 * u] + h @ rf[u : 2 * u].T + rb[u : 2 * u])
                if linear_before_reset:
                    cand = g_act(gi[:, 2 * u :] + rg * (h @ rf[2 * u :].T + rb[2 * u :]))
                else:
                    cand = g_act(gi[:, 2 * u :] + (rg * h) @ rf[2 * u :].T + rb[2 * u :])
                h = (1.0 - z) * cand + z * h
            elif cell == "SimpleRNN":
                (f_act,) = fns
                h = f_act(gi + h @ rf.T + rb)
            else:
                raise InputError(f"ONNX has no {cell}")
            out[:, t] = h
    return out


__all__ = ["ONNX_DEFAULT_ACTIVATIONS", "onnx_activation_params", "onnx_forward", "pytorch_forward"]
