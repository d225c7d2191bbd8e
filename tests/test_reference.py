"""NumPy reference forward pass (Keras-free checks; tests/oracle compares with Keras itself)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli.cells.forward import (
    CellConfig,
    activation_names,
    backward_config,
    bidirectional_forward,
    get_activation,
    probe_batch,
    rnn_forward,
)
from bilstm_cli.errors import InputError

FAST = settings(max_examples=20, deadline=None)


def weights(
    cell: str, units: int, features: int, seed: int = 0, use_bias: bool = True, ra: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    n = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cell]
    rng = np.random.default_rng(seed)
    k = 0.5 * rng.standard_normal((features, n * units))
    rk = 0.5 * rng.standard_normal((units, n * units))
    if not use_bias:
        return k, rk, None
    shape = (2, n * units) if cell == "GRU" and ra else (n * units,)
    return k, rk, 0.5 * rng.standard_normal(shape)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_probe_batch() -> None:
    a = probe_batch(3, seed=4, batch=2, time=5)
    assert a.shape == (2, 5, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, probe_batch(3, seed=4, batch=2, time=5))
    assert not np.array_equal(a, probe_batch(3, seed=5, batch=2, time=5))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_shapes(cell: str, return_sequences: bool) -> None:
    x = probe_batch(3, batch=2, time=4)
    cfg = CellConfig(cell, 5)
    out = rnn_forward(x, *weights(cell, 5, 3), cfg, return_sequences)
    assert out.shape == ((2, 4, 5) if return_sequences else (2, 5))
    assert out.dtype == np.float64


def test_lstm_single_step_by_hand() -> None:
    k = np.array([[0.1, 0.2, 0.3, 0.4]])
    rk = np.zeros((1, 4))
    b = np.array([0.0, 1.0, 0.0, 0.0])
    x = np.array([[[2.0]]])
    out = rnn_forward(x, k, rk, b, CellConfig("LSTM", 1))
    i, f, g, o = sig(0.2), sig(0.4 + 1.0), math.tanh(0.6), sig(0.8)
    c = f * 0.0 + i * g
    assert out[0, 0, 0] == pytest.approx(o * math.tanh(c))


def test_gru_single_step_by_hand_both_variants() -> None:
    k = np.array([[0.1, 0.2, 0.3]])
    rk = np.array([[0.5, -0.5, 0.7]])
    x = np.array([[[1.0], [2.0]]])
    b2 = np.array([[0.1, 0.2, 0.3], [0.01, 0.02, 0.03]])
    out = rnn_forward(x, k, rk, b2, CellConfig("GRU", 1, reset_after=True))
    h = 0.0
    for xt in (1.0, 2.0):
        z = sig(0.1 * xt + 0.1 + 0.5 * h + 0.01)
        r = sig(0.2 * xt + 0.2 - 0.5 * h + 0.02)
        hh = math.tanh(0.3 * xt + 0.3 + r * (0.7 * h + 0.03))
        h = z * h + (1 - z) * hh
    assert out[0, -1, 0] == pytest.approx(h)
    b1 = b2[0]
    out = rnn_forward(x, k, rk, b1, CellConfig("GRU", 1, reset_after=False))
    h = 0.0
    for xt in (1.0, 2.0):
        z = sig(0.1 * xt + 0.1 + 0.5 * h)
        r = sig(0.2 * xt + 0.2 - 0.5 * h)
        hh = math.tanh(0.3 * xt + 0.3 + (r * h) * 0.7)
        h = z * h + (1 - z) * hh
    assert out[0, -1, 0] == pytest.approx(h)


def test_simple_rnn_by_hand() -> None:
    x = np.array([[[1.0], [-1.0]]])
    out = rnn_forward(
        x, np.array([[2.0]]), np.array([[0.5]]), np.array([0.1]), CellConfig("SimpleRNN", 1)
    )
    h1 = math.tanh(2.1)
    h2 = math.tanh(-2 + 0.1 + 0.5 * h1)
    np.testing.assert_allclose(out[0, :, 0], [h1, h2])


def test_gru_variants_agree_for_one_unit_without_recurrent_bias() -> None:
    # With one unit, r*(h@U) == (r*h)@U, so both reset_after modes must agree.
    x = probe_batch(2, seed=3)
    k, rk, b = weights("GRU", 1, 2, seed=3)
    assert b is not None
    a = rnn_forward(x, k, rk, np.stack([b[0], np.zeros(3)]), CellConfig("GRU", 1))
    c = rnn_forward(x, k, rk, b[0], CellConfig("GRU", 1, reset_after=False))
    np.testing.assert_allclose(a, c, rtol=1e-12)


def test_zero_weights_give_zero_output() -> None:
    x = probe_batch(3)
    for cell, n in (("LSTM", 4), ("GRU", 3)):
        out = rnn_forward(
            x, np.zeros((3, n * 2)), np.zeros((2, n * 2)), None, CellConfig(cell, 2, use_bias=False)
        )
        assert not out.any()


@FAST
@given(
    cell=st.sampled_from(["LSTM", "GRU", "SimpleRNN"]),
    units=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    ra=st.booleans(),
    use_bias=st.booleans(),
)
def test_go_backwards_reads_reversed_input(
    cell: str, units: int, seed: int, ra: bool, use_bias: bool
) -> None:
    x = probe_batch(2, seed=seed, batch=3, time=4)
    w = weights(cell, units, 2, seed, use_bias, ra)
    cfg = CellConfig(cell, units, reset_after=ra, use_bias=use_bias)
    back = rnn_forward(x, *w, backward_config(cfg))
    np.testing.assert_allclose(back, rnn_forward(x[:, ::-1], *w, cfg), rtol=1e-12, atol=1e-15)
    # Batch rows are independent.
    one = rnn_forward(x[1:2], *w, cfg)
    np.testing.assert_allclose(one, rnn_forward(x, *w, cfg)[1:2], rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(back) < 1)


def test_merge_modes_are_consistent() -> None:
    x = probe_batch(3, seed=9)
    cfg = CellConfig("LSTM", 4)
    fwd, bwd = weights("LSTM", 4, 3, 1), weights("LSTM", 4, 3, 2)
    bcfg = backward_config(cfg)
    y, y_rev = bidirectional_forward(x, fwd, bwd, cfg, bcfg, None)
    np.testing.assert_array_equal(y, rnn_forward(x, *fwd, cfg))
    np.testing.assert_array_equal(y_rev, rnn_forward(x, *bwd, bcfg)[:, ::-1])
    cat = bidirectional_forward(x, fwd, bwd, cfg, bcfg, "concat")
    np.testing.assert_array_equal(cat, np.concatenate([y, y_rev], axis=-1))
    np.testing.assert_array_equal(bidirectional_forward(x, fwd, bwd, cfg, bcfg, "sum"), y + y_rev)
    np.testing.assert_array_equal(bidirectional_forward(x, fwd, bwd, cfg, bcfg, "mul"), y * y_rev)
    ave = bidirectional_forward(x, fwd, bwd, cfg, bcfg, "ave")
    np.testing.assert_array_equal(ave, (y + y_rev) / 2)
    last = bidirectional_forward(x, fwd, bwd, cfg, bcfg, "concat", return_sequences=False)
    # Without sequences the backward output is its last step (the first time step), unflipped.
    np.testing.assert_array_equal(last, np.concatenate([y[:, -1], y_rev[:, 0]], axis=-1))


def test_two_weight_tuples_without_bias() -> None:
    x = probe_batch(3)
    cfg = CellConfig("SimpleRNN", 2, use_bias=False)
    k, rk, _ = weights("SimpleRNN", 2, 3, use_bias=False)
    out = bidirectional_forward(x, (k, rk), (k, rk, None), cfg, backward_config(cfg), "sum")
    assert out.shape == (2, 5, 2)


def test_errors() -> None:
    x = probe_batch(3)
    cfg = CellConfig("LSTM", 2)
    k, rk, b = weights("LSTM", 2, 3)
    with pytest.raises(InputError, match="unknown activation 'bogus'"):
        rnn_forward(x, k, rk, b, CellConfig("LSTM", 2, activation="bogus"))
    with pytest.raises(InputError, match=r"expected \(3, 8\)"):
        rnn_forward(x, k[:2], rk, b, cfg)
    with pytest.raises(InputError, match="recurrent kernel"):
        rnn_forward(x, k, rk[:1], b, cfg)
    with pytest.raises(InputError, match="no bias"):
        rnn_forward(x, k, rk, None, cfg)
    with pytest.raises(InputError, match="use_bias=False"):
        rnn_forward(x, k, rk, b, CellConfig("LSTM", 2, use_bias=False))
    with pytest.raises(InputError, match="reset_after"):
        gk, grk, gb = weights("GRU", 2, 3, ra=False)
        rnn_forward(x, gk, grk, gb, CellConfig("GRU", 2, reset_after=True))
    with pytest.raises(InputError, match="batch, time"):
        rnn_forward(x[0], k, rk, b, cfg)
    with pytest.raises(InputError, match="opposite go_backwards"):
        bidirectional_forward(x, (k, rk, b), (k, rk, b), cfg, cfg, "concat")
    with pytest.raises(InputError, match="merge_mode"):
        bidirectional_forward(x, (k, rk, b), (k, rk, b), cfg, backward_config(cfg), "max")
    with pytest.raises(InputError, match="unsupported"):
        rnn_forward(x, k, rk, b, CellConfig("Dense", 2))
    with pytest.raises(InputError, match="ConvLSTM2D convolves"):
        rnn_forward(x, k, rk, b, CellConfig("ConvLSTM2D", 2))


def test_hard_sigmoid_depends_on_keras_major() -> None:
    x = np.array([-4.0, -2.6, 0.0, 1.0, 2.6, 4.0])
    np.testing.assert_allclose(
        get_activation("hard_sigmoid", 3)(x), [0, 0.4 / 6, 0.5, 4 / 6, 5.6 / 6, 1]
    )
    np.testing.assert_allclose(get_activation("hard_sigmoid", 2)(x), [0, 0, 0.5, 0.7, 1, 1])


def test_activations_are_finite_and_named() -> None:
    x = np.linspace(-50, 50, 101)
    for name in activation_names():
        y = get_activation(name)(x)
        assert y.shape == x.shape
        if name != "exponential":
            assert np.isfinite(y).all(), name
    np.testing.assert_array_equal(get_activation(None)(x), x)
    np.testing.assert_allclose(get_activation("sigmoid")(np.array([-800.0, 0, 800])), [0, 0.5, 1])
