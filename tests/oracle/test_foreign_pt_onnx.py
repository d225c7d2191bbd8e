"""PyTorch ``.pt`` and ONNX ``.onnx`` files as donors and diff partners, against torch and
onnxruntime: what Keras computes after a transplant from them is what they compute."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from oracle.test_foreign_vs_torch import close, keras_model, probe, torch_module, torch_out  # noqa: E402


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_transplant_from_a_pt_state_dict(tmp_path, kind, wrapped):
    m = torch_module(kind)
    holder = torch.nn.Module()
    holder.rnn = m
    state = holder.state_dict()
    donor = tmp_path / "donor.pt"
    torch.save({"model_state_dict": state, "epoch": 3} if wrapped else state, donor)
    target = tmp_path / "model.keras"
    keras_model(target, kind)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"]
    x = probe()
    close(torch_out(m, x), keras.saving.load_model(out)(x))
    assert run_cli("diff", out, donor, "--by", "order").exit_code == 0
    doc = run_cli("inspect", donor, "--json").json()
    assert doc["layout"] == "pytorch" and [x["name"] for x in doc["layers"]] == [
        "rnn.l0",
        "rnn.l1",
    ]


def _onnx_from_torch(m, kind, path):
    """One bidirectional ONNX node per torch layer (its first), written with onnx.helper; the
    graph is checked against torch with onnxruntime before it is used."""
    from onnx import TensorProto, helper, numpy_helper

    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    u = 3
    order = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}[kind]  # torch blocks → ONNX

    def blocks(a):
        parts = np.split(a, len(order), axis=0)
        return np.concatenate([parts[k] for k in order], axis=0)

    w = np.stack([blocks(sd[f"weight_ih_l0{s}"]) for s in ("", "_reverse")])
    r = np.stack([blocks(sd[f"weight_hh_l0{s}"]) for s in ("", "_reverse")])
    b = np.stack(
        [
            np.concatenate([blocks(sd[f"bias_ih_l0{s}"]), blocks(sd[f"bias_hh_l0{s}"])])
            for s in ("", "_reverse")
        ]
    )
    attrs = {"direction": "bidirectional", "hidden_size": u}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(kind, ["X", "W", "R", "B"], ["Y"], name="enc", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 2, 2, u])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, path)
    sess = onnxruntime.InferenceSession(str(path))
    x = probe()
    (y,) = sess.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})
    y = y.transpose(2, 0, 1, 3).reshape(2, 5, -1)
    one = getattr(torch.nn, kind)(4, u, bidirectional=True, batch_first=True)
    first = {k: v for k, v in m.state_dict().items() if k.endswith(("_l0", "_l0_reverse"))}
    one.load_state_dict(first, strict=True)
    close(torch_out(one.eval(), x), y)
    return y


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_transplant_from_an_onnx_node(tmp_path, kind):
    m = torch_module(kind)
    donor = tmp_path / "donor.onnx"
    expected = _onnx_from_torch(m, kind, donor)
    target = tmp_path / "model.keras"
    model = keras_model(target, kind, layers=1)
    assert model is not None
    out = tmp_path / "out.keras"
    r = run_cli("transplant", donor, target, "-o", out, "--by", "order", "--json")
    assert r.exit_code == 0, r.stderr
    checks = [c for c in r.json()["checks"] if c["check"] == "forward pass (onnx semantics)"]
    assert len(checks) == 2 and all(c["ok"] for c in checks)
    close(expected, keras.saving.load_model(out)(probe()))
    doc = run_cli("inspect", donor, "--json").json()
    assert doc["layout"] == "onnx" and doc["layers"][0]["name"] == "enc"


def test_onnx_clip_is_refused_by_name(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "W": rng.normal(size=(2, 12, 4)).astype(np.float32),
        "R": rng.normal(size=(2, 12, 3)).astype(np.float32),
    }
    node = helper.make_node(
        "LSTM", ["X", "W", "R"], ["Y"], direction="bidirectional", hidden_size=3, clip=2.0
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 2, 2, 3])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    path = tmp_path / "clip.onnx"
    onnx.save(helper.make_model(graph), path)
    target = tmp_path / "model.keras"
    keras_model(target, "LSTM", layers=1, use_bias=False)
    out = tmp_path / "out.keras"
    r = run_cli("transplant", path, target, "-o", out, "--by", "order")
    assert r.exit_code == 3 and "clip=2.0" in r.stderr and not out.exists()


def test_the_checkpoint_fixture_computes_what_torch_computed():
    from test_foreign_fixtures import FOREIGN, OUTPUTS, keras_run
    from test_foreign_fixtures import close as close_fixture

    got, model = keras_run(FOREIGN / "gru_checkpoint.pt", OUTPUTS["x"])
    assert [x.name for x in model.layers] == ["encoder.l0", "encoder.l1"]
    close_fixture(OUTPUTS["gru_checkpoint"], got)


def test_the_onnx_fixture_computes_what_onnxruntime_computed():
    from test_foreign_fixtures import FOREIGN, OUTPUTS, keras_run
    from test_foreign_fixtures import close as close_fixture

    got, model = keras_run(FOREIGN / "lstm_node.onnx", OUTPUTS["x"])
    assert [(x.name, x.cell) for x in model.layers] == [("enc", "LSTM")]
    close_fixture(OUTPUTS["lstm_node"], got)
