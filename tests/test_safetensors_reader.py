"""safetensors and .npz files: real ones read exactly, lying headers refused in one line."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from foreign_files import FOREIGN, open_file, read_all
from safetensors.numpy import load_file, save_file

from bilstm_cli.errors import InputError
from bilstm_cli.formats.base import sniff
from bilstm_cli.formats.foreign_kind import kind_of


def refused(path, match):
    with pytest.raises(InputError, match=match) as info:
        read_all(path)
    assert info.value.exit_code == 3 and "\n" not in info.value.message
    assert str(path) in info.value.message


def write_raw(path, header, data=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# --- real files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_bi2", "gru_bi2", "rnn_bi2", "lstm_half"])
def test_equals_the_safetensors_package(name):
    path = FOREIGN / f"{name}.safetensors"
    expected = load_file(str(path))
    got = read_all(path)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key


def test_bfloat16_is_read_exactly_as_float32():
    got = read_all(FOREIGN / "lstm_bf16.safetensors")
    full = read_all(FOREIGN / "lstm_bi2.safetensors")
    for key, value in full.items():
        # torch rounds float32 to bfloat16 to nearest, ties to even, on the upper 16 bits.
        bits = value.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
        assert got[key].dtype == np.float32
        assert np.array_equal(got[key], rounded.view(np.float32)), key
    f = open_file(FOREIGN / "lstm_bf16.safetensors")
    assert {t.dtype for t in f.tensors.values()} == {"bfloat16"}
    f.close()


def test_tensors_in_file_order_and_metadata_allowed(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"b": np.ones(2, np.float32), "a": np.zeros((2, 3), np.int64)}, str(path),
              metadata={"format": "pt"})  # fmt: skip
    f = open_file(path)
    try:
        assert f.framework == "safetensors"
        assert [f.tensors[n].dtype for n in f.tensors] and set(f.tensors) == {"a", "b"}
        assert f.read("a").dtype == np.int64 and f.read("a").shape == (2, 3)
        with pytest.raises(InputError, match="no tensor 'c'"):
            f.read("c")
    finally:
        f.close()


def test_empty_and_zero_size_tensors(tmp_path):
    path = write_raw(tmp_path / "z.safetensors",
                     {"e": entry(shape=(0, 3), offsets=(0, 0)), "w": entry(offsets=(0, 8))},
                     np.array([1, 2], "<f4").tobytes())  # fmt: skip
    got = read_all(path)
    assert got["e"].shape == (0, 3) and list(got["w"]) == [1.0, 2.0]


# --- lying headers ----------------------------------------------------------------------------

DATA8 = b"\0" * 8


@pytest.mark.parametrize(
    ("header", "data", "length", "match"),
    [
        ({"w": entry()}, DATA8, 10**6, "header length 1000000 is more than the file holds"),
        ({"w": entry()}, DATA8, 2**63, "more than the file holds"),
        (b"{not json", DATA8, None, "not valid JSON"),
        (b"{\xff\xfe}", DATA8, None, "not valid JSON"),
        (b"{}", DATA8, None, "cover 0 bytes of data, the file holds 8"),
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {}}', DATA8, None,
         "appears twice"),
        (b"{" + b'"a":' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", None, "JSON|shape"),
        ({"w": entry(dtype="F7")}, DATA8, None, "unknown dtype 'F7'"),
        ({"w": entry(shape=(-2,))}, DATA8, None, "has shape"),
        ({"w": entry(shape=(True, 2))}, DATA8, None, "has shape"),
        ({"w": entry(shape=(2.0,))}, DATA8, None, "has shape"),
        ({"w": {"dtype": "F32", "shape": [2]}}, DATA8, None, "data_offsets None"),
        ({"w": entry(offsets=(8, 0))}, DATA8, None, "data_offsets"),
        ({"w": entry(offsets=(0, 8, 16))}, DATA8, None, "data_offsets"),
        ({"w": entry(shape=(3,))}, DATA8, None, "needs 12 bytes, its data_offsets span 8"),
        ({"w": entry(shape=(2**40, 2**40), offsets=(0, 8))}, DATA8, None, "needs"),
        ({"w": entry(offsets=(0, 8))}, b"\0" * 4, None, "cover 8 bytes of data, the file holds 4"),
        ({"w": entry(offsets=(0, 8))}, b"\0" * 12, None, "cover 8 bytes of data, the file holds"),
        ({"w": entry(offsets=(4, 12))}, b"\0" * 12, None, "leaves a gap"),
        ({"a": entry(), "b": entry(offsets=(4, 12))}, b"\0" * 12, None, "overlaps"),
        ({"a": entry(), "b": entry()}, DATA8, None, "overlaps"),
        ({"__metadata__": {"k": 1}, "w": entry()}, DATA8, None, "__metadata__"),
        ({"w": [1, 2]}, DATA8, None, "is not an object"),
    ],
)
def test_lying_headers_are_refused(tmp_path, header, data, length, match):
    path = write_raw(tmp_path / "lie.safetensors", header, data, length)
    refused(path, match)


def test_header_that_is_not_an_object(tmp_path):
    from bilstm_cli.formats.tensors import SafetensorsTensors

    path = write_raw(tmp_path / "list.safetensors", b"[1, 2]")
    assert kind_of(sniff(str(path))) is None  # no "{": not taken for safetensors at all
    with pytest.raises(InputError, match="not a JSON object"):
        SafetensorsTensors(str(path))


def test_file_shorter_than_its_length_field(tmp_path):
    from bilstm_cli.formats.tensors import SafetensorsTensors

    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x02\0\0")
    with pytest.raises(InputError, match="too short"):
        SafetensorsTensors(str(path))


def test_float8_is_listed_but_not_read(tmp_path):
    path = write_raw(tmp_path / "f8.safetensors", {"w": entry("F8_E4M3", (4,), (0, 4))}, b"\0" * 4)
    f = open_file(path)
    try:
        assert f.tensors["w"].dtype == "float8_e4m3fn"
        with pytest.raises(InputError, match="NumPy cannot hold"):
            f.read("w")
    finally:
        f.close()


def test_file_cut_after_opening_is_an_error_not_garbage(tmp_path):
    path = write_raw(tmp_path / "cut.safetensors", {"w": entry()}, DATA8)
    f = open_file(path)
    try:
        path.write_bytes(path.read_bytes()[:-4])
        with pytest.raises(InputError, match="ends early"):
            f.read("w")
    finally:
        f.close()


# --- .npz -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_bi2", "gru_bi2"])
def test_npz_equals_numpy(name):
    path = FOREIGN / f"{name}.npz"
    assert kind_of(sniff(str(path))) == "npz"
    got = read_all(path)
    with np.load(path, allow_pickle=False) as expected:
        assert set(got) == set(expected.files)
        for key in expected.files:
            assert np.array_equal(got[key], expected[key]), key


def test_npz_object_array_is_refused_by_name(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, fine=np.zeros(2), evil=np.array([{"a": 1}], dtype=object))
    refused(path, "member evil.npy holds pickled Python objects")


def test_npz_strings_are_skipped_with_a_note(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, w=np.ones(3, np.float32), names=np.array(["a", "b"]))
    f = open_file(path)
    try:
        assert list(f.tensors) == ["w"] and any("names" in n for n in f.notes)
    finally:
        f.close()


def test_npz_member_declaring_a_huge_shape(tmp_path):
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": (2**30, 2**30)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", np.lib.format.MAGIC_PREFIX[:0] + buf.getvalue() + b"\0" * 16)
    refused(path, "member w.npy declares .* more than the file can hold")


def test_npz_member_that_is_not_an_array(tmp_path):
    import zipfile

    path = tmp_path / "junk.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", b"definitely not numpy")
    refused(path, "is not a NumPy array")


def test_npz_deflated_member_declaring_more_than_it_can_hold(tmp_path):
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": (2**28,)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", buf.getvalue() + b"\0" * 64)
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")
    data[entry + 24 : entry + 28] = struct.pack("<I", len(buf.getvalue()) + 2**30)
    path.write_bytes(bytes(data))
    refused(path, "more than the file can hold")


def test_npz_compressed_reads(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, w=np.arange(12, dtype=np.float32).reshape(3, 4))
    assert np.array_equal(read_all(path)["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
