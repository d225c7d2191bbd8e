"""Initialization strategies against Keras' own initializers and freshly built layers."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from bilstm_cli.stats import orthogonality_error
from bilstm_cli.strategies import WeightInfo, generate, parse_spec

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.keras

SEED = np.random.SeedSequence(99)


def ours(text: str, info: WeightInfo) -> np.ndarray:
    return generate(parse_spec(text), info, SEED).astype(np.float64)


def theirs(name: str, shape: tuple[int, ...], **kwargs: float) -> np.ndarray:
    init = keras.initializers.get({"class_name": name, "config": {"seed": 5, **kwargs}})
    return np.asarray(init(shape), dtype=np.float64)


KERNEL = WeightInfo("LSTM", "kernel", (256, 2048), 512)


@pytest.mark.parametrize(
    ("spec", "keras_name"),
    [
        ("glorot_uniform", "GlorotUniform"),
        ("glorot_normal", "GlorotNormal"),
        ("he_uniform", "HeUniform"),
        ("he_normal", "HeNormal"),
        ("lecun_uniform", "LecunUniform"),
        ("lecun_normal", "LecunNormal"),
    ],
)
def test_variance_scaling_matches_keras(spec: str, keras_name: str) -> None:
    a = ours(spec, KERNEL)
    b = theirs(keras_name, KERNEL.shape)
    # Same spread and the same hard bound (uniform limit, or the 2-sigma truncation point).
    assert a.std() == pytest.approx(b.std(), rel=0.01)
    assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=0.01)
    assert abs(a.mean()) < 5 * a.std() / math.sqrt(a.size)


def test_glorot_limit_exact() -> None:
    a = ours("glorot_uniform", KERNEL)
    b = theirs("GlorotUniform", KERNEL.shape)
    limit = math.sqrt(6 / (256 + 2048))
    assert np.abs(a).max() <= limit * (1 + 1e-6) and np.abs(b).max() <= limit * (1 + 1e-6)
    assert np.abs(a).max() > 0.999 * limit and np.abs(b).max() > 0.999 * limit


@pytest.mark.parametrize(("mean", "stddev"), [(0.0, 0.05), (1.0, 0.3)])
def test_truncated_normal_matches_keras(mean: float, stddev: float) -> None:
    a = ours(f"truncated_normal:mean={mean},stddev={stddev}", KERNEL)
    b = theirs("TruncatedNormal", KERNEL.shape, mean=mean, stddev=stddev)
    tol = 1e-6 * (abs(mean) + stddev)
    for v in (a, b):
        assert v.min() >= mean - 2 * stddev - tol and v.max() <= mean + 2 * stddev + tol
    assert a.std() == pytest.approx(b.std(), rel=0.01)
    assert a.mean() == pytest.approx(b.mean(), abs=0.01 * stddev)


def test_uniform_and_normal_match_keras() -> None:
    a = ours("uniform:-0.2,0.1", KERNEL)
    b = theirs("RandomUniform", KERNEL.shape, minval=-0.2, maxval=0.1)
    assert a.min() == pytest.approx(b.min(), abs=1e-4) and a.max() == pytest.approx(
        b.max(), abs=1e-4
    )
    assert a.std() == pytest.approx(b.std(), rel=0.01)
    a = ours("normal:0.5,0.1", KERNEL)
    b = theirs("RandomNormal", KERNEL.shape, mean=0.5, stddev=0.1)
    assert a.std() == pytest.approx(b.std(), rel=0.01)
    assert a.mean() == pytest.approx(b.mean(), abs=1e-3)


@pytest.mark.parametrize("shape", [(32, 128), (128, 32), (48, 48)])
def test_whole_matrix_orthogonal_behaves_like_keras(shape: tuple[int, int]) -> None:
    units = shape[1] // 4
    info = WeightInfo("LSTM", "recurrent_kernel" if shape[0] == units else "kernel", shape, units)
    a = ours("orthogonal:per_gate=false", info)
    b = theirs("Orthogonal", shape)
    assert orthogonality_error(a) < 1e-4 and orthogonality_error(b) < 1e-4
    block = slice(0, units)
    if shape[0] < shape[1]:
        # Wide: Keras' rows are orthonormal but a gate block's columns are not, and ours match.
        assert orthogonality_error(b[:, block]) > 0.5
        assert orthogonality_error(a[:, block]) == pytest.approx(
            orthogonality_error(b[:, block]), rel=0.3
        )
    else:
        # Tall or square: any subset of orthonormal columns stays orthonormal.
        assert orthogonality_error(a[:, block]) < 1e-4 and orthogonality_error(b[:, block]) < 1e-4
    c = ours("orthogonal", info)
    assert orthogonality_error(c[:, block]) < 1e-4


def _fresh(cell: str, units: int, **kw: object) -> list[np.ndarray]:
    layer = keras.layers.Bidirectional(getattr(keras.layers, cell)(units, **kw))
    layer(np.zeros((1, 3, 5), dtype=np.float32))
    return [np.asarray(w) for w in layer.get_weights()]


@pytest.mark.parametrize(
    ("cell", "kw"),
    [
        ("LSTM", {}),
        ("GRU", {}),
        ("GRU", {"reset_after": False}),
        ("SimpleRNN", {}),
    ],
)
def test_keras_default_matches_fresh_layer(cell: str, kw: dict[str, object]) -> None:
    units = 6
    weights = _fresh(cell, units, **kw)
    for direction in (weights[:3], weights[3:]):
        kernel, rk, bias = direction
        reset_after = bool(kw.get("reset_after", True)) if cell == "GRU" else None
        infos = [
            WeightInfo(cell, role, tuple(w.shape), units, reset_after)
            for role, w in zip(("kernel", "recurrent_kernel", "bias"), direction, strict=True)
        ]
        got = [generate(parse_spec("keras_default"), i, SEED) for i in infos]
        # Bias: exactly what Keras builds.
        np.testing.assert_array_equal(got[2], bias)
        # Kernel: the same glorot limit; recurrent kernel: orthonormal rows like Keras'.
        limit = math.sqrt(6 / sum(kernel.shape))
        assert np.abs(kernel).max() <= limit + 1e-6 and np.abs(got[0]).max() <= limit + 1e-6
        assert orthogonality_error(rk) < 1e-4 and orthogonality_error(got[1]) < 1e-4
        assert got[0].shape == kernel.shape and got[1].shape == rk.shape


def test_keras_defaults_are_what_we_claim() -> None:
    conf = keras.layers.LSTM(3).get_config()
    assert conf["unit_forget_bias"] is True
    assert conf["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert conf["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert conf["bias_initializer"]["class_name"] == "Zeros"


def test_keras2_fresh_lstm_bias_matches() -> None:
    tfk = pytest.importorskip("tf_keras")
    layer = tfk.layers.Bidirectional(tfk.layers.LSTM(4))
    layer(np.zeros((1, 3, 5), dtype=np.float32))
    bias = np.asarray(layer.get_weights()[2])
    got = generate(parse_spec("keras_default"), WeightInfo("LSTM", "bias", (16,), 4), SEED)
    np.testing.assert_array_equal(got, bias)
