"""Bidirectional layers inside ``TimeDistributed``, around ``RNN(cell)``, ``StackedRNNCells`` and
unknown custom cells: listed, selected, initialized, transplanted and diffed, in every layout
Keras 3 and tf_keras write them (files in fixtures/wrappers/)."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.base import StepParams, get
from bilstm_cli.cells.stacked import bidirectional_stacked_forward, stacked_forward
from bilstm_cli.formats.weights_only import _stack_orders

WRAP = FIXTURES / "wrappers"
STACK = [("LSTM", 3, (5, 12)), ("GRU", 2, (3, 6)), ("LSTM", 2, (2, 8))]
STACKED = [
    "k3_stacked.keras",
    "k3_stacked.h5",
    "k3_stacked.weights.h5",
    "tf_stacked.keras",
    "tf_stacked.h5",
    "tf_stacked_weights.h5",
]
TD = ["k3_td.keras", "k3_td.h5", "k3_td.weights.h5", "tf_td.keras", "tf_td.h5"]
CELLS = ["k3_cells.keras", "k3_cells.h5", "k3_cells.weights.h5", "tf_cells.keras", "tf_cells.h5"]
CUSTOM = ["k3_custom.keras", "k3_custom.h5", "tf_custom.keras", "tf_custom.h5"]


def inspect(path, *args):
    run = run_cli("inspect", path, "--json", *args)
    assert run.exit_code == 0, run.stderr
    return run.json()


def values(path) -> dict[tuple[str, str, str], np.ndarray]:
    with bl.open_model(path) as model:
        return {(x.name, w.direction, w.role): w.read() for x in model.layers for w in x.weights}


@pytest.mark.parametrize("name", STACKED)
def test_stacked_cells_are_listed_one_layer_each(name):
    doc = inspect(WRAP / name)
    layers = doc["layers"]
    assert [x["name"] for x in layers] == ["bistack/0", "bistack/1", "bistack/2"]
    for layer, (cell, units, kernel) in zip(layers, STACK):
        assert (layer["cell"], layer["units"], layer["supported"]) == (cell, units, True)
        assert [w["role"] for w in layer["weights"]] == ["kernel", "recurrent_kernel", "bias"] * 2
        assert [w["direction"] for w in layer["weights"]] == ["forward"] * 3 + ["backward"] * 3
        assert tuple(layer["weights"][0]["shape"]) == kernel
        assert layer["gates"] == (["i", "f", "c", "o"] if cell == "LSTM" else ["z", "r", "h"])
        assert layer["settings"]["backward"]["go_backwards"] is True
        # Every note once: what holds for both directions is not said twice.
        assert len(layer["notes"]) == len(set(layer["notes"]))
    assert layers[1]["settings"]["forward"]["reset_after"] is True
    if not name.endswith(("weights.h5", "_weights.h5")):
        assert layers[0]["merge_mode"] == "concat"
        assert layers[0]["settings"]["forward"]["activation"] == "tanh"


def test_stacked_cells_read_the_same_in_every_layout():
    """Keras 3's .keras, legacy .h5 and weights-only files hold the same values per cell."""
    base = values(WRAP / "k3_stacked.keras")
    for other in ("k3_stacked.h5", "k3_stacked.weights.h5"):
        got = values(WRAP / other)
        assert got.keys() == base.keys()
        for key, value in base.items():
            np.testing.assert_array_equal(got[key], value)
    tf = values(WRAP / "tf_stacked.keras")
    for other in ("tf_stacked.h5", "tf_stacked_weights.h5"):
        got = values(WRAP / other)
        assert got.keys() == tf.keys()
        for key, value in tf.items():
            np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("name", TD)
def test_time_distributed_bidirectional_is_outer_inner(name):
    doc = inspect(WRAP / name)
    (layer,) = doc["layers"]
    assert (layer["name"], layer["cell"], layer["units"]) == ("td/bi", "LSTM", 3)
    for glob in ("td", "bi", "td/bi", "t*"):
        assert [x["name"] for x in inspect(WRAP / name, "--layer", glob)["layers"]] == ["td/bi"]
    run = run_cli("inspect", WRAP / name, "--layer", "nothing")
    assert run.exit_code == 2 and "td/bi" in run.stderr


@pytest.mark.parametrize("name", CELLS)
def test_rnn_cell_reads_as_the_layer_form(name):
    """RNN(LSTMCell) has the roles, gates, units and settings of LSTM; the same for GRU and
    SimpleRNN."""
    cells = inspect(WRAP / name)["layers"]
    forms = inspect(WRAP / "k3_layers.keras")["layers"]
    assert [x["name"] for x in cells] == ["bi_lstm", "bi_gru", "bi_rnn"]
    for a, b in zip(cells, forms):
        assert (a["cell"], a["units"], a["gates"]) == (b["cell"], b["units"], b["gates"])
        assert [w["role"] for w in a["weights"]] == [w["role"] for w in b["weights"]]
        assert [w["shape"] for w in a["weights"]] == [w["shape"] for w in b["weights"]]
        assert not a.get("notes") or name.endswith("weights.h5")
        if not name.endswith("weights.h5"):
            for d in ("forward", "backward"):
                assert {k: v for k, v in a["settings"][d].items()} == b["settings"][d]


@pytest.mark.parametrize("name", CUSTOM)
def test_unknown_cell_is_listed_by_position_and_refused_by_name(name, tmp_path):
    doc = inspect(WRAP / name)
    custom, ok = doc["layers"]
    assert (custom["name"], custom["cell"], custom["supported"]) == (
        "bicustom",
        "MinimalCell",
        False,
    )
    assert [w["role"] for w in custom["weights"]] == ["weight_0", "weight_1"] * 2
    assert [tuple(w["shape"]) for w in custom["weights"]] == [(5, 4), (4, 4)] * 2
    assert custom["notes"] == [
        "MinimalCell is an unknown cell; weights listed by position, roles unknown"
    ]
    assert ok["cell"] == "LSTM" and ok["supported"]
    out = tmp_path / ("out" + (".keras" if name.endswith(".keras") else ".h5"))
    run = run_cli("init", WRAP / name, "-o", out)
    assert run.exit_code == 3 and not out.exists()
    assert "'bicustom' wraps MinimalCell" in run.stderr
    run = run_cli("init", WRAP / name, "-o", out, "--layer", "bi_ok", "--seed", "1")
    assert run.exit_code == 0, run.stderr


def test_weights_only_custom_cell_says_the_reading_is_a_guess():
    (custom, _) = inspect(WRAP / "k3_custom.weights.h5")["layers"]
    notes = [n for n in custom["notes"] if "minimal_cell" in n]
    assert len(notes) == 1 and "guess" in notes[0]


@pytest.mark.parametrize("name", ["k3_stacked.keras", "tf_stacked.h5", "k3_stacked.weights.h5"])
def test_init_one_stacked_cell_changes_only_its_weights(name, tmp_path):
    out = tmp_path / ("out" + name[name.index(".") :])
    run = run_cli("init", WRAP / name, "-o", out, "--layer", "bistack/1", "--seed", "4", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"]
    before, after = values(WRAP / name), values(out)
    for key, value in before.items():
        if key[0] == "bistack/1":
            assert not np.array_equal(after[key], value), key
        else:
            np.testing.assert_array_equal(after[key], value)
    # The whole stack by its own name: every cell.
    run = run_cli("init", WRAP / name, "-o", tmp_path / ("all" + out.name), "--layer", "bistack")
    assert run.exit_code == 0, run.stderr
    assert {k[0] for k in values(tmp_path / ("all" + out.name))} == {
        f"bistack/{k}" for k in range(3)
    }


def _checks(doc, name):
    return [c for c in doc["checks"] if c["check"] == name]


@pytest.mark.parametrize("target", ["k3_stacked.keras", "k3_stacked.h5", "tf_stacked.keras"])
def test_transplant_a_whole_stack_runs_the_stack(target, tmp_path):
    donor = WRAP / "k3_stacked_donor.keras"
    out = tmp_path / ("out" + target[target.index(".") :])
    run = run_cli("transplant", donor, WRAP / target, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"]
    (whole,) = _checks(doc, "Bidirectional forward pass")
    assert whole["status"] == "passed" and whole["where"] == "bistack → bistack"
    cells = _checks(doc, "forward pass")
    assert len(cells) == 6 and all(c["status"] == "passed" for c in cells)
    got, want = values(out), values(donor)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
    assert run_cli("diff", donor, out).exit_code == 0
    assert run_cli("diff", WRAP / target, out).exit_code == 1


def test_transplant_one_stacked_cell_says_why_the_stack_is_not_run(tmp_path):
    donor = WRAP / "k3_stacked_donor.keras"
    out = tmp_path / "out.keras"
    run = run_cli(
        "transplant", donor, WRAP / "k3_stacked.keras", "-o", out, "--layer", "1", "--json"
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    (whole,) = _checks(doc, "Bidirectional forward pass")
    assert whole["status"] == "skipped" and not whole["applies"]
    assert "only cell(s) 1 of 3" in whole["detail"]
    assert [c["status"] for c in _checks(doc, "forward pass")] == ["passed", "passed"]
    assert doc["verified"]


def test_transplant_between_cell_and_layer_forms(tmp_path):
    cells, forms = WRAP / "k3_cells.keras", WRAP / "k3_layers.keras"
    for donor, target, out in (
        (forms, cells, tmp_path / "cells.keras"),
        (cells, forms, tmp_path / "forms.keras"),
        (forms, WRAP / "tf_cells.h5", tmp_path / "tf.h5"),
    ):
        run = run_cli("transplant", donor, target, "-o", out, "--json")
        assert run.exit_code == 0, run.stderr
        doc = run.json()
        assert doc["verified"]
        assert [c["status"] for c in _checks(doc, "Bidirectional forward pass")] == ["passed"] * 3
        assert run_cli("diff", donor, out).exit_code == 0


def test_map_knows_wrapped_names(tmp_path):
    out = tmp_path / "out.keras"
    run = run_cli(
        "transplant", WRAP / "tf_td.keras", WRAP / "k3_td.keras", "-o", out, "--map", "td=bi"
    )
    assert run.exit_code == 0, run.stderr
    got, want = values(out), values(WRAP / "tf_td.keras")
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    run = run_cli(
        "transplant",
        WRAP / "k3_stacked_donor.keras",
        WRAP / "k3_stacked.keras",
        "-o",
        tmp_path / "s.keras",
        "--map",
        "bistack/2/forward=bistack/2/backward",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    (whole,) = _checks(run.json(), "Bidirectional forward pass")
    assert whole["status"] == "skipped" and "one direction at a time" in whole["detail"]


def _interleaved(x, cells):
    """The stack the way Keras runs it: every cell in turn within each time step."""
    xs = np.asarray(x, dtype=np.float64)
    if cells[0][1].go_backwards:
        xs = xs[:, ::-1]
    states = [
        tuple(np.zeros((xs.shape[0], c.units)) for _ in range(get(c.cell).states)) for _, c in cells
    ]
    out = []
    for t in range(xs.shape[1]):
        h = xs[:, t]
        for k, ((kernel, rk, bias), cfg) in enumerate(cells):
            p = h @ kernel
            recurrent_bias = None
            if bias is not None and bias.ndim == 2:
                p, recurrent_bias = p + bias[0], bias[1]
            elif bias is not None:
                p = p + bias
            params = StepParams(
                rk,
                recurrent_bias,
                cfg.units,
                cfg.reset_after,
                reference.get_activation(cfg.activation),
                reference.get_activation(cfg.recurrent_activation),
            )
            states[k] = get(cfg.cell).step(p, states[k], params)
            h = states[k][0]
        out.append(h)
    return np.stack(out, axis=1)


def _random_stack(rng, go_backwards):
    cells = []
    for cell, units, (inputs, width) in STACK:
        reset_after = cell == "GRU"
        bias = rng.normal(size=(2, width) if reset_after else (width,))
        weights = (rng.normal(size=(inputs, width)), rng.normal(size=(units, width)), bias)
        cfg = reference.CellConfig(cell, units, reset_after=reset_after, go_backwards=go_backwards)
        cells.append((weights, cfg))
    return cells


@pytest.mark.parametrize("go_backwards", [False, True])
def test_stacked_forward_is_cells_in_turn_within_each_step(go_backwards):
    rng = np.random.default_rng(3)
    cells = _random_stack(rng, go_backwards)
    x = rng.normal(size=(2, 6, 5))
    np.testing.assert_allclose(stacked_forward(x, cells), _interleaved(x, cells), atol=1e-12)
    last = stacked_forward(x, cells, return_sequences=False)
    np.testing.assert_allclose(last, _interleaved(x, cells)[:, -1], atol=1e-12)


def test_bidirectional_stacked_forward_merges_like_bidirectional():
    rng = np.random.default_rng(4)
    fwd, bwd = _random_stack(rng, False), _random_stack(rng, True)
    x = rng.normal(size=(2, 4, 5))
    out = bidirectional_stacked_forward(x, fwd, bwd, "concat")
    want = np.concatenate([_interleaved(x, fwd), _interleaved(x, bwd)[:, ::-1]], axis=-1)
    np.testing.assert_allclose(out, want, atol=1e-12)
    with pytest.raises(bl.InputError):
        bidirectional_stacked_forward(x, fwd, fwd, "concat")
    mixed = [fwd[0], (fwd[1][0], replace(fwd[1][1], go_backwards=True))]
    with pytest.raises(bl.InputError):
        stacked_forward(x, mixed)


def test_stack_order_from_shapes():
    shapes = {
        "gru_cell": {"kernel": (3, 6), "recurrent_kernel": (2, 6)},
        "lstm_cell": {"kernel": (5, 12), "recurrent_kernel": (3, 12)},
        "lstm_cell_1": {"kernel": (2, 8), "recurrent_kernel": (2, 8)},
    }
    assert _stack_orders(shapes) == [["lstm_cell", "gru_cell", "lstm_cell_1"]]
    same = {
        "gru_cell": {"kernel": (4, 12), "recurrent_kernel": (4, 12)},
        "lstm_cell": {"kernel": (4, 16), "recurrent_kernel": (4, 16)},
    }
    assert len(_stack_orders(same)) == 2


def test_ambiguous_stack_order_is_said(tmp_path):
    """Two cells whose shapes fit either order: listed, with a note saying the order is a guess."""
    path = tmp_path / "amb.weights.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for sub in ("forward_layer", "backward_layer"):
            for cell, width in (("gru_cell", 12), ("lstm_cell", 16)):
                g = f.create_group(f"layers/bidirectional/{sub}/cell/cells/{cell}/vars")
                for k, shape in enumerate([(4, width), (4, width), (width,)]):
                    g.create_dataset(str(k), data=rng.normal(size=shape).astype("float32"))
    doc = inspect(path)
    assert [x["name"] for x in doc["layers"]] == ["bidirectional/0", "bidirectional/1"]
    assert any("more than one" in n for n in doc["layers"][0]["notes"])


def test_stack_whose_cells_do_not_chain_is_refused(tmp_path):
    """A configuration whose stacked cells do not fit the weights: one line, exit 3."""
    import zipfile

    src = WRAP / "k3_stacked.keras"
    out = tmp_path / "bad.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as w:
        for item in z.infolist():
            data = z.read(item)
            if item.filename == "config.json":
                conf = json.loads(data)
                bi = conf["config"]["layers"][-1]["config"]
                bi["layer"]["config"]["cell"]["config"]["cells"].pop(1)
                bi["backward_layer"]["config"]["cell"]["config"]["cells"].pop(1)
                data = json.dumps(conf).encode()
            w.writestr(item, data)
    run = run_cli("inspect", out)
    assert run.exit_code == 3
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"Error: {out}")


CUSTOM_STACK = [
    "k3_custom_stack.keras",
    "k3_custom_stack.h5",
    "k3_custom_stack.weights.h5",
    "tf_custom_stack.keras",
    "tf_custom_stack.h5",
]


@pytest.mark.parametrize("name", CUSTOM_STACK)
def test_unknown_cell_inside_a_stack(name, tmp_path):
    """StackedRNNCells([LSTMCell(3), MinimalCell(4), GRUCell(2)]): the custom cell is listed by
    position and refused; its neighbours are read and changed as usual."""
    layers = inspect(WRAP / name)["layers"]
    assert [(x["name"], x["units"], x["supported"]) for x in layers] == [
        ("mix/0", 3, True),
        ("mix/1", 4, False),
        ("mix/2", 2, True),
    ]
    assert [x["cell"] for x in layers][::2] == ["LSTM", "GRU"]
    unknown = layers[1]
    assert [w["role"] for w in unknown["weights"]] == ["weight_0", "weight_1"] * 2
    assert [n for n in unknown["notes"] if "unknown cell" in n] == [
        f"{unknown['cell']} is an unknown cell; weights listed by position, roles unknown"
    ]
    out = tmp_path / ("out" + name[name.index(".") :])
    run = run_cli("init", WRAP / name, "-o", out, "--layer", "mix")
    assert run.exit_code == 3 and "'mix/1' wraps" in run.stderr and not out.exists()
    run = run_cli("init", WRAP / name, "-o", out, "--layer", "mix/2", "--seed", "1", "--json")
    assert run.exit_code == 0, run.stderr
    before, after = values(WRAP / name), values(out)
    assert {k for k in before if not np.array_equal(before[k], after[k])} == {
        k for k in before if k[0] == "mix/2"
    }


@pytest.mark.parametrize(
    "name",
    ["k3_nested.keras", "k3_nested.h5", "k3_nested.weights.h5", "tf_nested.keras", "tf_nested.h5"],
)
def test_wrappers_inside_nested_models(name):
    """A model's name stays a path prefix; wrappers and stacks answer to their own names."""
    names = [x["name"] for x in inspect(WRAP / name)["layers"]]
    assert names == ["enc/td/bi", "enc2/bistack/0", "enc2/bistack/1"]
    for glob, want in (
        ("td", ["enc/td/bi"]),
        ("enc/td", ["enc/td/bi"]),
        ("bi", ["enc/td/bi"]),
        ("bistack", ["enc2/bistack/0", "enc2/bistack/1"]),
        ("enc2/bistack", ["enc2/bistack/0", "enc2/bistack/1"]),
    ):
        assert [x["name"] for x in inspect(WRAP / name, "--layer", glob)["layers"]] == want
    assert run_cli("inspect", WRAP / name, "--layer", "enc2").exit_code == 2


def _edited(tmp_path, src, edit):
    """A copy of the archive ``src`` whose config.json went through ``edit``."""
    import zipfile

    out = tmp_path / "edited.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as w:
        for item in z.infolist():
            data = z.read(item)
            if item.filename == "config.json":
                conf = json.loads(data)
                edit(conf["config"]["layers"][-1]["config"])
                data = json.dumps(conf).encode()
            w.writestr(item, data)
    return out


def _cells_of(bi, side="layer"):
    return bi[side]["config"]["cell"]["config"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda bi: _cells_of(bi).update(cells="x"), "a StackedRNNCells without cells"),
        (lambda bi: bi["layer"]["config"].pop("cell"), "an RNN layer without a cell class"),
        (lambda bi: _cells_of(bi, "backward_layer")["cells"].pop(), "runs 3 cells, the backward"),
        (lambda bi: _cells_of(bi)["cells"][0].update(class_name="GRUCell"), "bistack/0"),
        (lambda bi: _cells_of(bi)["cells"][1]["config"].update(units=0), "no valid 'units'"),
    ],
)
def test_bad_stack_configs_are_one_line_exit_3(tmp_path, edit, message):
    bad = _edited(tmp_path, WRAP / "k3_stacked.keras", edit)
    run = run_cli("inspect", bad)
    assert run.exit_code == 3 and run.stdout == ""
    assert run.stderr.startswith(f"Error: {bad}") and run.stderr.count("\n") == 1
    assert message in run.stderr


def test_time_distributed_around_no_layer_is_ignored(tmp_path):
    def edit(td):
        td["layer"] = "not a layer"

    run = run_cli("inspect", _edited(tmp_path, WRAP / "k3_td.keras", edit))
    assert run.exit_code == 0 and "no Bidirectional layers" in run.stdout
