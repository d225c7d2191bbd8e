"""ONNX models: recurrent nodes and their stored weights, read as the onnx package reads them."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from foreign_files import FOREIGN, open_file, read_all

from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.formats.base import Session, sniff
from bilstm_cli.formats.foreign_kind import kind_of
from bilstm_cli.formats.tensors import open_tensors

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ONNX_FILES = ["lstm_bi.onnx", "gru_bi.onnx", "rnn_bi.onnx", "gru_lbr0.onnx"]


def refused(path, match):
    with pytest.raises(InputError, match=match) as info:
        read_all(path)
    assert info.value.exit_code == 3 and "\n" not in info.value.message
    assert str(path) in info.value.message
    return info.value.message


def initializers(path):
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("name", ONNX_FILES)
def test_weights_equal_numpy_helper(name):
    expected = initializers(FOREIGN / name)
    got = read_all(FOREIGN / name)
    assert got and set(got) <= set(expected)
    for key, value in got.items():
        assert value.dtype == expected[key].dtype and np.array_equal(value, expected[key]), key


def test_nodes_name_their_inputs_and_attributes():
    f = open_file(FOREIGN / "lstm_bi.onnx")
    try:
        assert f.framework == "onnx"
        assert [n.op_type for n in f.nodes] == ["LSTM", "LSTM"]
        first, second = f.nodes
        assert first.attributes == {"direction": "bidirectional", "hidden_size": 4}
        assert sorted(first.inputs) == ["B", "R", "W"]
        assert f.tensors[first.inputs["W"]].shape == (2, 16, 3)
        assert f.tensors[second.inputs["W"]].shape == (2, 16, 8)
        assert f.tensors[first.inputs["B"]].shape == (2, 32)
    finally:
        f.close()


@pytest.mark.parametrize(("name", "flag"), [("gru_bi.onnx", 1), ("gru_lbr0.onnx", 0)])
def test_gru_linear_before_reset_is_kept(name, flag):
    f = open_file(FOREIGN / name)
    try:
        (node,) = f.nodes
        assert node.op_type == "GRU" and node.attributes["linear_before_reset"] == flag
    finally:
        f.close()


def test_rnn_activations_are_kept():
    f = open_file(FOREIGN / "rnn_bi.onnx")
    try:
        assert f.nodes[0].attributes["activations"] == ["Tanh", "Tanh"]
    finally:
        f.close()


def test_dynamic_quantize_lstm_is_dequantized_in_its_stored_layout():
    f = open_file(FOREIGN / "lstm_dq.onnx")
    original = open_file(FOREIGN / "lstm_bi.onnx")
    try:
        assert [n.op_type for n in f.nodes] == ["DynamicQuantizeLSTM"] * 2
        assert any("dequantized" in n for n in f.notes)
        for node, plain in zip(f.nodes, original.nodes):
            for role in ("W", "R"):
                info = f.tensors[node.inputs[role]]
                assert info.dtype == "float32"
                got = f.read(node.inputs[role])
                exact = original.read(plain.inputs[role]).transpose(0, 2, 1)
                assert got.shape == exact.shape == info.shape
                scale = f.read(node.inputs[f"{role}_scale"]).reshape(-1, 1, 1)
                # int8 quantization is exact to half a step of its scale.
                assert np.all(np.abs(got - exact) <= scale / 2 + 1e-7)
            assert np.array_equal(f.read(node.inputs["B"]), original.read(plain.inputs["B"]))
    finally:
        f.close()
        original.close()


def test_kind_of_by_content_and_by_suffix(tmp_path):
    data = (FOREIGN / "gru_bi.onnx").read_bytes()
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(data)
    assert kind_of(sniff(str(renamed))) == "onnx"
    assert kind_of(sniff(str(FOREIGN / "gru_lbr0.onnx"))) == "onnx"
    text = tmp_path / "notes.onnx"
    text.write_text("hello, not a model")
    assert kind_of(sniff(str(text))) is None


def test_missing_onnx_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(UsageError) as info:
        open_tensors(str(FOREIGN / "gru_bi.onnx"), "onnx", Session())
    assert info.value.exit_code == 2
    assert info.value.message.endswith("needs the onnx package: pip install 'bilstm-cli[onnx]'")
    assert str(FOREIGN / "gru_bi.onnx") in info.value.message


# --- hostile models ---------------------------------------------------------------------------


def _save(tmp_path, nodes, inits, name="m.onnx"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _rnn(inputs=("x", "W", "R", "B")):
    return helper.make_node("RNN", list(inputs), ["y"], name="rnn", hidden_size=3)


def _weights():
    rng = np.random.default_rng(0)
    return [
        numpy_helper.from_array(rng.random((1, 3, 2), dtype=np.float32), "W"),
        numpy_helper.from_array(rng.random((1, 3, 3), dtype=np.float32), "R"),
        numpy_helper.from_array(rng.random((1, 6), dtype=np.float32), "B"),
    ]


def test_handmade_model_reads(tmp_path):
    path = _save(tmp_path, [_rnn()], _weights())
    got = read_all(path)
    assert set(got) == {"W", "R", "B"} and got["R"].shape == (1, 3, 3)


def test_weight_computed_by_the_graph(tmp_path):
    w, r, b = _weights()
    w.name = "W0"
    double = helper.make_node("Add", ["W0", "W0"], ["W"], name="double")
    path = _save(tmp_path, [double, _rnn()], [w, r, b])
    refused(path, r"RNN node 'rnn' input W \('W'\) is not stored in the file")


def test_weight_from_a_constant_node_is_read(tmp_path):
    w, r, b = _weights()
    const = helper.make_node("Constant", [], ["W"], value=w)
    path = _save(tmp_path, [const, _rnn()], [r, b])
    assert np.array_equal(read_all(path)["W"], numpy_helper.to_array(w))


def test_missing_initializer(tmp_path):
    w, r, _ = _weights()
    path = _save(tmp_path, [_rnn()], [w, r])
    refused(path, "input B .* is not stored")


def test_external_data_is_never_opened(tmp_path):
    w, r, b = _weights()
    r.ClearField("raw_data")
    r.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "/etc/passwd"), ("offset", "0"), ("length", "36")):
        r.external_data.add(key=key, value=value)
    path = _save(tmp_path, [_rnn()], [w, r, b])
    refused(path, r"tensor 'R' is stored in an external data file \(/etc/passwd\)")


@pytest.mark.parametrize(
    ("dims", "match"),
    [([1, 3, 3, 2**30], "declares dims"), ([1, 3], "declares dims"), ([2**62, 2**62], "declares")],
)
def test_dims_that_lie_about_the_data(tmp_path, dims, match):
    w, r, b = _weights()
    del r.dims[:]
    r.dims.extend(dims)
    path = _save(tmp_path, [_rnn()], [w, r, b])
    refused(path, match)


def test_typed_field_with_too_few_values(tmp_path):
    w, r, b = _weights()
    values = numpy_helper.to_array(r).ravel()[:5]
    r.ClearField("raw_data")
    r.float_data.extend(values.tolist())
    path = _save(tmp_path, [_rnn()], [w, r, b])
    refused(path, "holds 5 values, not 9")


def test_typed_fields_and_float16_bits(tmp_path):
    rng = np.random.default_rng(1)
    w = helper.make_tensor("W", TensorProto.FLOAT16, [1, 3, 2],
                           rng.random(6).astype(np.float16).view(np.uint16).tolist())  # fmt: skip
    r = helper.make_tensor("R", TensorProto.DOUBLE, [1, 3, 3], rng.random(9).tolist())
    path = _save(tmp_path, [_rnn(("x", "W", "R"))], [w, r])
    got = read_all(path)
    assert got["W"].dtype == np.float16 and np.array_equal(got["W"], numpy_helper.to_array(w))
    assert got["R"].dtype == np.float64 and np.array_equal(got["R"], numpy_helper.to_array(r))


def test_bfloat16_initializer_reads_as_float32(tmp_path):
    w, r, b = _weights()
    bits = np.array([0x3F80, 0xC040, 0x0000, 0x4000, 0xBF00, 0x3E80], dtype="<u2")
    w = helper.make_tensor("W", TensorProto.BFLOAT16, [1, 3, 2], bits.tobytes(), raw=True)
    path = _save(tmp_path, [_rnn()], [w, r, b])
    got = read_all(path)["W"]
    assert got.dtype == np.float32 and got.ravel().tolist() == [1.0, -3.0, 0.0, 2.0, -0.5, 0.25]


def test_quantized_lstm_with_scales_that_do_not_fit(tmp_path):
    rng = np.random.default_rng(2)
    q = numpy_helper.from_array(rng.integers(-5, 5, (1, 2, 12), dtype=np.int8), "W")
    rq = numpy_helper.from_array(rng.integers(-5, 5, (1, 3, 12), dtype=np.int8), "R")
    scale = numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "ws")
    zero = numpy_helper.from_array(np.zeros(3, np.int8), "wz")
    node = helper.make_node(
        "DynamicQuantizeLSTM", ["x", "W", "R", "", "", "", "", "", "ws", "wz", "ws", "wz"], ["y"],
        name="dq", domain="com.microsoft", hidden_size=3,
    )  # fmt: skip
    path = _save(tmp_path, [node], [q, rq, scale, zero])
    refused(path, "fit neither")


@pytest.mark.parametrize("data", [b"", b"\x08", b"\x08\x08\x12\xff\xff\xff\xff\x0f", b"\xff" * 64])
def test_garbage_with_the_onnx_suffix(tmp_path, data):
    path = tmp_path / "junk.onnx"
    path.write_bytes(data)
    from bilstm_cli.formats.onnx_tensors import OnnxTensors

    with pytest.raises(InputError, match="not a readable ONNX model") as info:
        OnnxTensors(str(path))
    assert info.value.exit_code == 3


def test_model_without_recurrent_nodes_has_no_tensors(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    f = open_file(_save(tmp_path, [node], _weights()))
    try:
        assert f.nodes == [] and f.tensors == {}
    finally:
        f.close()
