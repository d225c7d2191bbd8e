"""Oracle: Keras 3 loads the sharded weights and model folders the tool wrote and sees exactly
the intended values (changed weights as written, every other variable as it was), and the
tool's picture of these files (roles, cells, units) is Keras' own."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from oracle.keras_truth import describe, iter_bidirectionals

SHARDED = FIXTURES / "sharded"
ARCHIVE = SHARDED / "bi.keras"
LISTS = SHARDED / "bi.weights.json"
STRINGS = SHARDED / "k310.weights.json"
FOLDER = SHARDED / "bi_dir"


def fresh_model():
    """The fixtures' architecture with every variable zeroed, so that loaded values show."""
    model = keras.saving.load_model(ARCHIVE, compile=False)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    return model


def keras_view(path):
    if path.is_dir():
        return keras.saving.load_model(path, compile=False)
    model = fresh_model()
    model.load_weights(path)
    return model


def ours(path) -> dict[tuple[str, str, str], np.ndarray]:
    with bl.open_model(str(path)) as model:
        return {
            (layer.name, w.direction, w.role): w.read()
            for layer in model.layers
            for w in layer.weights
        }


def keras_weights(model) -> dict[tuple[str, str, str], np.ndarray]:
    out = {}
    for name, layer in iter_bidirectionals(model):
        for (direction, role), value in describe(name, layer)["weights"].items():
            out[(name, direction, role)] = value
    return out


@pytest.mark.parametrize("path", [LISTS, STRINGS, FOLDER], ids=["lists", "strings", "folder"])
def test_inspect_agrees_with_keras(path):
    model = keras_view(path)
    truth = [describe(name, layer) for name, layer in iter_bidirectionals(model)]
    with bl.open_model(str(path)) as mine:
        assert [(x.name, x.cell, x.units) for x in mine.layers] == [
            (t["name"], t["cell"], t["units"]) for t in truth
        ]
        for layer, t in zip(mine.layers, truth):
            assert layer.forward.reset_after == t["reset_after"]
            assert layer.forward.use_bias == t["use_bias"]
            assert {(w.direction, w.role) for w in layer.weights} == set(t["weights"])
            for w in layer.weights:
                np.testing.assert_array_equal(w.read(), t["weights"][(w.direction, w.role)])


def _head(model) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.get_layer("head").get_weights()]


@pytest.mark.parametrize("source", [LISTS, STRINGS, FOLDER], ids=["lists", "strings", "folder"])
def test_keras_loads_what_init_wrote(tmp_path, source):
    out = tmp_path / ("out" if source.is_dir() else "out.weights.json")
    run = run_cli(
        "init", source, "-o", out, "--layer", "bi_lstm", "--seed", "5",
        "--init", "kernel=zeros", "--init", "recurrent_kernel=orthogonal",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    before, intended = ours(source), ours(out)
    loaded = keras_view(out)
    seen = keras_weights(loaded)
    assert set(seen) == set(intended) == set(before)
    for key, value in intended.items():
        np.testing.assert_array_equal(seen[key], value)
        name, _, role = key
        if name == "bi_lstm" and role == "kernel":
            assert not value.any()
        elif name == "bi_lstm" and role == "recurrent_kernel":
            assert not np.array_equal(value, before[key])
        else:
            np.testing.assert_array_equal(value, before[key])
    original = keras.saving.load_model(ARCHIVE, compile=False)
    for a, b in zip(_head(loaded), _head(original)):
        np.testing.assert_array_equal(a, b)


def test_keras_loads_a_transplant_into_sharded_weights(tmp_path):
    donor = tmp_path / "donor"
    assert run_cli("init", FOLDER, "-o", donor, "--init", "bias=ones").exit_code == 0
    out = tmp_path / "t.weights.json"
    run = run_cli("transplant", donor, LISTS, "-o", out, "--layer", "bi_gru")
    assert run.exit_code == 0, run.stderr
    loaded, truth = keras_view(out), keras_weights(keras_view(donor))
    original = ours(LISTS)
    for key, value in keras_weights(loaded).items():
        expected = truth[key] if key[0] == "bi_gru" else original[key]
        np.testing.assert_array_equal(value, expected)


def test_verify_keras_on_a_written_folder(tmp_path):
    out = tmp_path / "v"
    run = run_cli(
        "init", FOLDER, "-o", out, "--init", "kernel=zeros", "--verify", "keras", "--json"
    )
    assert run.exit_code == 0, run.stderr
    checks = {c["check"]: c for c in run.json()["checks"]}
    assert checks["--verify keras: weights"]["status"] == "passed"
    assert checks["--verify keras: probe batch"]["status"] == "passed"
