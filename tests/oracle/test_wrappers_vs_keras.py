"""Oracle: wrapped, cell-form, stacked and custom-cell Bidirectional layers as Keras itself holds
and runs them. What `inspect` reads agrees with Keras' own weights; what `init` and `transplant`
write loads in Keras (safe mode) with exactly the intended values; Keras' forward pass of the
written layer agrees with the tool's NumPy reference."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.stacked import bidirectional_stacked_forward
from bilstm_cli.ops.forward_stack import cell_config
from oracle.keras_truth import to_numpy

WRAP = FIXTURES / "wrappers"
# float32 Keras against the float64 reference: rounding only.
TOLERANCE = 1e-5
CELL_FORMS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}


def _generator():
    name = "bilstm_make_wrappers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "make_wrappers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_custom: dict[str, dict] = {}


def _objects(loader: str) -> dict:
    if loader not in _custom:
        if loader == "keras3":
            import keras

            cls = _generator().custom_cell_class(keras, keras.ops.tanh)
        else:
            import tensorflow as tf
            import tf_keras

            cls = _generator().custom_cell_class(tf_keras, tf.math.tanh)
        _custom[loader] = {"MinimalCell": cls, "bilstm_wrappers>MinimalCell": cls}
    return _custom[loader]


def load(path, architecture=None, like=None):
    """The model as Keras loads it in safe mode (a weights-only file: into ``architecture``),
    by the Keras that wrote the fixture ``like`` (default: the file itself)."""
    name = (like or architecture or path).name
    loader = "tf_keras" if name.startswith("tf_") else "keras3"
    source = str(architecture or path)
    if loader == "keras3":
        import keras

        model = keras.saving.load_model(
            source, compile=False, safe_mode=True, custom_objects=_objects(loader)
        )
    else:
        import tf_keras

        model = tf_keras.models.load_model(
            source, compile=False, safe_mode=True, custom_objects=_objects(loader)
        )
    if architecture is not None:
        model.load_weights(str(path))
    return model


def bidirectionals(model, prefix=""):
    """(our name, Bidirectional layer) for each one, through TimeDistributed and nested models."""
    for layer in model.layers:
        name = prefix + layer.name
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            yield from bidirectionals(layer, name + "/")
            continue
        if type(layer).__name__ == "TimeDistributed":
            layer, name = layer.layer, f"{name}/{layer.layer.name}"
        if type(layer).__name__ == "Bidirectional":
            yield name, layer


def keras_cells(model) -> dict[tuple[str, str], object]:
    """{(our layer name, direction): Keras cell}: one per cell of a stack."""
    out = {}
    for name, layer in bidirectionals(model):
        for direction, sub in (
            ("forward", layer.forward_layer),
            ("backward", layer.backward_layer),
        ):
            cell = sub.cell
            if type(cell).__name__ == "StackedRNNCells":
                for k, c in enumerate(cell.cells):
                    out[(f"{name}/{k}", direction)] = c
            else:
                out[(name, direction)] = cell
    return out


def _var_role(variable) -> str:
    name = getattr(variable, "path", None) or variable.name
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def check_against_keras(path, model) -> None:
    """Every weight the tool reads equals Keras' variable at the same place, role and shape."""
    truth = keras_cells(model)
    with bl.open_model(path) as ours:
        seen = set()
        for layer in ours.layers:
            for direction in ("forward", "backward"):
                cell = truth[(layer.name, direction)]
                seen.add((layer.name, direction))
                mine = layer.direction_weights(direction)
                assert len(mine) == len(cell.weights)
                known = type(cell).__name__ in CELL_FORMS
                settings = layer.settings[direction]
                if known:
                    assert settings.cell == CELL_FORMS[type(cell).__name__]
                    assert settings.units == cell.units
                else:
                    assert not layer.supported
                    # A weights-only file names the class only as Keras tracks it.
                    assert settings.cell == type(cell).__name__ or not ours.config_known
                for k, (w, var) in enumerate(zip(mine, cell.weights)):
                    assert w.role == (_var_role(var) if known else f"weight_{k}")
                    np.testing.assert_array_equal(w.read(), to_numpy(var))
                    assert w.shape == tuple(var.shape)
    assert seen == set(truth)


MODEL_FILES = [
    p.name
    for p in sorted(WRAP.iterdir())
    if p.suffix in (".keras", ".h5") and "weights" not in p.name
]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_inspect_agrees_with_keras(name):
    check_against_keras(WRAP / name, load(WRAP / name))


@pytest.mark.parametrize(
    "name, architecture",
    [
        ("k3_td.weights.h5", "k3_td.keras"),
        ("k3_cells.weights.h5", "k3_cells.keras"),
        ("k3_stacked.weights.h5", "k3_stacked.keras"),
        ("tf_stacked_weights.h5", "tf_stacked.keras"),
        ("k3_custom_stack.weights.h5", "k3_custom_stack.keras"),
        ("k3_nested.weights.h5", "k3_nested.keras"),
    ],
)
def test_weights_only_inference_agrees_with_keras(name, architecture):
    check_against_keras(WRAP / name, load(WRAP / name, WRAP / architecture))


def our_forward(path, base: str, x: np.ndarray, sequences: bool = True) -> np.ndarray:
    """The tool's reference forward of the Bidirectional ``base`` (a stack: all its cells);
    ``sequences``: whether the layer returns sequences (the tool does not read it)."""
    with bl.open_model(path) as model:
        major = 2 if (model.keras_version or "3").startswith("2.") else 3
        parts = [
            x_ for x_ in model.layers if x_.name == base or (x_.stack and x_.stack.name == base)
        ]
        cells = {}
        for d in ("forward", "backward"):
            cells[d] = []
            for layer in parts:
                s = layer.settings[d]
                w = {v.role: v.read() for v in layer.direction_weights(d)}
                weights = (w["kernel"], w["recurrent_kernel"], w.get("bias"))
                cells[d].append((weights, cell_config(s, major, s.go_backwards)))
        merge = parts[0].merge_mode
        if parts[0].stack is not None:
            return bidirectional_stacked_forward(
                x, cells["forward"], cells["backward"], merge, sequences
            )
        (fw, fc), (bw, bc) = cells["forward"][0], cells["backward"][0]
        return reference.bidirectional_forward(x, fw, bw, fc, bc, merge, sequences)


def keras_forward(model, base: str, x: np.ndarray) -> np.ndarray:
    layer = dict(bidirectionals(model))[base]
    return to_numpy(layer(x))


def _written(path, before, after, changed) -> None:
    """Keras sees exactly the intended values: ``changed`` layers as the tool wrote them, the
    rest as in ``before``."""
    model = load(path, like=before)
    check_against_keras(path, model)
    old = keras_cells(load(before))
    new = keras_cells(model)
    for key, cell in new.items():
        if key[0] in changed:
            continue
        for a, b in zip(cell.weights, old[key].weights):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    return model


@pytest.mark.parametrize(
    "name", ["k3_stacked.keras", "k3_stacked.h5", "tf_stacked.keras", "tf_stacked.h5"]
)
def test_init_a_stacked_cell_loads_in_keras(name, tmp_path):
    out = tmp_path / ("out" + name[name.index(".") :])
    run = run_cli("init", WRAP / name, "-o", out, "--layer", "bistack/1", "--seed", "9")
    assert run.exit_code == 0, run.stderr
    model = _written(out, WRAP / name, out, {"bistack/1"})
    x = reference.probe_batch(5, seed=3)
    np.testing.assert_allclose(
        keras_forward(model, "bistack", x), our_forward(out, "bistack", x), atol=TOLERANCE
    )


@pytest.mark.parametrize("target", ["k3_stacked.keras", "k3_stacked.h5", "tf_stacked.h5"])
def test_transplant_a_stack_computes_what_the_donor_computes(target, tmp_path):
    donor = WRAP / "k3_stacked_donor.keras"
    out = tmp_path / ("out" + target[target.index(".") :])
    run = run_cli("transplant", donor, WRAP / target, "-o", out)
    assert run.exit_code == 0, run.stderr
    model = _written(out, WRAP / target, out, {"bistack/0", "bistack/1", "bistack/2"})
    x = reference.probe_batch(5, seed=4)
    written = keras_forward(model, "bistack", x)
    np.testing.assert_allclose(written, keras_forward(load(donor), "bistack", x), atol=TOLERANCE)
    np.testing.assert_allclose(written, our_forward(out, "bistack", x), atol=TOLERANCE)


def test_transplant_between_cell_and_layer_forms_in_keras(tmp_path):
    cells, forms = WRAP / "k3_cells.keras", WRAP / "k3_layers.keras"
    out = tmp_path / "cells.keras"
    assert run_cli("transplant", forms, cells, "-o", out).exit_code == 0
    back = tmp_path / "forms.h5"
    assert run_cli("transplant", cells, WRAP / "tf_cells.h5", "-o", back).exit_code == 0
    x = reference.probe_batch(5, seed=5, time=4)
    written, donor = load(out), load(forms)
    check_against_keras(out, written)
    check_against_keras(back, load(back, like=WRAP / "tf_cells.h5"))
    # The whole model: RNN(cell) layers holding LSTM/GRU/SimpleRNN weights compute the same.
    np.testing.assert_allclose(to_numpy(written(x)), to_numpy(donor(x)), atol=TOLERANCE)
    for base, inputs, sequences in (
        ("bi_lstm", 5, True),
        ("bi_gru", 6, True),
        ("bi_rnn", 3, False),
    ):
        xb = reference.probe_batch(inputs, seed=7)
        got = keras_forward(written, base, xb)
        np.testing.assert_allclose(got, our_forward(out, base, xb, sequences), atol=TOLERANCE)


@pytest.mark.parametrize("name", ["k3_td.keras", "k3_td.h5", "tf_td.keras", "tf_td.h5"])
def test_time_distributed_init_and_transplant_load_in_keras(name, tmp_path):
    suffix = name[name.index(".") :]
    out = tmp_path / ("init" + suffix)
    run = run_cli(
        "init",
        WRAP / name,
        "-o",
        out,
        "--layer",
        "td",
        "--init",
        "truncated_normal:stddev=0.2",
        "--init",
        "recurrent_kernel=orthogonal",
        "--seed",
        "2",
    )
    assert run.exit_code == 0, run.stderr
    model = load(out, like=WRAP / name)
    check_against_keras(out, model)
    x = reference.probe_batch(5, seed=6)
    np.testing.assert_allclose(
        keras_forward(model, "td/bi", x),
        our_forward(out, "td/bi", x, sequences=False),
        atol=TOLERANCE,
    )
    donor = WRAP / ("tf_td.keras" if name.startswith("k3") else "k3_td.keras")
    moved = tmp_path / ("moved" + suffix)
    assert run_cli("transplant", donor, WRAP / name, "-o", moved).exit_code == 0
    np.testing.assert_allclose(
        keras_forward(load(moved, like=WRAP / name), "td/bi", x),
        keras_forward(load(donor), "td/bi", x),
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("name", ["k3_custom.keras", "tf_custom.h5"])
def test_beside_a_custom_cell_keras_sees_only_the_chosen_layer_changed(name, tmp_path):
    out = tmp_path / ("out" + name[name.index(".") :])
    assert run_cli("init", WRAP / name, "-o", out, "--layer", "bi_ok", "--seed", "1").exit_code == 0
    _written(out, WRAP / name, out, {"bi_ok"})


def test_diff_agrees_with_keras_weights(tmp_path):
    out = tmp_path / "out.keras"
    assert (
        run_cli("init", WRAP / "k3_stacked.keras", "-o", out, "--layer", "bistack/2").exit_code == 0
    )
    run = run_cli("diff", WRAP / "k3_stacked.keras", out, "--json")
    assert run.exit_code == 1
    doc = run.json()
    old, new = keras_cells(load(WRAP / "k3_stacked.keras")), keras_cells(load(out))
    for layer in doc["layers"]:
        for w in layer["weights"]:
            k = ("kernel", "recurrent_kernel", "bias").index(w["role"])
            a = to_numpy(old[(layer["name"], w["direction"])].weights[k])
            b = to_numpy(new[(layer["name"], w["direction"])].weights[k])
            assert w["equal"] == bool(np.array_equal(a, b))


@pytest.mark.parametrize(
    "name, layer",
    [("k3_stacked.keras", "bistack/1"), ("tf_stacked.h5", "bistack"), ("k3_td.h5", "td")],
)
def test_verify_keras_compares_every_cell(name, layer, tmp_path):
    """`--verify keras` finds the tool's layers in what Keras loads: through TimeDistributed
    and one per cell of a stack, every weight compared."""
    out = tmp_path / ("out" + name[name.index(".") :])
    run = run_cli(
        "init",
        WRAP / name,
        "-o",
        out,
        "--layer",
        layer,
        "--seed",
        "1",
        "--verify",
        "keras",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    (weights,) = [c for c in doc["checks"] if c["check"] == "--verify keras: weights"]
    with bl.open_model(WRAP / name) as model:
        total = sum(len(x.weights) for x in model.layers)
    assert weights["status"] == "passed" and f"in {total} weights" in weights["detail"]
