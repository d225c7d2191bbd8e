"""Builders of files that declare far more than they hold, for the resource-bound tests and
for measuring the hostile cases at full size (``python tests/hostile.py DIR``).

Every builder keeps what it writes to disk small, whatever the file declares: the
unallocated weights are chunked datasets whose chunks are never written, the decompression
bomb deflates zeros ~1000:1, the many-layer model repeats one tiny layer.
"""

from __future__ import annotations

import copy
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
LEGACY = FIXTURES / "k2_seq_lstm.h5"  # one Bidirectional(LSTM(3)) on 4 features
KERAS = FIXTURES / "k3_seq_input_lstm_concat.keras"


def unallocated_h5(dst: Path, rows: int = 31_250_000, units: int = 8) -> Path:
    """A legacy ``.h5`` whose two LSTM kernels declare ``(rows, 4*units)`` float32, chunked,
    with no chunk ever written; the config agrees with those shapes. A few KB on disk."""
    with h5py.File(LEGACY, "r") as src:
        config = json.loads(src.attrs["model_config"])
    for layer in config["config"]["layers"]:
        cfg = layer["config"]
        if "batch_input_shape" in cfg:
            cfg["batch_input_shape"] = [None, 5, rows]
        if layer["class_name"] == "Bidirectional":
            cfg["layer"]["config"]["units"] = units
    dst.write_bytes(LEGACY.read_bytes())
    with h5py.File(dst, "r+") as f:
        f.attrs["model_config"] = json.dumps(config)
        base = "model_weights/bidirectional/bidirectional"
        for direction in ("forward_lstm", "backward_lstm"):
            cell = f"{base}/{direction}/lstm_cell"
            for name in ("kernel:0", "recurrent_kernel:0", "bias:0"):
                del f[f"{cell}/{name}"]
            f.create_dataset(
                f"{cell}/kernel:0", shape=(rows, 4 * units), dtype="f4", chunks=(1024, 4 * units)
            )
            f[f"{cell}/recurrent_kernel:0"] = np.zeros((units, 4 * units), np.float32)
            f[f"{cell}/bias:0"] = np.zeros((4 * units,), np.float32)
        dense = "model_weights/dense/dense/kernel:0"
        del f[dense]
        f[dense] = np.zeros((2 * units, 2), np.float32)
    return dst


def partly_written_h5(dst: Path) -> Path:
    """The fixture with its forward kernel rewritten chunked (one row a chunk) and one of its
    chunks never written: the file declares more than it stores."""
    dst.write_bytes(LEGACY.read_bytes())
    with h5py.File(dst, "r+") as f:
        path = "model_weights/bidirectional/bidirectional/forward_lstm/lstm_cell/kernel:0"
        values = f[path][()]
        del f[path]
        ds = f.create_dataset(path, shape=values.shape, dtype=values.dtype, chunks=(1, 12))
        ds[1:] = values[1:]
    return dst


def chunked_h5(dst: Path, compression: str | None = "gzip") -> Path:
    """The fixture with every weight rewritten chunked (and compressed), every chunk written:
    a file that must be read as usual."""
    dst.write_bytes(LEGACY.read_bytes())
    with h5py.File(dst, "r+") as f:
        for direction in ("forward_lstm", "backward_lstm"):
            cell = f"model_weights/bidirectional/bidirectional/{direction}/lstm_cell"
            for name in ("kernel:0", "recurrent_kernel:0", "bias:0"):
                values = f[f"{cell}/{name}"][()]
                del f[f"{cell}/{name}"]
                f.create_dataset(
                    f"{cell}/{name}", data=values, chunks=(1,) * values.ndim,
                    compression=compression,
                )
    return dst


def _members(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(i, z.read(i)) for i in z.infolist()]


def _zip(dst: Path, members: list[tuple[str, bytes, int]]) -> None:
    with zipfile.ZipFile(dst, "w") as z:
        for name, data, compression in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            z.writestr(info, data, compresslevel=9 if compression else None)


def declare_end(data: bytes, end: int) -> bytes:
    """HDF5 bytes whose (version 0) superblock declares ``end`` as the end of the file."""
    assert data[8] == 0, "the fixture's superblock is not version 0"
    size = data[13]
    at = 24 + 2 * size
    return data[:at] + end.to_bytes(size, "little") + data[at + size :]


def deflate_bomb_keras(dst: Path, padding: int = 8 * 1024**3, end: int | None = None) -> Path:
    """A ``.keras`` archive whose deflated ``model.weights.h5`` is the real weights file
    followed by ``padding`` zero bytes: it inflates ~1000:1, far beyond what the config's
    weights need. With ``end``, its superblock claims the file ends there (so only the
    configuration can tell). Streamed, so building it needs no memory."""
    members = _members(KERAS)
    with zipfile.ZipFile(dst, "w") as z:
        for info, data in members:
            out = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            if info.filename != "model.weights.h5":
                out.compress_type = zipfile.ZIP_STORED
                z.writestr(out, data)
                continue
            out.compress_type = zipfile.ZIP_DEFLATED
            with z.open(out, "w", force_zip64=True) as w:
                w.write(data if end is None else declare_end(data, end))
                block = bytes(1 << 20)
                left = padding
                while left > 0:
                    w.write(block[: min(left, len(block))])
                    left -= len(block)
    return dst


def deflated_keras(dst: Path) -> Path:
    """The fixture re-zipped with every member deflated: honest, must read as usual."""
    _zip(dst, [(i.filename, d, zipfile.ZIP_DEFLATED) for i, d in _members(KERAS)])
    return dst


def many_layers_keras(dst: Path, count: int = 5000) -> Path:
    """A ``.keras`` archive with ``count`` copies of the fixture's Bidirectional layer, one
    after another, each with its own tiny weights."""
    members = dict((i.filename, d) for i, d in _members(KERAS))
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    bi = next(x for x in layers if x["class_name"] == "Bidirectional")
    head = [x for x in layers if x["class_name"] == "InputLayer"]
    new_layers: list[Any] = list(head)
    tmp = dst.with_suffix(".weights.tmp.h5")
    with h5py.File(tmp, "w") as out:
        for k in range(count):
            layer = copy.deepcopy(bi)
            layer["config"]["name"] = f"bi_{k}"
            layer["config"]["layer"]["config"]["return_sequences"] = True
            new_layers.append(layer)
            group = "layers/bidirectional" + (f"_{k}" if k else "")
            for direction in ("forward_layer", "backward_layer"):
                vars_ = out.create_group(f"{group}/{direction}/cell/vars")
                units = layer["config"]["layer"]["config"]["units"]
                inputs = 2 * units if k else _input_dim(head, bi)
                vars_["0"] = np.zeros((inputs, 4 * units), np.float32)
                vars_["1"] = np.zeros((units, 4 * units), np.float32)
                vars_["2"] = np.zeros((4 * units,), np.float32)
    config["config"]["layers"] = new_layers
    weights = tmp.read_bytes()
    tmp.unlink()
    _zip(
        dst,
        [
            ("metadata.json", members["metadata.json"], zipfile.ZIP_STORED),
            ("config.json", json.dumps(config).encode(), zipfile.ZIP_STORED),
            ("model.weights.h5", weights, zipfile.ZIP_STORED),
        ],
    )
    return dst


def _input_dim(head: list[Any], bi: Any) -> int:
    for entry in [*head, bi]:
        shape = entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
        if shape:
            return int(shape[-1])
    raise ValueError("no input shape in the fixture")


def byte_swapped_h5(dst: Path) -> Path:
    """The fixture with every Bidirectional weight stored big-endian, same values."""
    dst.write_bytes(LEGACY.read_bytes())
    with h5py.File(dst, "r+") as f:
        for direction in ("forward_lstm", "backward_lstm"):
            cell = f"model_weights/bidirectional/bidirectional/{direction}/lstm_cell"
            for name in ("kernel:0", "recurrent_kernel:0", "bias:0"):
                values = f[f"{cell}/{name}"][()]
                del f[f"{cell}/{name}"]
                f.create_dataset(f"{cell}/{name}", data=values.astype(">f4"))
    return dst


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/hostile")
    out.mkdir(parents=True, exist_ok=True)
    print(unallocated_h5(out / "unallocated.h5"))
    print(deflate_bomb_keras(out / "bomb.keras"))
    print(many_layers_keras(out / "many.keras"))
