"""Oracle: the figures ``check`` judges by come from the weights Keras itself holds, and its
gate activations are the ones Keras 2 and Keras 3 compute."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

import bilstm_cli as bl
from bilstm_cli.health.rules import gate_probability
from oracle.keras_truth import bidirectional_truth

FILES = ["check/trained_lstm_gru.keras", "check/trained_lstm_gru.h5", "k2_trained_adam.h5"]
GATES = {"LSTM": ("i", "f", "c", "o"), "GRU": ("z", "r", "h")}


@pytest.mark.parametrize("name", FILES)
def test_recurrent_figures_match_keras_weights(name):
    path = str(FIXTURES / name)
    result = bl.check(path)
    assert result.ok
    blocks = {(b["layer"], b["direction"], b["role"], b["gate"]): b for b in result.blocks}
    for layer, want in zip(result.layers, bidirectional_truth(path)):
        units, gates = want["units"], GATES[want["cell"]]
        for direction in ("forward", "backward"):
            r = want["weights"][(direction, "recurrent_kernel")].astype(np.float64)
            for k, gate in enumerate(gates):
                block = r[:, k * units : (k + 1) * units]
                got = blocks[(layer, direction, "recurrent_kernel", gate)]
                assert got["max_singular"] == pytest.approx(np.linalg.norm(block, 2), rel=1e-9)
                radius = np.max(np.abs(np.linalg.eigvals(block)))
                assert got["spectral_radius"] == pytest.approx(radius, rel=1e-9)
            b = want["weights"][(direction, "bias")].astype(np.float64)
            b = b.sum(axis=0) if b.ndim == 2 else b
            forget = b[units : 2 * units] if want["cell"] == "LSTM" else b[:units]
            tau = 1.0 / (1.0 - 1.0 / (1.0 + np.exp(-forget)))
            got = blocks[(layer, direction, "bias", "f" if want["cell"] == "LSTM" else "z")]
            assert got["timescale_median"] == pytest.approx(np.median(tau), rel=1e-9)


def test_hard_sigmoid_of_each_keras_major():
    import keras
    import tensorflow as tf
    import tf_keras

    x = np.linspace(-8, 8, 161).astype(np.float32)
    k3 = np.asarray(keras.activations.hard_sigmoid(x), dtype=np.float64)
    k2 = np.asarray(tf_keras.activations.hard_sigmoid(tf.constant(x)), dtype=np.float64)
    assert not np.allclose(k2, k3)  # the two really differ
    np.testing.assert_allclose(
        gate_probability(x.astype(np.float64), "hard_sigmoid", 3), k3, atol=1e-6
    )
    np.testing.assert_allclose(
        gate_probability(x.astype(np.float64), "hard_sigmoid", 2), k2, atol=1e-6
    )
    sig = np.asarray(keras.activations.sigmoid(x), dtype=np.float64)
    np.testing.assert_allclose(gate_probability(x.astype(np.float64), "sigmoid", 3), sig, atol=1e-6)
