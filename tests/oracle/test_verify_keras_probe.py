"""`--verify keras` runs real models: token ids for Embedding inputs, each input of a
multi-input model with its own dtype and shape, masks respected. The models are built here,
with tf-keras (Keras 2 .h5) and Keras 3 (.keras)."""

from __future__ import annotations

import pytest
from conftest import run_cli


def _verify(src, out):
    run = run_cli("init", src, "-o", out, "--seed", "1", "--verify", "keras", "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] is True
    checks = [c for c in doc["checks"] if c["check"].startswith("--verify keras")]
    names = {c["check"] for c in checks}
    assert names == {"--verify keras: weights", "--verify keras: probe batch"}
    assert all(c["ok"] for c in checks), checks
    assert out.exists()
    return checks


def test_keras2_embedding_sequential(tmp_path):
    tfk = pytest.importorskip("tf_keras")
    model = tfk.Sequential(
        [
            tfk.layers.Embedding(50, 8, input_length=6),
            tfk.layers.Bidirectional(tfk.layers.LSTM(4)),
            tfk.layers.Dense(3),
        ]
    )
    model.build((None, 6))
    src = tmp_path / "embedding.h5"
    model.save(src)
    checks = _verify(src, tmp_path / "out.h5")
    assert any("tf-keras sees the written values" in c["detail"] for c in checks)


def test_keras2_two_inputs_one_embedded(tmp_path):
    tfk = pytest.importorskip("tf_keras")
    # Declared float (the default), as many Keras 2 models did: the values must still be ids.
    tokens = tfk.Input(shape=(None,), name="tokens")
    features = tfk.Input(shape=(3,), dtype="float32", name="features")
    x = tfk.layers.Embedding(20, 6)(tokens)
    x = tfk.layers.Bidirectional(tfk.layers.LSTM(4))(x)
    y = tfk.layers.Dense(4)(features)
    out = tfk.layers.Dense(2)(tfk.layers.Concatenate()([x, y]))
    model = tfk.Model([tokens, features], out)
    src = tmp_path / "two_inputs.h5"
    model.save(src)
    _verify(src, tmp_path / "out.h5")


def test_keras3_masked_embedding_gru(tmp_path):
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("needs Keras 3")
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(30, 8, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.GRU(4)),
            keras.layers.Dense(2),
        ]
    )
    src = tmp_path / "masked.keras"
    model.save(src)
    checks = _verify(src, tmp_path / "out.keras")
    assert any("Keras sees the written values" in c["detail"] for c in checks)


def test_keras3_masking_before_rnn(tmp_path):
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("needs Keras 3")
    model = keras.Sequential(
        [
            keras.Input(shape=(7, 3)),
            keras.layers.Masking(mask_value=0.0),
            keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        ]
    )
    src = tmp_path / "masking.keras"
    model.save(src)
    _verify(src, tmp_path / "out.keras")


def test_keras3_shared_embedding_two_int_inputs(tmp_path):
    """One Embedding called on two inputs of different lengths; a float input besides."""
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("needs Keras 3")
    a = keras.Input(shape=(None,), dtype="int32", name="a")
    b = keras.Input(shape=(4,), dtype="int64", name="b")
    c = keras.Input(shape=(None, 2), name="c")
    embed = keras.layers.Embedding(12, 2)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3))(embed(a))
    y = keras.layers.Bidirectional(keras.layers.GRU(3))(embed(b))
    z = keras.layers.Bidirectional(keras.layers.SimpleRNN(3))(c)
    model = keras.Model([a, b, c], keras.layers.Concatenate()([x, y, z]))
    src = tmp_path / "shared.keras"
    model.save(src)
    _verify(src, tmp_path / "out.keras")


def test_probe_values_fit_each_input():
    """Ids within the vocabulary (above 0 where zeros mask), the declared dtypes, None
    dimensions made small; inputs no Embedding reads get normal floats."""
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("needs Keras 3")
    from bilstm_cli.ops.verify_keras import _probe

    ids = keras.Input(shape=(None,), dtype="int32")
    floats = keras.Input(shape=(3,), name="floats")
    x = keras.layers.Embedding(7, 2, mask_zero=True)(ids)
    x = keras.layers.Bidirectional(keras.layers.GRU(2))(x)
    model = keras.Model([ids, floats], keras.layers.Concatenate()([x, floats]))
    tokens, noise = _probe(model)
    assert tokens.dtype == "int32" and tokens.shape == (2, 5)
    assert tokens.min() >= 1 and tokens.max() < 7
    assert noise.dtype == "float32" and noise.shape == (2, 3) and (noise != noise.round()).any()
