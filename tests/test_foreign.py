"""Other frameworks' conventions and files, without any framework: conversions, the NumPy
forward pass in PyTorch and ONNX semantics, PyTorch/ONNX/Keras-named tensors in .npz and
.safetensors read as models, transplant from them, diff against them, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, run_cli
from safetensors.numpy import save_file

import bilstm_cli as bl
from bilstm_cli.cells import convention
from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.framework_forward import onnx_forward, pytorch_forward
from bilstm_cli.formats.foreign_layout import interpret
from bilstm_cli.formats.tensors import RnnNode, TensorInfo

BLOCKS = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
TORCH_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}


def torch_state(cell, units, inputs, layers=2, bidirectional=True, seed=0, bias=True, module="rnn"):
    """A state dict as nn.LSTM/GRU/RNN names it, with random values (no torch needed)."""
    rng = np.random.default_rng(seed)
    g = BLOCKS[cell] * units
    out = {}
    for k in range(layers):
        n_in = inputs if k == 0 else units * (2 if bidirectional else 1)
        for sfx in ("", "_reverse") if bidirectional else ("",):
            out[f"{module}.weight_ih_l{k}{sfx}"] = rng.normal(size=(g, n_in)).astype(np.float32)
            out[f"{module}.weight_hh_l{k}{sfx}"] = rng.normal(size=(g, units)).astype(np.float32)
            if bias:
                out[f"{module}.bias_ih_l{k}{sfx}"] = rng.normal(size=g).astype(np.float32)
                out[f"{module}.bias_hh_l{k}{sfx}"] = rng.normal(size=g).astype(np.float32)
    return out


# --- conventions -------------------------------------------------------------------------------


def test_onnx_lstm_blocks_are_i_o_f_c_and_pytorch_gru_r_z_n():
    u = 2
    keras = np.concatenate([np.full((1, u), k, np.float32) for k in range(4)], axis=1)  # i f c o
    onnx = convention.kernel_from_keras("onnx", "LSTM", keras, u)
    assert onnx[::u, 0].tolist() == [0, 3, 1, 2]  # i, o, f, c
    torch_lstm = convention.kernel_from_keras("pytorch", "LSTM", keras, u)
    assert torch_lstm[::u, 0].tolist() == [0, 1, 2, 3]  # i, f, g, o: Keras' own order
    gru = np.concatenate([np.full((1, u), k, np.float32) for k in range(3)], axis=1)  # z r h
    assert convention.kernel_from_keras("pytorch", "GRU", gru, u)[::u, 0].tolist() == [1, 0, 2]
    assert convention.kernel_from_keras("onnx", "GRU", gru, u)[::u, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("framework", ["pytorch", "onnx"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
def test_conversions_round_trip_exactly(framework, cell):
    rng = np.random.default_rng(1)
    u, n = 3, 5
    kernel = rng.normal(size=(n, BLOCKS[cell] * u)).astype(np.float32)
    back = convention.kernel_to_keras(
        framework, cell, convention.kernel_from_keras(framework, cell, kernel, u), u
    )
    assert back.tobytes() == kernel.tobytes()
    bias = rng.normal(size=(2, BLOCKS[cell] * u) if cell == "GRU" else BLOCKS[cell] * u)
    bias = bias.astype(np.float32)
    ih, hh = convention.bias_from_keras(framework, cell, bias, u)
    again = convention.bias_to_keras(framework, cell, ih, hh, u)
    assert again.tobytes() == bias.tobytes()
    if cell != "GRU":
        assert not hh.any()  # Keras → other: the whole bias is the input bias


def test_pytorch_refuses_gru_reset_after_false_by_name():
    assert "reset_after=False" in convention.pytorch_refusal("GRU", False)
    assert convention.pytorch_refusal("GRU", True) is None


# --- the forward pass in each framework's semantics ----------------------------------------------


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("reverse", [False, True])
def test_pytorch_semantics_match_keras_after_conversion(cell, reverse):
    state = torch_state(cell, 3, 4, layers=1, bidirectional=False)
    t = {k.split(".")[1].rsplit("_l", 1)[0]: v for k, v in state.items()}
    x = reference.probe_batch(4, seed=3, time=6)
    y_torch = pytorch_forward(
        x, cell, t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"], reverse=reverse
    )
    cfg = reference.CellConfig(cell, 3, go_backwards=reverse, reset_after=True)
    y_keras = reference.rnn_forward(
        x,
        convention.kernel_to_keras("pytorch", cell, t["weight_ih"], 3),
        convention.kernel_to_keras("pytorch", cell, t["weight_hh"], 3),
        convention.bias_to_keras("pytorch", cell, t["bias_ih"], t["bias_hh"], 3),
        cfg,
    )
    if reverse:
        y_keras = y_keras[:, ::-1]
    np.testing.assert_allclose(y_torch, y_keras, rtol=0, atol=1e-6)
    assert np.abs(y_torch).max() > 0.1  # a real output, not zeros


@pytest.mark.parametrize("lbr", [0, 1])
def test_onnx_gru_linear_before_reset_is_keras_reset_after(lbr):
    rng = np.random.default_rng(4)
    u, n = 3, 4
    w = rng.normal(size=(3 * u, n))
    r = rng.normal(size=(3 * u, u))
    b = rng.normal(size=6 * u)
    x = reference.probe_batch(n, seed=5)
    y = onnx_forward(x, "GRU", w, r, b, linear_before_reset=lbr)
    bias = convention.bias_to_keras("onnx", "GRU", b[: 3 * u], b[3 * u :], u, bool(lbr))
    cfg = reference.CellConfig("GRU", u, reset_after=bool(lbr))
    k = convention.kernel_to_keras("onnx", "GRU", w, u)
    rk = convention.kernel_to_keras("onnx", "GRU", r, u)
    np.testing.assert_allclose(y, reference.rnn_forward(x, k, rk, bias, cfg), atol=1e-12)
    other = onnx_forward(x, "GRU", w, r, b, linear_before_reset=1 - lbr)
    assert np.abs(other - y).max() > 1e-3  # the attribute matters


def test_onnx_clip_and_input_forget_change_the_lstm():
    rng = np.random.default_rng(6)
    u, n = 2, 3
    w, r, b = rng.normal(size=(8, n)) * 3, rng.normal(size=(8, u)) * 3, rng.normal(size=16)
    x = reference.probe_batch(n, seed=7)
    plain = onnx_forward(x, "LSTM", w, r, b)
    assert np.abs(onnx_forward(x, "LSTM", w, r, b, clip=0.5) - plain).max() > 1e-3
    np.testing.assert_array_equal(onnx_forward(x, "LSTM", w, r, b, clip=1e9), plain)
    assert np.abs(onnx_forward(x, "LSTM", w, r, b, input_forget=1) - plain).max() > 1e-3


def test_hard_sigmoid_keras_2_and_3_differ():
    x = np.array([-3.0, -1.0, 0.0, 1.0, 2.0])
    k2 = reference.get_activation("hard_sigmoid", 2)(x)
    k3 = reference.get_activation("hard_sigmoid", 3)(x)
    np.testing.assert_allclose(k2, np.clip(0.2 * x + 0.5, 0, 1))
    np.testing.assert_allclose(k3, np.clip(x / 6 + 0.5, 0, 1))


# --- files of named tensors as models ----------------------------------------------------------


@pytest.fixture(params=["safetensors", "npz"])
def gru_file(request, tmp_path):
    state = torch_state("GRU", 3, 4)
    path = tmp_path / f"gru.{request.param}"
    if request.param == "npz":
        np.savez(path, **state)
    else:
        save_file(state, str(path))
    return path, state


def test_pytorch_layers_are_module_l_k_in_the_keras_convention(gru_file):
    path, state = gru_file
    with bl.open_model(str(path)) as model:
        assert model.layout == "pytorch"
        assert [(x.name, x.cell, x.units) for x in model.layers] == [
            ("rnn.l0", "GRU", 3),
            ("rnn.l1", "GRU", 3),
        ]
        layer = model.layers[1]
        assert layer.forward.reset_after is True and layer.backward.go_backwards
        kernel = layer.weight("backward", "kernel")
        assert kernel.shape == (6, 9) and kernel.location == "rnn.weight_ih_l1_reverse"
        expected = convention.kernel_to_keras(
            "pytorch", "GRU", state["rnn.weight_ih_l1_reverse"], 3
        )
        np.testing.assert_array_equal(kernel.read(), expected)
        bias = layer.weight("forward", "bias").read()
        assert bias.shape == (2, 9)  # reset_after=True: input row, recurrent row
        np.testing.assert_array_equal(bias[1, :3], state["rnn.bias_hh_l1"][3:6])  # z block


def test_inspect_says_which_layout(gru_file):
    path, _ = gru_file
    doc = run_cli("inspect", path, "--json").json()
    assert doc["layout"] == "pytorch" and doc["format"] in ("safetensors", "npz")
    assert "PyTorch state dict" in doc["notes"][0]
    text = run_cli("inspect", path)
    assert text.exit_code == 0 and "pytorch layout" in text.stdout.splitlines()[0]


def test_keras_files_have_no_layout_key():
    doc = run_cli("inspect", FIXTURES / "k2_seq_lstm.h5", "--json").json()
    assert "layout" not in doc


def test_unidirectional_is_a_plain_layer_and_proj_size_is_listed(tmp_path):
    state = torch_state("LSTM", 3, 4, layers=1, bidirectional=False, module="lm")
    state["lm.weight_hh_l0"] = state["lm.weight_hh_l0"][:, :2].copy()  # proj_size 2
    state["lm.weight_hr_l0"] = np.ones((2, 3), np.float32)
    path = tmp_path / "proj.safetensors"
    save_file(state, str(path))
    with bl.open_model(str(path)) as model:
        assert model.layers == []
        (plain,) = model.plain_layers
        assert (plain.name, plain.settings.cell, plain.settings.units) == ("lm.l0", "LSTM", 3)
        assert any("proj_size=2" in n for n in plain.notes)
    out = tmp_path / "out.keras"
    r = run_cli(
        "transplant",
        path,
        FIXTURES / "k3_seq_input_lstm_concat.keras",
        "-o",
        out,
        "--map",
        "lm.l0=bidirectional/forward",
    )
    assert r.exit_code == 3 and "proj_size=2" in r.stderr and not out.exists()


def test_init_on_a_foreign_file_points_to_export(gru_file, tmp_path):
    path, _ = gru_file
    r = run_cli("init", path, "-o", tmp_path / "x.keras")
    assert r.exit_code == 3 and "read-only" in r.stderr and "bilstm export" in r.stderr
    assert r.stdout == ""


# --- transplant and diff across frameworks -------------------------------------------------------


def test_transplant_from_pytorch_names_is_checked_in_pytorch_semantics(tmp_path):
    state = torch_state("LSTM", 3, 4, layers=1)
    donor = tmp_path / "donor.safetensors"
    save_file(state, str(donor))
    out = tmp_path / "out.keras"
    target = FIXTURES / "k3_seq_input_lstm_concat.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    checks = [c for c in doc["checks"] if c["check"] == "forward pass (pytorch semantics)"]
    assert len(checks) == 2 and all(c["ok"] for c in checks)
    assert all("tolerance" in c["detail"] for c in checks)
    assert doc["verified"]
    d = run_cli("diff", out, donor, "--by", "order", "--json")
    assert d.exit_code == 0 and d.json()["identical"]
    assert "Keras convention" in d.json()["layers"][0]["notes"][0]


def test_transplant_refuses_reset_after_false_target(tmp_path):
    donor = tmp_path / "gru.npz"
    np.savez(donor, **torch_state("GRU", 3, 4, layers=1))
    out = tmp_path / "out.h5"
    r = run_cli(
        "transplant",
        donor,
        FIXTURES / "k2_functional_mixed.h5",
        "-o",
        out,
        "--map",
        "rnn.l0=bi_gru_nora",
    )
    assert r.exit_code == 3 and "reset_after" in r.stderr and not out.exists()


# --- ONNX nodes (a TensorFile picture, as the ONNX reader gives it) -------------------------------


class FakeOnnx:
    framework = "onnx"
    path = "fake.onnx"

    def __init__(self, arrays, nodes):
        self.arrays = arrays
        self.tensors = {k: TensorInfo(k, v.shape, v.dtype.name) for k, v in arrays.items()}
        self.nodes = nodes
        self.notes = []

    def read(self, name):
        return self.arrays[name]

    def close(self):
        pass


def _onnx_lstm(direction="bidirectional", **attrs):
    d = 2 if direction in ("bidirectional", b"bidirectional") else 1
    rng = np.random.default_rng(8)
    arrays = {
        "W": rng.normal(size=(d, 8, 3)).astype(np.float32),
        "R": rng.normal(size=(d, 8, 2)).astype(np.float32),
        "B": rng.normal(size=(d, 16)).astype(np.float32),
    }
    node = RnnNode(
        "enc",
        "LSTM",
        {"direction": direction, "hidden_size": 2, **attrs},
        {"W": "W", "R": "R", "B": "B"},
    )
    return FakeOnnx(arrays, [node])


def test_onnx_bidirectional_node_is_a_layer_with_reordered_blocks():
    tf = _onnx_lstm()
    found = interpret(tf)
    (layer,) = found.layers
    assert (layer.name, layer.cell, layer.units, layer.refusals) == ("enc", "LSTM", 2, [])
    kernel = found.recipes[layer.weight("backward", "kernel").location].build(tf.read)
    expected = convention.kernel_to_keras("onnx", "LSTM", tf.arrays["W"][1], 2)
    np.testing.assert_array_equal(kernel, expected)
    bias = found.recipes["B[0]"].build(tf.read)
    b = tf.arrays["B"][0]
    np.testing.assert_array_equal(
        bias, convention.reorder(b[:8] + b[8:], "LSTM", 2, "onnx", "keras", 0)
    )


def test_onnx_stored_initial_state_is_refused_by_name():
    tf = _onnx_lstm()
    tf.arrays["h0"] = np.ones((2, 1, 2), np.float32)
    tf.nodes = [
        RnnNode("enc", "LSTM", tf.nodes[0].attributes, {**tf.nodes[0].inputs, "initial_h": "h0"})
    ]
    (layer,) = interpret(tf).layers
    assert any(r.startswith("initial_h") for r in layer.refusals) and not layer.supported


def test_onnx_attributes_as_bytes_are_read():
    found = interpret(_onnx_lstm(b"reverse", activations=[b"Sigmoid", b"Tanh", b"Tanh"]))
    (plain,) = found.plain
    assert plain.settings.go_backwards and plain.refusals == []


def test_onnx_forward_node_is_plain_and_clip_is_refused_by_name():
    found = interpret(_onnx_lstm("forward", clip=3.0, activations=["Sigmoid", "Tanh", "Relu"]))
    (plain,) = found.plain
    assert any(r.startswith("clip=3.0") for r in plain.refusals)
    assert any("activations (Tanh, Relu)" in r for r in plain.refusals)


# --- export ------------------------------------------------------------------------------------


def test_export_pytorch_layout_names_and_values(tmp_path):
    out = tmp_path / "m.safetensors"
    r = run_cli("export", FIXTURES / "k2_seq_lstm.h5", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["verified"] and doc["layout"] == "pytorch"
    names = [t["name"] for t in doc["tensors"]]
    suffixes = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert names == [f"bidirectional.{s}" for s in suffixes] + [
        f"bidirectional.{s}_reverse" for s in suffixes
    ]
    assert {c["check"] for c in doc["checks"]} == {
        "written tensors read back",
        "forward pass (pytorch semantics)",
        "forward pass (Keras convention, read back)",
    }
    from safetensors.numpy import load_file

    got = load_file(str(out))
    with bl.open_model(str(FIXTURES / "k2_seq_lstm.h5")) as model:
        layer = model.layers[0]
        kernel = layer.weight("forward", "kernel").read()
        bias = layer.weight("backward", "bias").read()
    np.testing.assert_array_equal(got["bidirectional.weight_ih_l0"], kernel.T)
    np.testing.assert_array_equal(got["bidirectional.bias_ih_l0_reverse"], bias)
    assert not got["bidirectional.bias_hh_l0_reverse"].any()
    assert run_cli("diff", FIXTURES / "k2_seq_lstm.h5", out, "--by", "order").exit_code == 0


@pytest.mark.parametrize("layout,suffix", [("keras", "npz"), ("onnx", "safetensors")])
def test_export_other_layouts_read_back_identical(tmp_path, layout, suffix):
    """Both GRU layers (reset_after True and False) go to ONNX; the attributes recorded in
    the safetensors metadata let the file be read back as it was meant."""
    src = FIXTURES / "k2_functional_mixed.h5"
    out = tmp_path / f"m.{suffix}"
    r = run_cli("export", src, "-o", out, "--layout", layout, "--layer", "bi_gru*", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"]
    d = run_cli("diff", src, out, "--by", "order", "--layer", "bi_gru*", "--json")
    assert d.json()["identical"], d.stdout


def test_export_refuses_reset_after_false_for_pytorch(tmp_path):
    out = tmp_path / "m.safetensors"
    r = run_cli("export", FIXTURES / "k2_functional_mixed.h5", "-o", out, "--layer", "bi_gru_nora")
    assert r.exit_code == 3 and "reset_after" in r.stderr and "bi_gru_nora" in r.stderr
    assert not out.exists() and r.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_backward_layer_unlike_the_forward_one(tmp_path):
    out = tmp_path / "m.npz"
    r = run_cli(
        "export",
        FIXTURES / "k2_functional_mixed.h5",
        "-o",
        out,
        "--layer",
        "bi_lstm_custom_backward",
        "--layout",
        "onnx",
    )
    assert r.exit_code == 3 and "backward_layer" in r.stderr and "activation" in r.stderr
    assert not out.exists()


def test_export_map_stacks_layers_into_one_module(tmp_path):
    src = FIXTURES / "k2_nested.h5"
    out = tmp_path / "m.safetensors"
    r = run_cli(
        "export",
        src,
        "-o",
        out,
        "--layer",
        "encoder_fn/inner_bi_gru",
        "--layer",
        "top_bi",
        "--map",
        "inner_bi_gru=gru.l0",
        "--map",
        "top_bi=gru.l1",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    names = [t["name"] for t in r.json()["tensors"]]
    assert "gru.weight_ih_l1_reverse" in names and all(n.startswith("gru.") for n in names)
    bad = run_cli(
        "export", src, "-o", tmp_path / "x.npz", "--map", "top_bi=gru.l1", "--layer", "top_bi"
    )
    assert bad.exit_code == 2 and "l0..l0" in bad.stderr


def test_export_output_rules(tmp_path):
    src = FIXTURES / "k2_seq_lstm.h5"
    out = tmp_path / "m.npz"
    out.write_bytes(b"keep")
    r = run_cli("export", src, "-o", out)
    assert r.exit_code == 4 and "--force" in r.stderr and out.read_bytes() == b"keep"
    assert run_cli("export", src, "-o", out, "--force").exit_code == 0
    assert run_cli("export", src, "-o", tmp_path / "m.h5").exit_code == 4


def test_a_wrong_conversion_fails_verification_and_writes_nothing(tmp_path, monkeypatch):
    from bilstm_cli.ops import export_names

    def no_reorder(framework, cell, kernel, units):
        return np.ascontiguousarray(kernel.T)  # blocks left in Keras' order: wrong for ONNX

    monkeypatch.setattr(export_names.convention, "kernel_from_keras", no_reorder)
    out = tmp_path / "m.safetensors"
    r = run_cli("export", FIXTURES / "k2_seq_lstm.h5", "-o", out, "--layout", "onnx")
    assert r.exit_code == 1 and "forward pass (onnx semantics)" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_library_export_result_matches_json(tmp_path):
    result = bl.export(str(FIXTURES / "k2_seq_lstm.h5"), str(tmp_path / "a.npz"), layout="keras")
    r = run_cli(
        "export",
        FIXTURES / "k2_seq_lstm.h5",
        "-o",
        tmp_path / "b.npz",
        "--layout",
        "keras",
        "--json",
    )
    doc, lib = r.json(), result.to_dict()
    for key in ("layout", "verified", "layers", "tensors", "notes"):
        assert doc[key] == lib[key]
    assert json.dumps(lib)  # plain JSON


@pytest.mark.parametrize("name", ["cudnn_seq_lstm", "cudnn_functional_gru_lstm"])
def test_export_of_cudnn_layers_is_what_tf_keras_converts_them_to(tmp_path, name):
    out = tmp_path / "k.npz"
    r = run_cli("export", FIXTURES / f"{name}.h5", "-o", out, "--layout", "keras")
    assert r.exit_code == 0, r.stderr
    expected = np.load(FIXTURES / f"{name}.converted.npz")
    got = np.load(out)
    assert sorted(got.files) == sorted(expected.files)
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-7)
    assert run_cli("export", FIXTURES / f"{name}.h5", "-o", tmp_path / "t.npz").exit_code == 0


def test_export_has_help():
    r = run_cli("export", "--help")
    assert r.exit_code == 0 and "--layout" in r.stdout and "load_state_dict" in r.stdout


def test_sigterm_during_export_leaves_nothing(tmp_path, monkeypatch):
    import os
    import signal

    from bilstm_cli.ops import export as export_op

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(export_op, "_read_back", killed)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        bl.export(str(FIXTURES / "k2_seq_lstm.h5"), str(tmp_path / "m.safetensors"))
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_dynamically_quantized_lstm_reads_as_its_float_original_within_one_step():
    """DynamicQuantizeLSTM holds int8 W and R, transposed, with a scale per direction: read in
    the Keras convention they equal the float model's weights to within one quantization step."""
    foreign = FIXTURES / "foreign"
    with bl.open_model(str(foreign / "lstm_bi.onnx")) as plain:
        expected = [(w.role, w.read()) for w in plain.layers[0].weights]
    with bl.open_model(str(foreign / "lstm_dq.onnx")) as quantized:
        got = [(w.role, w.read()) for w in quantized.layers[0].weights]
    assert [r for r, _ in got] == [r for r, _ in expected]
    for (role, a), (_, b) in zip(got, expected):
        assert a.shape == b.shape
        step = 1.0 / 127 if role != "bias" else 0.0  # |weights| < 1: scale at most 1/127
        np.testing.assert_allclose(a, b, atol=step, rtol=0)
        if role != "bias":
            assert not np.array_equal(a, b)  # quantized, not a copy of the float weights
