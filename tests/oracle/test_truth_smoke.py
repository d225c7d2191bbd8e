"""The manifest checked against Keras itself, and the oracle checked against the files."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pytest

from oracle import keras_truth as kt

ENTRIES = list(kt.manifest().values())
LOADABLE = [e for e in ENTRIES if e["loader"]]
WEIGHTS_ONLY = [e for e in ENTRIES if e["format"] == "weights.h5"]
CUDNN = [e for e in ENTRIES if e.get("converted")]
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "CuDNNLSTM": 4, "CuDNNGRU": 3}


def ids(entries):
    return [e["file"] for e in entries]


def expected_shapes(bi):
    n, u, d = GATES[bi["cell"]], bi["units"], bi["input_dim"]
    shapes = {"kernel": (d, n * u), "recurrent_kernel": (u, n * u)}
    if bi["use_bias"]:
        if bi["cell"].startswith("CuDNN"):
            shapes["bias"] = (2 * n * u,)
        elif bi["cell"] == "GRU" and bi["reset_after"]:
            shapes["bias"] = (2, n * u)
        else:
            shapes["bias"] = (n * u,)
    return shapes


@pytest.mark.parametrize("entry", LOADABLE, ids=ids(LOADABLE))
def test_manifest_agrees_with_keras(entry):
    truth = kt.bidirectional_truth(kt.FIXTURES / entry["file"])
    assert [t["name"] for t in truth] == [b["name"] for b in entry["bidirectional"]]
    for t, bi in zip(truth, entry["bidirectional"]):
        assert t["cell"] == bi["cell"]
        assert t["units"] == bi["units"]
        assert t["merge_mode"] == bi["merge_mode"]
        assert t["use_bias"] == bi["use_bias"]
        if bi["cell"] == "GRU":
            assert t["reset_after"] == bi["reset_after"]
        assert t["go_backwards"] == {"forward": False, "backward": True}
        shapes = expected_shapes(bi)
        assert set(t["weights"]) == {(d, r) for d in kt.DIRECTIONS for r in shapes}
        for (direction, role), value in t["weights"].items():
            assert value.shape == shapes[role], (bi["name"], direction, role)
            assert np.all(np.isfinite(value))
        # Fixtures hold distinct random values: the directions must differ.
        assert not np.array_equal(
            t["weights"][("forward", "kernel")], t["weights"][("backward", "kernel")]
        )


@pytest.mark.parametrize("entry", WEIGHTS_ONLY, ids=ids(WEIGHTS_ONLY))
def test_weights_only_file_holds_the_same_values(entry):
    """A weights-only fixture loads into the model it was saved from, and gives
    exactly that model's weights."""
    truth = kt.bidirectional_truth(kt.FIXTURES / entry["file"])
    source = kt.bidirectional_truth(kt.FIXTURES / entry["weights_of"])
    assert [t["name"] for t in truth] == [b["name"] for b in entry["bidirectional"]]
    for t, s in zip(truth, source):
        assert set(t["weights"]) == set(s["weights"])
        for key in t["weights"]:
            np.testing.assert_array_equal(t["weights"][key], s["weights"][key])


def test_custom_backward_layer_settings():
    truth = {t["name"]: t for t in
             kt.bidirectional_truth(kt.FIXTURES / "k3_functional_backward_nobias.keras")}
    custom = truth["bi_custom_backward"]
    assert custom["activation"] == {"forward": "tanh", "backward": "relu"}
    assert custom["recurrent_activation"] == {"forward": "sigmoid", "backward": "hard_sigmoid"}
    assert truth["bi_nobias"]["use_bias"] is False


def _h5_from(entry):
    path = kt.FIXTURES / entry["file"]
    if entry["format"] == "keras":
        with zipfile.ZipFile(path) as z:
            return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    return h5py.File(path, "r")


def _datasets(group):
    out = []
    group.visititems(lambda n, o: out.append(o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("entry", LOADABLE, ids=ids(LOADABLE))
def test_every_keras_weight_is_a_dataset_in_the_file(entry):
    """Each array Keras reports is stored bit for bit in some dataset of the file
    (values are random, so a match is no coincidence)."""
    truth = kt.bidirectional_truth(kt.FIXTURES / entry["file"])
    with _h5_from(entry) as f:
        stored = _datasets(f)
    for t in truth:
        for key, value in t["weights"].items():
            assert any(
                s.shape == value.shape and np.array_equal(s, value) for s in stored
            ), (t["name"], key)


@pytest.mark.parametrize("entry", CUDNN, ids=ids(CUDNN))
def test_cudnn_conversion_matches_committed_npz(entry):
    truth = kt.cudnn_converted_truth(kt.FIXTURES / entry["file"])
    with np.load(kt.FIXTURES / entry["converted"]["file"]) as npz:
        committed = {tuple(k.split("/")): npz[k] for k in npz.files}
    assert set(truth) == set(committed)
    for key, value in truth.items():
        np.testing.assert_array_equal(value, committed[key])
    # LSTM: the two CuDNN bias halves are summed; GRU: reshaped to (2, 3u).
    with h5py.File(kt.FIXTURES / entry["file"], "r") as f:
        config = json.loads(f.attrs["model_config"])
        cells = {}
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Bidirectional":
                cells[layer["config"]["name"]] = layer["config"]["layer"]
        for (layer, direction, role), value in truth.items():
            if role != "bias":
                continue
            inner = cells[layer]
            raw = f["model_weights"][layer][layer][f"{direction}_{inner['config']['name']}"][
                "bias:0"
            ][()]
            if inner["class_name"] == "CuDNNLSTM":
                half = raw.shape[0] // 2
                np.testing.assert_allclose(value, raw[:half] + raw[half:], rtol=1e-6)
            else:
                np.testing.assert_array_equal(value, raw.reshape(2, -1))


RUNNABLE = [
    ("k3_seq_input_lstm_concat.keras", "bidirectional"),
    ("k3_functional_mixed.keras", "my_bi"),
    ("k3_functional_nested.keras", "encoder_seq/inner_bi_lstm"),
    ("k2_functional_mixed.h5", "bi_gru_ra"),
    ("k2_nested.h5", "encoder_fn/inner_bi_gru"),
    ("k33_functional_lstm_gru.keras", "bi_gru"),
]


@pytest.mark.parametrize("file,layer", RUNNABLE, ids=[f"{f}:{n}" for f, n in RUNNABLE])
def test_run_bidirectional_shapes(file, layer):
    truth = {t["name"]: t for t in kt.bidirectional_truth(kt.FIXTURES / file)}[layer]
    input_dim = truth["weights"][("forward", "kernel")].shape[0]
    x = np.random.default_rng(0).normal(size=(2, 5, input_dim))
    out = kt.run_bidirectional(kt.FIXTURES / file, layer, x)
    u = truth["units"]
    steps = (5,) if truth["return_sequences"] else ()
    if truth["merge_mode"] is None:
        assert [o.shape for o in out] == [(2, *steps, u)] * 2
    else:
        width = 2 * u if truth["merge_mode"] == "concat" else u
        assert out.shape == (2, *steps, width)
    # Same input, same output: the oracle is deterministic.
    again = kt.run_bidirectional(kt.FIXTURES / file, layer, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))


def test_load_weights_into_raises_when_weights_are_missing(tmp_path):
    """A .keras archive whose weights file lacks the layers must not load quietly."""
    src = kt.FIXTURES / "k3_seq_input_lstm_concat.keras"
    bad = tmp_path / "missing_weights.keras"
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("vars")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            data = empty.read_bytes() if name == "model.weights.h5" else zin.read(name)
            zout.writestr(name, data)
    with pytest.raises(ValueError):
        kt.load_weights_into(bad, "keras3")
