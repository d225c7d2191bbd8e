"""Named tensors in other frameworks' files: what a file holds, by name, read on demand.

A PyTorch state dict, a safetensors file, a NumPy ``.npz`` of arrays and an ONNX model's
initializers are all, to this tool, a :class:`TensorFile`: tensor names with shapes and dtypes,
values read one at a time, and (ONNX only) the recurrent nodes that use them. How the tensors
of one layer become a Keras-convention :class:`~bilstm_cli.model.Layer` is not decided here.

:func:`kind_of` says which framework's file a probe is (or ``None``); :func:`open_tensors`
opens it. Nothing in a file is ever imported or executed: ``.npz`` members are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bilstm_cli.errors import InputError
from bilstm_cli.formats.base import Probe, Session

#: The largest safetensors header read (the format's own limit is 100 MB).
MAX_SAFETENSORS_HEADER = 100 << 20


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: its name, shape and dtype (a NumPy dtype name, or ``bfloat16``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class RnnNode:
    """A recurrent node of an ONNX graph (``LSTM``, ``GRU``, ``RNN``, ``DynamicQuantizeLSTM``).

    ``inputs`` maps the operator's input names (``W``, ``R``, ``B``, and for the quantized
    operator its scales and zero points) to tensor names in :attr:`TensorFile.tensors`;
    ``attributes`` holds the node's attributes as Python values."""

    name: str
    op_type: str
    attributes: dict[str, Any]
    inputs: dict[str, str]


class TensorFile(Protocol):
    """An open file of named tensors."""

    path: str
    #: ``pytorch``, ``safetensors``, ``npz`` or ``onnx``.
    framework: str
    #: Every tensor, in the order the file stores them.
    tensors: dict[str, TensorInfo]
    #: ONNX recurrent nodes; empty for the other frameworks.
    nodes: list[RnnNode]
    #: What the reader noticed and the user should know (a dequantized tensor, …).
    notes: list[str]

    def read(self, name: str) -> np.ndarray: ...

    def close(self) -> None: ...


def kind_of(probe: Probe) -> str | None:
    """The framework whose file ``probe`` is, or ``None`` when it is none of them."""
    if probe.kind == "zip":
        names = _zip_names(probe.path)
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return None
    if probe.kind == "other" and len(probe.head) >= 9:
        (length,) = struct.unpack("<Q", probe.head[:8])
        if probe.head[8:9] == b"{" and length <= MAX_SAFETENSORS_HEADER:
            return "safetensors"
    return None


def open_tensors(path: str, kind: str, session: Session) -> TensorFile:
    """The tensors of the file at ``path``, of the framework :func:`kind_of` named."""
    if kind == "npz":
        return NpzTensors(path)
    if kind == "safetensors":
        return SafetensorsTensors(path)
    raise InputError(f"{kind} files are not read here")


def _zip_names(path: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            return [i.filename for i in z.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


_NPY_DTYPES = {"<f2": "float16", "<f4": "float32", "<f8": "float64"}


@dataclass
class NpzTensors:
    """A NumPy ``.npz``: one ``.npy`` member per tensor, named by its member name."""

    path: str
    framework: str = "npz"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[RnnNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"not a readable .npz archive ({exc})") from None
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            name = info.filename.removesuffix(".npy")
            with self._zip.open(info) as member:
                shape, dtype = _npy_header(member, info.filename)
            self.tensors[name] = TensorInfo(name, shape, dtype)

    def read(self, name: str) -> np.ndarray:
        with self._zip.open(name + ".npy") as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
        return np.asarray(array)

    def close(self) -> None:
        self._zip.close()


def _npy_header(member: Any, label: str) -> tuple[tuple[int, ...], str]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    except ValueError as exc:
        raise InputError(f"member {label} is not a NumPy array ({exc})") from None
    if dtype.hasobject:
        raise InputError(f"member {label} holds pickled Python objects, which are never loaded")
    return tuple(int(d) for d in shape), dtype.name


_SAFETENSORS_DTYPES = {
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "BOOL": "bool",
}


@dataclass
class SafetensorsTensors:
    """A ``.safetensors`` file: a JSON header of names, dtypes, shapes and offsets, then data."""

    path: str
    framework: str = "safetensors"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[RnnNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        with open(self.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
        entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
        for name, entry in entries:
            dtype = _SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"])
            self.tensors[name] = TensorInfo(name, tuple(entry["shape"]), dtype)

    def read(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(self.path, framework="numpy") as f:
            return np.asarray(f.get_tensor(name))

    def close(self) -> None:
        pass
