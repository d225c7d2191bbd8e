"""The other-framework fixtures, written by real torch and onnx (fixtures/make_conventions.py), read
without them: their layers in the Keras convention, run by the Keras reference forward pass,
compute what torch / onnxruntime recorded (1e-5 of the output scale)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli.cells import forward as reference

FOREIGN = FIXTURES / "conventions"
OUTPUTS = np.load(FOREIGN / "outputs.npz")


def keras_run(path, x):
    """Every Bidirectional layer of the file, stacked, in Keras' semantics (concat)."""
    with bl.open_model(str(path)) as model:
        h = x
        for layer in model.layers:
            ways = [[w.read() for w in layer.direction_weights(d)] for d in ("forward", "backward")]
            cfgs = [
                reference.CellConfig(
                    s.cell,
                    s.units,
                    s.activation,
                    s.recurrent_activation,
                    s.use_bias,
                    bool(s.reset_after),
                    s.go_backwards,
                )
                for s in (layer.forward, layer.backward)
            ]
            h = reference.bidirectional_forward(h, *ways, *cfgs, "concat")
        return np.asarray(h), model


def close(expected, got):
    scale = float(np.abs(expected).max())
    assert scale > 0.05
    assert float(np.abs(expected - got).max()) <= 1e-5 * scale


@pytest.mark.parametrize(
    "name,cell,use_bias",
    [("lstm_2layer.safetensors", "LSTM", True), ("gru_nobias.npz", "GRU", False)],
)
def test_torch_files_compute_what_torch_computed(name, cell, use_bias):
    got, model = keras_run(FOREIGN / name, OUTPUTS["x"])
    assert [(x.cell, x.units, x.forward.use_bias) for x in model.layers] == [
        (cell, 3, use_bias)
    ] * 2
    close(OUTPUTS[name.split(".")[0]], got)


def test_a_unidirectional_torch_rnn_is_a_plain_layer_computing_what_torch_computed():
    with bl.open_model(str(FOREIGN / "rnn_plain.safetensors")) as model:
        assert model.layers == []
        (plain,) = model.plain_layers
        assert (plain.name, plain.settings.cell) == ("rnn.l0", "SimpleRNN")
        k, rk, b = (plain.weight(r).read() for r in ("kernel", "recurrent_kernel", "bias"))
        assert any("nonlinearity" in n for n in plain.notes)
    y = reference.rnn_forward(OUTPUTS["x"], k, rk, b, reference.CellConfig("SimpleRNN", 3))
    close(OUTPUTS["rnn_plain"], y)


def test_diff_of_a_torch_file_with_its_own_export_is_identical(tmp_path):
    src = FOREIGN / "lstm_2layer.safetensors"
    out = tmp_path / "again.npz"
    r = run_cli("export", src, "-o", out, "--map", "lstm.l0=lstm.l0", "--map", "lstm.l1=lstm.l1")
    assert r.exit_code == 0, r.stderr
    import zipfile

    from safetensors import safe_open

    names = {n.removesuffix(".npy") for n in zipfile.ZipFile(out).namelist()}
    with safe_open(str(src), framework="numpy") as f:
        assert names == set(f.keys())  # the same state dict keys, back from the Keras picture
    assert run_cli("diff", src, out).exit_code == 0
