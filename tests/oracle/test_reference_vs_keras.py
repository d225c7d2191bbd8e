"""The NumPy reference forward pass against real Keras 3 (and tf-keras for Keras 2 semantics)."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from bilstm_cli.cells.forward import (
    CellConfig,
    backward_config,
    bidirectional_forward,
    get_activation,
    probe_batch,
    rnn_forward,
)

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.keras

FEATURES, UNITS, TIME, BATCH = 3, 4, 6, 2
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _randomize(layer: Any, seed: int, scale: float = 0.6) -> None:
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [scale * rng.standard_normal(w.shape).astype(np.float32) for w in layer.get_weights()]
    )


def _cell_kwargs(cell: str, use_bias: bool, reset_after: bool, **extra: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"use_bias": use_bias, **extra}
    if cell == "GRU":
        kw["reset_after"] = reset_after
    return kw


def _cfg(cell: str, layer: Any, keras_major: int = 3) -> CellConfig:
    conf = layer.get_config()
    return CellConfig(
        cell=cell,
        units=conf["units"],
        activation=conf["activation"],
        recurrent_activation=conf.get("recurrent_activation"),
        use_bias=conf["use_bias"],
        reset_after=conf.get("reset_after", True),
        go_backwards=conf["go_backwards"],
        keras_major=keras_major,
    )


def _run_bidirectional(
    cell: str,
    merge_mode: str | None,
    return_sequences: bool,
    use_bias: bool = True,
    reset_after: bool = True,
    backward: dict[str, Any] | None = None,
    forward_extra: dict[str, Any] | None = None,
    seed: int = 0,
) -> None:
    cls = getattr(keras.layers, cell)
    fkw = _cell_kwargs(cell, use_bias, reset_after, **(forward_extra or {}))
    forward = cls(UNITS, return_sequences=return_sequences, **fkw)
    back = None
    if backward is not None:
        bkw = _cell_kwargs(cell, use_bias, reset_after, **backward)
        back = cls(UNITS, return_sequences=return_sequences, **bkw)
    bi = keras.layers.Bidirectional(forward, merge_mode=merge_mode, backward_layer=back)
    x = probe_batch(FEATURES, seed=seed, batch=BATCH, time=TIME)
    bi(x)  # build
    _randomize(bi, seed + 1)
    expected = bi(x)
    fwd_w = bi.forward_layer.get_weights()
    bwd_w = bi.backward_layer.get_weights()
    fwd_cfg = _cfg(cell, bi.forward_layer)
    bwd_cfg = _cfg(cell, bi.backward_layer)
    if backward is None:
        assert bwd_cfg == backward_config(fwd_cfg)
    got = bidirectional_forward(x, fwd_w, bwd_w, fwd_cfg, bwd_cfg, merge_mode, return_sequences)
    if merge_mode is None:
        assert isinstance(got, list) and len(got) == 2
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, np.asarray(e), **TOL)
    else:
        np.testing.assert_allclose(got, np.asarray(expected), **TOL)


CELLS = [("LSTM", True), ("GRU", True), ("GRU", False), ("SimpleRNN", True)]


@pytest.mark.parametrize(("cell", "reset_after"), CELLS, ids=["LSTM", "GRU-ra", "GRU", "RNN"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_bidirectional_matches_keras(
    cell: str, reset_after: bool, merge_mode: str | None, return_sequences: bool
) -> None:
    _run_bidirectional(cell, merge_mode, return_sequences, reset_after=reset_after)


@pytest.mark.parametrize(("cell", "reset_after"), CELLS, ids=["LSTM", "GRU-ra", "GRU", "RNN"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_no_bias(cell: str, reset_after: bool, return_sequences: bool) -> None:
    _run_bidirectional(cell, "concat", return_sequences, use_bias=False, reset_after=reset_after)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_custom_backward_layer(cell: str, return_sequences: bool) -> None:
    # A custom backward layer with its own settings.
    _run_bidirectional(
        cell,
        "concat",
        return_sequences,
        backward={"go_backwards": True, "activation": "relu"},
        seed=3,
    )
    # The unusual way round: the forward layer reads backwards, the backward one forwards.
    _run_bidirectional(
        cell,
        "sum",
        return_sequences,
        backward={"go_backwards": False},
        forward_extra={"go_backwards": True},
        seed=5,
    )


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_keras3_hard_sigmoid_and_activations(cell: str) -> None:
    _run_bidirectional(
        cell,
        "concat",
        True,
        forward_extra={"recurrent_activation": "hard_sigmoid", "activation": "softsign"},
        seed=7,
    )


ACTIVATIONS = [
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "relu",
    "linear",
    "softsign",
    "elu",
    "selu",
    "softplus",
    "swish",
    "silu",
    "exponential",
    "relu6",
    "hard_silu",
    "hard_tanh",
    "mish",
    "log_sigmoid",
    "tanh_shrink",
    "gelu",
]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_functions(name: str) -> None:
    x = np.linspace(-7, 7, 281).astype(np.float32)
    expected = np.asarray(keras.activations.get(name)(x))
    np.testing.assert_allclose(get_activation(name)(x.astype(np.float64)), expected, **TOL)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_simple_rnn_activations(name: str) -> None:
    layer = keras.layers.SimpleRNN(UNITS, activation=name, return_sequences=True)
    x = probe_batch(FEATURES, seed=11, batch=BATCH, time=TIME)
    layer(x)
    _randomize(layer, 12, scale=0.3)
    expected = np.asarray(layer(x))
    k, rk, b = layer.get_weights()
    got = rnn_forward(x, k, rk, b, _cfg("SimpleRNN", layer))
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["seq", "last"])
def test_keras2_hard_sigmoid(cell: str, return_sequences: bool) -> None:
    tfk = pytest.importorskip("tf_keras")
    cls = getattr(tfk.layers, cell)
    bi = tfk.layers.Bidirectional(
        cls(UNITS, recurrent_activation="hard_sigmoid", return_sequences=return_sequences),
        merge_mode="concat",
    )
    x = probe_batch(FEATURES, seed=21, batch=BATCH, time=TIME)
    bi(x)
    # Larger weights push pre-activations past ±2.5 so the Keras 2 clip is exercised.
    _randomize(bi, 22, scale=1.5)
    expected = np.asarray(bi(x))
    fwd_cfg = _cfg(cell, bi.forward_layer, keras_major=2)
    bwd_cfg = _cfg(cell, bi.backward_layer, keras_major=2)
    got = bidirectional_forward(
        x,
        bi.forward_layer.get_weights(),
        bi.backward_layer.get_weights(),
        fwd_cfg,
        bwd_cfg,
        "concat",
        return_sequences,
    )
    np.testing.assert_allclose(got, expected, **TOL)
    # Keras 3's hard_sigmoid gives a different answer on the same weights.
    k3 = bidirectional_forward(
        x,
        bi.forward_layer.get_weights(),
        bi.backward_layer.get_weights(),
        CellConfig(**{**fwd_cfg.__dict__, "keras_major": 3}),
        CellConfig(**{**bwd_cfg.__dict__, "keras_major": 3}),
        "concat",
        return_sequences,
    )
    assert not np.allclose(k3, expected, atol=1e-4)
