"""PyTorch and onnxruntime as oracles: weights moved from real torch modules into real Keras
models compute what torch computes, and exported Keras weights loaded into torch (strict) or
run by onnxruntime compute what Keras computes (1e-5 relative to the output scale)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

REL = 1e-5
KERAS_CELLS = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}


def close(expected, got):
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    scale = float(np.abs(expected).max())
    diff = float(np.abs(expected - got).max())
    assert scale > 0.05, "a real output"
    assert diff <= REL * scale, (diff, scale)


def torch_module(kind, bias=True, seed=0):
    torch.manual_seed(seed)
    m = getattr(torch.nn, kind)(4, 3, num_layers=2, bidirectional=True, batch_first=True, bias=bias)
    with torch.no_grad():  # larger than the default init, so that mistakes show
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)
    return m.eval()


def keras_model(path, kind, units=3, layers=2, **kw):
    cls = getattr(keras.layers, KERAS_CELLS[kind])
    inp = keras.Input((5, 4))
    h = inp
    for k in range(layers):
        h = keras.layers.Bidirectional(cls(units, return_sequences=True, **kw), name=f"enc_{k}")(h)
    model = keras.Model(inp, h)
    rng = np.random.default_rng(3)
    model.set_weights(
        [rng.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    model.save(path)
    return model


def probe():
    return np.random.default_rng(11).standard_normal((2, 5, 4)).astype(np.float32)


def torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x))[0].numpy()


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("store", ["safetensors", "npz"])
def test_transplant_from_torch_computes_what_torch_computes(tmp_path, kind, store):
    m = torch_module(kind)
    donor = tmp_path / f"donor.{store}"
    state = {f"rnn.{k}": v.contiguous() for k, v in m.state_dict().items()}
    if store == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(donor))
    else:
        np.savez(donor, **{k: v.numpy() for k, v in state.items()})
    target = tmp_path / "model.keras"
    keras_model(target, kind)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["verified"]
    semantics = [c for c in doc["checks"] if c["check"] == "forward pass (pytorch semantics)"]
    assert len(semantics) == 4 and all(c["ok"] for c in semantics)
    x = probe()
    close(torch_out(m, x), keras.saving.load_model(out)(x))
    assert run_cli("diff", out, donor, "--by", "order").exit_code == 0


def test_transplant_without_bias(tmp_path):
    m = torch_module("LSTM", bias=False)
    donor = tmp_path / "donor.safetensors"
    from safetensors.torch import save_file

    save_file({f"lstm.{k}": v.contiguous() for k, v in m.state_dict().items()}, str(donor))
    target = tmp_path / "model.keras"
    keras_model(target, "LSTM", use_bias=False)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order")
    assert r.exit_code == 0, r.stderr
    x = probe()
    close(torch_out(m, x), keras.saving.load_model(out)(x))


def test_one_torch_layer_by_map(tmp_path):
    m = torch_module("GRU")
    donor = tmp_path / "donor.npz"
    np.savez(donor, **{f"gru.{k}": v.numpy() for k, v in m.state_dict().items()})
    target = tmp_path / "model.keras"
    keras_model(target, "GRU", units=3, layers=2)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--map", "gru.l1=enc_1")
    assert r.exit_code == 0, r.stderr
    layer = keras.saving.load_model(out).get_layer("enc_1")
    w_ih = m.state_dict()["weight_ih_l1"].numpy()
    r_, z, n = np.split(w_ih, 3)
    np.testing.assert_array_equal(
        layer.forward_layer.cell.kernel.numpy(), np.concatenate([z, r_, n]).T
    )


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_export_loads_strictly_into_torch_and_computes_what_keras_computes(tmp_path, kind):
    src = tmp_path / "model.keras"
    model = keras_model(src, kind)
    out = tmp_path / "m.safetensors"
    r = run_cli(
        "export", src, "-o", out, "--map", "enc_0=rnn.l0", "--map", "enc_1=rnn.l1", "--json"
    )
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"]
    from safetensors.torch import load_file

    state = {k.removeprefix("rnn."): v for k, v in load_file(str(out)).items()}
    m = getattr(torch.nn, kind)(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    m.load_state_dict(state, strict=True)
    x = probe()
    close(model(x), torch_out(m.eval(), x))


def test_export_one_layer_per_module(tmp_path):
    src = tmp_path / "model.keras"
    model = keras_model(src, "LSTM", layers=1)
    out = tmp_path / "m.npz"
    assert run_cli("export", src, "-o", out).exit_code == 0
    with np.load(out) as f:
        state = {k.removeprefix("enc_0."): torch.from_numpy(f[k]) for k in f.files}
    m = torch.nn.LSTM(4, 3, bidirectional=True, batch_first=True)
    m.load_state_dict(state, strict=True)
    x = probe()
    close(model(x), torch_out(m.eval(), x))


def onnx_run(attrs, w, r, b, x):
    """One exported layer as an ONNX node, run by onnxruntime; (batch, time, 2·units)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    attrs = dict(attrs)
    op = attrs.pop("op_type")
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")]
    inputs = ["X", "W", "R"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "B"))
        inputs.append("B")
    node = helper.make_node(op, inputs, ["Y"], **attrs)
    seq, batch = x.shape[1], x.shape[0]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, x.shape[2]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [seq, 2, batch, r.shape[2]])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(onnx_model)
    sess = onnxruntime.InferenceSession(onnx_model.SerializeToString())
    (y,) = sess.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})
    # Y: [seq, 2, batch, units] → (batch, seq, 2·units), forward then backward (concat)
    return y.transpose(2, 0, 1, 3).reshape(batch, seq, -1)


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("LSTM", {}),
        ("GRU", {}),
        ("GRU", {"reset_after": False}),
        ("RNN", {}),
        ("LSTM", {"recurrent_activation": "hard_sigmoid"}),
        ("LSTM", {"use_bias": False}),
    ],
)
def test_export_onnx_runs_in_onnxruntime_like_keras(tmp_path, kind, kw):
    src = tmp_path / "model.keras"
    model = keras_model(src, kind, layers=1, **kw)
    out = tmp_path / "m.safetensors"
    r = run_cli("export", src, "-o", out, "--layout", "onnx", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["verified"]
    from safetensors.numpy import load_file

    t = load_file(str(out))
    attrs = doc["layers"][0]["attributes"]
    x = probe()
    got = onnx_run(attrs, t["enc_0.W"], t["enc_0.R"], t.get("enc_0.B"), x)
    close(model(x), got)


def test_export_refuses_reset_after_false_for_pytorch(tmp_path):
    src = tmp_path / "model.keras"
    keras_model(src, "GRU", layers=1, reset_after=False)
    out = tmp_path / "m.safetensors"
    r = run_cli("export", src, "-o", out)
    assert r.exit_code == 3 and "reset_after" in r.stderr and r.stdout == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_export_refuses_hard_sigmoid_for_pytorch(tmp_path):
    src = tmp_path / "model.keras"
    keras_model(src, "LSTM", layers=1, recurrent_activation="hard_sigmoid")
    r = run_cli("export", src, "-o", tmp_path / "m.npz")
    assert r.exit_code == 3 and "recurrent_activation=hard_sigmoid" in r.stderr
    assert not (tmp_path / "m.npz").exists()


def test_transplant_refuses_a_donor_whose_semantics_differ(tmp_path):
    m = torch_module("GRU")
    donor = tmp_path / "donor.npz"
    np.savez(donor, **{f"gru.{k}": v.numpy() for k, v in m.state_dict().items()})
    target = tmp_path / "model.keras"
    keras_model(target, "GRU", reset_after=False)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order")
    assert r.exit_code == 3 and "reset_after" in r.stderr and not out.exists()
