"""The readers against the frameworks themselves: torch.load(weights_only=True), safetensors'
torch loader, onnx numpy_helper and onnxruntime, on the committed fixtures and on files
written here by torch in ways the fixtures do not cover."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foreign_files import FOREIGN, open_file, read_all  # noqa: E402

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

PT_FILES = sorted(p.name for p in FOREIGN.glob("*.pt*"))


def torch_truth(path, weights_only=True):
    loaded = torch.load(path, weights_only=weights_only, map_location="cpu")
    if "model_state_dict" in loaded:
        loaded = loaded["model_state_dict"]
    return {k: v.detach() for k, v in loaded.items()}


def as_numpy(t):
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def assert_same(got, truth):
    assert list(got) == list(truth)
    for key, value in truth.items():
        expected = as_numpy(value)
        assert got[key].dtype == expected.dtype, key
        assert got[key].shape == expected.shape, key
        assert np.array_equal(got[key], expected, equal_nan=True), key


@pytest.mark.parametrize("name", PT_FILES)
def test_committed_checkpoints_equal_torch_load(name):
    assert_same(read_all(FOREIGN / name), torch_truth(FOREIGN / name))


def test_views_shared_storages_and_dtypes_equal_torch_load(tmp_path):
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    state = {
        "transposed": base.t(),
        "window": base[1:4, 2:7],
        "every_other": base[:, ::2],
        "expanded": torch.randn(1, 5).expand(3, 5),
        "same_storage_again": base[2],
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
        "half": base.half(),
        "bf16": base.bfloat16(),
        "double": base.double(),
        "int64": torch.arange(7),
        "int8": torch.arange(-3, 3, dtype=torch.int8),
        "uint8": torch.arange(5, dtype=torch.uint8),
        "bool": base > 0,
        "uint16": torch.tensor([1, 2, 65535], dtype=torch.uint16),
        "param": torch.nn.Parameter(torch.randn(2, 3)),
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    assert_same(read_all(path), torch_truth(path))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_equal_torch_load(tmp_path, protocol):
    torch.manual_seed(protocol)
    model = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    path = tmp_path / "p.pt"
    torch.save(model.state_dict(), path, pickle_protocol=protocol)
    # torch's own weights-only loader knows protocol 2 only (no FRAME opcode); this file
    # was written just above, so its full loader is safe to use as the truth here.
    assert_same(read_all(path), torch_truth(path, weights_only=protocol == 2))


def test_nested_checkpoint_equals_torch_load(tmp_path):
    torch.manual_seed(3)
    model = torch.nn.GRU(3, 4, bidirectional=True)
    path = tmp_path / "nested.pth"
    torch.save({"meta": {"epoch": 7, "lr": [0.1, 0.01]}, "state_dict": model.state_dict()}, path)
    assert_same(read_all(path), torch.load(path, weights_only=True)["state_dict"])


@pytest.mark.parametrize("name", ["lstm_bi2", "gru_bi2", "rnn_bi2", "lstm_half", "lstm_bf16"])
def test_safetensors_equal_safetensors_torch(name):
    from safetensors.torch import load_file

    truth = load_file(str(FOREIGN / f"{name}.safetensors"))
    got = read_all(FOREIGN / f"{name}.safetensors")
    assert set(got) == set(truth)
    for key, value in truth.items():
        assert np.array_equal(got[key], as_numpy(value)), key


def test_pickles_torch_refuses_are_refused_here_too(tmp_path):
    import argparse

    from bilstm_cli.errors import InputError

    path = tmp_path / "whole.pt"
    torch.save(torch.nn.LSTM(2, 3), path)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)
    with pytest.raises(InputError, match="refuses global torch.nn.modules.rnn.LSTM"):
        read_all(path)
    # argparse.Namespace: torch refuses it; here it is harmless metadata, and noted.
    path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "model": torch.nn.GRU(2, 3).state_dict()}, path)
    f = open_file(path)
    try:
        assert len(f.tensors) == 4 and any("argparse.Namespace" in n for n in f.notes)
    finally:
        f.close()


# --- ONNX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_bi.onnx", "gru_bi.onnx", "rnn_bi.onnx", "gru_lbr0.onnx"])
def test_onnx_weights_equal_numpy_helper(name):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(FOREIGN / name))
    truth = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    got = read_all(FOREIGN / name)
    for key, value in got.items():
        assert value.dtype == truth[key].dtype and np.array_equal(value, truth[key]), key


def test_dequantized_lstm_runs_like_onnxruntimes_quantized_one():
    """onnxruntime runs the quantized model; a float LSTM given the weights this reader
    dequantized (transposed back to LSTM's layout) gives the same outputs, up to the
    error of quantizing the input on the fly."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    quantized = open_file(FOREIGN / "lstm_dq.onnx")
    model = onnx.load(str(FOREIGN / "lstm_bi.onnx"))
    try:
        by_name = {t.name: t for t in model.graph.initializer}
        plain_nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
        for node, plain in zip(quantized.nodes, plain_nodes):
            for role, index in (("W", 1), ("R", 2)):
                values = quantized.read(node.inputs[role]).transpose(0, 2, 1)
                by_name[plain.input[index]].CopyFrom(
                    numpy_helper.from_array(np.ascontiguousarray(values), plain.input[index])
                )
    finally:
        quantized.close()
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1, 3)).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    run_dq = ort.InferenceSession(str(FOREIGN / "lstm_dq.onnx"), options)
    run_float = ort.InferenceSession(model.SerializeToString(), options)
    run_exact = ort.InferenceSession(str(FOREIGN / "lstm_bi.onnx"), options)
    y_dq = run_dq.run(None, {"x": x})[0]
    y_float = run_float.run(None, {"x": x})[0]
    y_exact = run_exact.run(None, {"x": x})[0]
    assert np.abs(y_float - y_dq).max() < 0.02
    # The dequantized weights are not the original ones: the check above is not vacuous.
    assert np.abs(y_float - y_exact).max() > 0


def test_per_channel_quantized_lstm_is_dequantized_per_column(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = tmp_path / "per_channel.onnx"
    quantize_dynamic(str(FOREIGN / "lstm_bi.onnx"), str(path), op_types_to_quantize=["LSTM"],
                     per_channel=True, weight_type=QuantType.QInt8)  # fmt: skip
    quantized, original = open_file(path), open_file(FOREIGN / "lstm_bi.onnx")
    try:
        for node, plain in zip(quantized.nodes, original.nodes):
            for role in ("W", "R"):
                scale = quantized.read(node.inputs[f"{role}_scale"])
                assert scale.shape == (2, 16)  # one scale per direction and column
                got = quantized.read(node.inputs[role])
                exact = original.read(plain.inputs[role]).transpose(0, 2, 1)
                assert np.all(np.abs(got - exact) <= scale[:, None, :] / 2 + 1e-7)
    finally:
        quantized.close()
        original.close()
