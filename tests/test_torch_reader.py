"""PyTorch zip checkpoints read without torch: real files, and every way one can lie."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
from foreign_files import (
    FOREIGN,
    Call,
    Global,
    ODict,
    Raw,
    dumps,
    open_file,
    read_all,
    tensor,
    write_checkpoint,
)

from bilstm_cli.errors import InputError
from bilstm_cli.formats.base import sniff
from bilstm_cli.formats.foreign_kind import kind_of

F32 = np.arange(24, dtype="<f4")


def refused(path, match):
    with pytest.raises(InputError, match=match) as info:
        read_all(path)
    assert info.value.exit_code == 3
    assert str(path) in info.value.message and "\n" not in info.value.message
    return info.value.message


# --- real files written by torch 2.13 ---------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_bi2", "gru_bi2", "rnn_bi2", "lstm_half"])
def test_state_dict_equals_the_same_weights_in_safetensors(name):
    from_pt = read_all(FOREIGN / f"{name}.pt")
    from_st = read_all(FOREIGN / f"{name}.safetensors")
    assert set(from_pt) == set(from_st)
    assert list(from_pt)[:2] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]  # the state dict's order
    for key, value in from_pt.items():
        assert value.dtype == from_st[key].dtype and np.array_equal(value, from_st[key]), key


def test_names_shapes_and_dtypes_of_a_two_layer_bidirectional_lstm():
    f = open_file(FOREIGN / "lstm_bi2.pt")
    try:
        assert f.framework == "pytorch" and f.nodes == [] and f.notes == []
        assert f.tensors["rnn.weight_ih_l0"].shape == (16, 3)
        assert f.tensors["rnn.weight_ih_l1_reverse"].shape == (16, 8)
        assert f.tensors["rnn.bias_hh_l1_reverse"].shape == (16,)
        assert {t.dtype for t in f.tensors.values()} == {"float32"}
        assert len(f.tensors) == 16
    finally:
        f.close()


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("lstm_nobias.pt", {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l0_reverse",
                            "rnn.weight_hh_l0_reverse"}),
        ("lstm_uni.pt", {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                         "rnn.bias_hh_l0"}),
    ],
)  # fmt: skip
def test_variants_hold_exactly_their_keys(name, keys):
    assert set(read_all(FOREIGN / name)) == keys


def test_projection_weights_are_listed():
    tensors = read_all(FOREIGN / "lstm_proj.pt")
    assert tensors["rnn.weight_hr_l0"].shape == (2, 4)
    assert tensors["rnn.weight_hh_l0_reverse"].shape == (16, 2)


def test_checkpoint_dict_is_searched_and_the_rest_noted():
    f = open_file(FOREIGN / "checkpoint_gru.pth")
    try:
        assert set(f.tensors) == {
            f"rnn.{w}_l0{r}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            for r in ("", "_reverse")
        }  # fmt: skip
        assert any("'model_state_dict'" in n for n in f.notes)
        assert any("epoch" in n and "optimizer_state_dict" in n for n in f.notes)
    finally:
        f.close()


def test_kind_of_recognises_every_pytorch_fixture():
    for path in FOREIGN.glob("*.pt*"):
        assert kind_of(sniff(str(path))) == "pytorch", path.name


# --- hand-built archives: what torch writes, and what it never would ------------------------


def test_views_offsets_and_strides_are_rebuilt(tmp_path):
    base = F32.reshape(4, 6)
    obj = ODict((
        ("whole", tensor("0", 24, (4, 6))),
        ("transposed", tensor("0", 24, (6, 4), (1, 6))),
        ("window", tensor("0", 24, (3, 2), (6, 1), offset=8)),
        ("broadcast", tensor("0", 24, (3, 5), (0, 1), offset=1)),
        ("scalar", tensor("0", 24, (), (), offset=23)),
        ("empty", tensor("0", 24, (0, 3), (3, 1))),
    ))  # fmt: skip
    path = write_checkpoint(tmp_path / "views.pt", dumps(obj), {"0": F32.tobytes()})
    got = read_all(path)
    assert np.array_equal(got["whole"], base)
    assert np.array_equal(got["transposed"], base.T)
    assert np.array_equal(got["window"], base[1:, 2:4])
    assert np.array_equal(got["broadcast"], np.broadcast_to(F32[1:6], (3, 5)))
    assert got["scalar"].shape == () and got["scalar"] == 23
    assert got["empty"].shape == (0, 3)


def test_shared_storage_and_other_dtypes(tmp_path):
    halves = np.arange(6, dtype="<f2")
    bf16 = np.array([0x3F80, 0xC000, 0x7F80], dtype="<u2")  # 1.0, -2.0, inf
    obj = ODict((
        ("a", tensor("0", 24, (2, 3))),
        ("b", tensor("0", 24, (2, 3), offset=6)),
        ("h", tensor("1", 6, (6,), kind="HalfStorage")),
        ("bf", tensor("2", 3, (3,), kind="BFloat16Storage")),
        ("i", tensor("3", 2, (2,), kind="LongStorage")),
    ))  # fmt: skip
    path = write_checkpoint(
        tmp_path / "dtypes.pt", dumps(obj),
        {"0": F32.tobytes(), "1": halves.tobytes(), "2": bf16.tobytes(),
         "3": np.array([7, -1], "<i8").tobytes()},
    )  # fmt: skip
    got = read_all(path)
    assert np.array_equal(got["b"], F32[6:12].reshape(2, 3))
    assert got["h"].dtype == np.float16 and np.array_equal(got["h"], halves)
    assert got["bf"].dtype == np.float32 and list(got["bf"]) == [1.0, -2.0, np.inf]
    assert got["i"].dtype == np.int64 and list(got["i"]) == [7, -1]
    f = open_file(path)
    assert f.tensors["bf"].dtype == "bfloat16"
    f.close()


def test_big_endian_byteorder_record_is_honoured(tmp_path):
    obj = ODict((("w", tensor("0", 4, (4,))),))
    values = np.array([1.5, -2.0, 3.25, 0.0], dtype=">f4")
    path = write_checkpoint(tmp_path / "be.pt", dumps(obj), {"0": values.tobytes()})
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(name, b"big" if name.endswith("byteorder") else data)
    got = read_all(path)["w"]
    assert got.dtype == np.float32 and got.dtype.isnative and list(got) == [1.5, -2.0, 3.25, 0.0]


def test_deflated_storage_member_is_read(tmp_path):
    obj = ODict((("w", tensor("0", 24, (4, 6))),))
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", dumps(obj))
        z.writestr("archive/data/0", F32.tobytes())
    assert np.array_equal(read_all(path)["w"], F32.reshape(4, 6))


def test_harmless_metadata_becomes_a_placeholder(tmp_path):
    namespace = Call(Global("argparse", "Namespace"), ())
    obj = {"args": namespace, "state_dict": ODict((("w", tensor("0", 24, (24,))),)), "best": 0.5}
    path = write_checkpoint(tmp_path / "meta.pt", dumps(obj), {"0": F32.tobytes()})
    f = open_file(path)
    try:
        assert list(f.tensors) == ["w"]
        assert any("argparse.Namespace" in n for n in f.notes)
    finally:
        f.close()


# --- lies and damage: one line, exit 3 --------------------------------------------------------


def test_storage_shorter_than_declared(tmp_path):
    obj = ODict((("w", tensor("0", 24, (4, 6))),))
    path = write_checkpoint(tmp_path / "short.pt", dumps(obj), {"0": F32.tobytes()[:40]})
    refused(path, "storage data/0 holds 40 bytes, shorter than the 96 it declares")


def test_real_checkpoint_with_a_storage_cut_short(tmp_path):
    src = FOREIGN / "lstm_bi2.pt"
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    path = tmp_path / "cut.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(name, data[:10] if name.endswith("/data/3") else data)
    refused(path, "shorter than")


@pytest.mark.parametrize(
    ("size", "stride", "offset"),
    [((4, 6), (6, 1), 1), ((5, 6), (6, 1), 0), ((4, 6), (7, 1), 0), ((2**40, 2**40), (1, 1), 0),
     ((1,), (1,), 24)],
)  # fmt: skip
def test_tensor_reaching_past_its_storage(tmp_path, size, stride, offset):
    obj = ODict((("w", tensor("0", 24, size, stride, offset)),))
    path = write_checkpoint(tmp_path / "past.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "tensor w .* reaches past the end of its storage data/0")


def test_huge_declared_storage_is_refused_before_allocating(tmp_path):
    obj = ODict((("w", tensor("0", 2**50, (2**25, 2**25))),))
    path = write_checkpoint(tmp_path / "huge.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "shorter than the")


@pytest.mark.parametrize(
    ("size", "stride", "offset"),
    [((-1, 6), (6, 1), 0), ((4, 6), (6, -1), 0), ((4, 6), (6,), 0), ((4, 6), (6, 1), -3),
     ("x", (1,), 0), ((True,), (1,), 0)],
)  # fmt: skip
def test_impossible_tensor_geometry(tmp_path, size, stride, offset):
    obj = ODict((("w", tensor("0", 24, size, stride, offset)),))
    path = write_checkpoint(tmp_path / "odd.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "a tensor (with|of size)")


def test_missing_storage_member(tmp_path):
    obj = ODict((("w", tensor("7", 24, (24,))),))
    path = write_checkpoint(tmp_path / "missing.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "storage data/7 is missing")


def test_ten_bytes_of_an_archive_are_nothing_known(tmp_path):
    path = tmp_path / "trunc.pt"
    path.write_bytes((FOREIGN / "lstm_bi2.pt").read_bytes()[:10])
    assert kind_of(sniff(str(path))) is None


@pytest.mark.parametrize("cut", [64, 200, 3000, -30])
def test_truncated_archive(tmp_path, cut):
    data = (FOREIGN / "lstm_bi2.pt").read_bytes()
    path = tmp_path / "trunc.pt"
    path.write_bytes(data[:cut])
    # A cut archive has lost its central directory; its first member still says what it was.
    assert kind_of(sniff(str(path))) == "pytorch"
    refused(path, "damaged PyTorch archive")


def test_truncated_archive_read_as_pytorch(tmp_path):
    from bilstm_cli.formats.torch_zip import TorchTensors

    path = tmp_path / "trunc.pt"
    path.write_bytes((FOREIGN / "lstm_bi2.pt").read_bytes()[:-30])
    with pytest.raises(InputError, match="damaged PyTorch archive"):
        TorchTensors(str(path))


def test_damaged_pickle_stream(tmp_path):
    good = dumps(ODict((("w", tensor("0", 24, (24,))),)))
    for bad in (good[:-5], good[:20] + b"\xff" + good[21:], b"\x80\x02.", b"\x80\x09."):
        path = write_checkpoint(tmp_path / "bad.pt", bad, {"0": F32.tobytes()})
        with pytest.raises(InputError) as info:
            read_all(path)
        assert info.value.exit_code == 3


def test_no_tensors_at_all(tmp_path):
    path = write_checkpoint(tmp_path / "empty.pt", dumps({"epoch": 3}))
    refused(path, "holds no tensors")


def test_pre_1_6_pickle_is_refused_by_name(tmp_path):
    path = tmp_path / "old.pt"
    # What torch.save(..., _use_new_zipfile_serialization=False) starts with: its magic number.
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps({}, 2))
    assert kind_of(sniff(str(path))) == "pickle"
    refused(path, "PyTorch file from before 1.6")


def test_other_pickles_are_refused(tmp_path):
    path = tmp_path / "thing.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    refused(path, "a Python pickle, which is never loaded")


def test_torchscript_archive_is_refused(tmp_path):
    obj = ODict((("w", tensor("0", 24, (24,))),))
    path = write_checkpoint(
        tmp_path / "script.pt", dumps(obj), {"0": F32.tobytes()},
        extra={"archive/constants.pkl": dumps(()), "archive/code/__torch__.py": b""},
    )  # fmt: skip
    refused(path, "TorchScript archive")


def test_whole_model_pickle_is_refused_naming_the_class(tmp_path):
    obj = Call(Global("torch.nn.modules.rnn", "LSTM"), ())
    path = write_checkpoint(tmp_path / "model.pt", dumps(obj))
    refused(path, r"refuses global torch.nn.modules.rnn.LSTM: .*save model.state_dict\(\)")


def test_quantized_storage_is_refused(tmp_path):
    obj = ODict((("w", tensor("0", 4, (4,), kind="QInt8Storage")),))
    path = write_checkpoint(tmp_path / "q.pt", dumps(obj), {"0": b"\0" * 4})
    refused(path, "quantized tensor")


def test_two_data_pkl_records_are_ambiguous(tmp_path):
    obj = ODict((("w", tensor("0", 24, (24,))),))
    path = write_checkpoint(
        tmp_path / "two.pt", dumps(obj), {"0": F32.tobytes()}, extra={"other/data.pkl": dumps({})}
    )
    refused(path, "not one PyTorch data.pkl record but 2")


def test_storage_declared_twice_differently(tmp_path):
    obj = ODict((("a", tensor("0", 24, (24,))), ("b", tensor("0", 6, (6,), kind="LongStorage"))))
    path = write_checkpoint(tmp_path / "twice.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "declared twice")


def test_pickle_member_too_large_is_refused_before_reading(tmp_path, monkeypatch):
    from bilstm_cli.formats import torch_zip

    monkeypatch.setattr(torch_zip, "MAX_PICKLE", 64)
    obj = ODict(tuple((f"w{i}", tensor("0", 24, (24,))) for i in range(5)))
    path = write_checkpoint(tmp_path / "big.pt", dumps(obj), {"0": F32.tobytes()})
    refused(path, "larger than 64 bytes")


def test_deflated_storage_declaring_more_than_it_can_hold(tmp_path):
    import struct

    obj = ODict((("w", tensor("0", 2**28, (2**28,))),))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", dumps(obj))
        z.writestr("archive/data/0", F32.tobytes())
    # Make the central directory claim a 1 GiB member: the deflated bytes cannot hold it.
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last directory entry is data/0's
    data[entry + 24 : entry + 28] = struct.pack("<I", 2**30)
    path.write_bytes(bytes(data))
    refused(path, "more than its .* compressed bytes can hold")


def test_error_about_a_huge_or_deep_value_stays_short(tmp_path):
    deep = Raw(b"]" * 200_000 + b"a" * 199_999)  # lists nested 200 000 deep
    for size in (list(range(-1, 100_000)), deep):
        obj = ODict((("w", tensor("0", 24, size, (1,))),))  # type: ignore[arg-type]
        path = write_checkpoint(tmp_path / "odd.pt", dumps(obj), {"0": F32.tobytes()})
        message = refused(path, "a tensor with size a (list|tuple)")
        assert len(message) < 300
