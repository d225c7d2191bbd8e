"""Named tensors in other frameworks' files: what a file holds, by name, read on demand.

A PyTorch state dict, a safetensors file, a NumPy ``.npz`` of arrays and an ONNX model's
initializers are all, to this tool, a :class:`TensorFile`: tensor names with shapes and dtypes,
values read one at a time, and (ONNX only) the recurrent nodes that use them. How the tensors
of one layer become a Keras-convention :class:`~bilstm_cli.model.Layer` is not decided here.

:func:`~bilstm_cli.formats.foreign_kind.kind_of` says which framework's file a probe is (or
``None``); :func:`open_tensors` opens it. Nothing in a file is ever imported or executed:
PyTorch pickles go through the restricted interpreter of
:mod:`~bilstm_cli.formats.torch_pickle`, ``.npz`` members are read with ``allow_pickle=False``.
Every structural claim a file makes (header lengths, offsets, shapes) is checked against the
bytes it really holds before anything is allocated.

Errors are :class:`~bilstm_cli.errors.InputError` (exit 3) with messages that do not name
the file: the caller names it (``formats.hdf5.about``). The one exception is the missing
``onnx`` package, a :class:`~bilstm_cli.errors.UsageError` (exit 2) naming the file and the
``pip install`` line. ``bfloat16`` tensors are listed as ``bfloat16`` and read as
``float32`` (exactly: every bfloat16 value is a float32 value).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bilstm_cli.errors import InputError, first_line
from bilstm_cli.formats.base import Session

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

    ``inputs`` maps the operator's input names (``W``, ``R``, ``B``, ``P``, stored
    ``initial_h``/``initial_c``, and for the quantized operator ``W_scale``,
    ``W_zero_point``, ``R_scale``, ``R_zero_point``) to tensor names in
    :attr:`TensorFile.tensors`; inputs the node leaves out are absent. ``attributes`` holds
    the node's attributes as Python values (str, int, float, lists of them).

    ``DynamicQuantizeLSTM`` keeps its stored layout: ``W`` is [D, input, 4h] and ``R``
    [D, h, 4h] (transposed against ``LSTM``'s [D, 4h, input]), read dequantized to float32
    as ``(q - zero_point) * scale`` (a note says so)."""

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


def open_tensors(path: str, kind: str, session: Session) -> TensorFile:
    """The tensors of the file at ``path``, of the framework
    :func:`~bilstm_cli.formats.foreign_kind.kind_of` named."""
    if kind == "npz":
        return NpzTensors(path)
    if kind == "safetensors":
        return SafetensorsTensors(path)
    if kind == "pytorch":
        from bilstm_cli.formats.torch_zip import TorchTensors

        return TorchTensors(path)
    if kind == "onnx":
        from bilstm_cli.formats.onnx_tensors import OnnxTensors

        onnx_file: TensorFile = OnnxTensors(path)
        return onnx_file
    if kind == "pickle":
        from bilstm_cli.formats.torch_zip import refuse_pickle

        refuse_pickle(path)
    raise InputError(f"{kind} files are not read here")


def read_into(file: Any, offset: int, buf: np.ndarray) -> int:
    """Fill ``buf`` (uint8, uninitialised: no time spent zeroing it) with the file's bytes
    from ``offset``; the count read, less than ``buf``'s size only at the end of the file."""
    view = buf.data.cast("B")
    file.seek(offset)
    done = 0
    while done < len(view):
        got = file.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as their uint16 bit patterns, as float32 (exactly: a bfloat16
    is the upper half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def numpy_dtype(name: str) -> str:
    """The NumPy dtype that holds a stored dtype's bits (``bfloat16`` → ``uint16``)."""
    return "uint16" if name == "bfloat16" else name


_NPZ_KINDS = "biufc"


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
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
            raise InputError(f"not a readable .npz archive ({first_line(exc)})") from None
        try:
            self._read_headers()
        except BaseException:
            self._zip.close()
            raise

    def _read_headers(self) -> None:
        self._size = os.path.getsize(self.path)
        skipped = []
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            name = info.filename.removesuffix(".npy")
            try:
                with self._zip.open(info) as member:
                    shape, dtype, data_start = _npy_header(member, info.filename)
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                    RuntimeError) as exc:  # fmt: skip
                raise InputError(
                    f"member {info.filename} cannot be read ({first_line(exc)})"
                ) from None
            if dtype.kind not in _NPZ_KINDS:
                skipped.append(name)
                continue
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if not _can_hold(info, data_start + nbytes, self._size):
                raise InputError(
                    f"member {info.filename} declares {data_start + nbytes} bytes, more than "
                    "the file can hold"
                )
            if data_start + nbytes != info.file_size:
                raise InputError(
                    f"member {info.filename} declares shape {list(shape)} of {dtype.name} "
                    f"({nbytes} bytes) but holds {info.file_size - data_start}"
                )
            self.tensors[name] = TensorInfo(name, shape, dtype.name)
        if skipped:
            self.notes.append(f"members that are not numbers ignored: {', '.join(skipped)}")

    def read(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise InputError(f"no tensor {name!r}")
        try:
            with self._zip.open(name + ".npy") as member:
                array = np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise InputError(f"member {name}.npy cannot be read ({first_line(exc)})") from None
        return np.asarray(array)

    def close(self) -> None:
        self._zip.close()


def _can_hold(info: zipfile.ZipInfo, nbytes: int, file_size: int) -> bool:
    """Whether a zip member can really hold ``nbytes``: stored, inside the file; deflated,
    at most about 1032 times its compressed size (deflate's largest expansion)."""
    if info.compress_type == zipfile.ZIP_STORED:
        return nbytes <= info.compress_size and info.header_offset + nbytes <= file_size
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return nbytes <= info.compress_size * 1032 + 1024
    return False


def _npy_header(member: Any, label: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise InputError(f"member {label} is not a NumPy array ({first_line(exc)})") from None
    if dtype.hasobject:
        raise InputError(f"member {label} holds pickled Python objects, which are never loaded")
    return tuple(int(d) for d in shape), dtype, member.tell()


#: safetensors dtypes → NumPy dtype names (``bfloat16`` and the float8s have none: the
#: first is read as float32, the others are listed and refused when read).
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64",
}  # fmt: skip
_ITEMSIZE = {"F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class SafetensorsTensors:
    """A ``.safetensors`` file: a JSON header of names, dtypes, shapes and offsets, then data.

    The header is held to the format's rules before anything is read: its length inside the
    file, valid UTF-8 JSON without duplicate names, each dtype known, each shape a list of
    non-negative integers, each ``data_offsets`` pair spanning exactly dtype × shape bytes,
    and the tensors together covering the data exactly — no gap, no overlap, nothing past
    the end of the file."""

    path: str
    framework: str = "safetensors"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[RnnNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Unbuffered: values are read straight into their arrays, and always from the file
        # as it is now, never from a buffer filled when the header was read.
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            self._spans = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> dict[str, tuple[int, int]]:
        size = os.fstat(self._file.fileno()).st_size
        first = self._file.read(8)
        if len(first) < 8:
            raise InputError("too short to be a safetensors file")
        (length,) = struct.unpack("<Q", first)
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise InputError(f"safetensors header length {length} is more than the file holds")
        try:
            header = json.loads(self._file.read(length), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"safetensors header is not valid JSON ({first_line(exc)})") from None
        if not isinstance(header, dict):
            raise InputError("safetensors header is not a JSON object")
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise InputError("safetensors __metadata__ is not a map of strings")
        self._data_start = 8 + length
        entries = [_entry(name, entry) for name, entry in header.items()]
        entries.sort(key=lambda e: (e[3], e[4]))
        end = 0
        for name, dtype, shape, begin, stop in entries:
            if begin != end:
                what = "overlaps the tensor before it" if begin < end else "leaves a gap before it"
                raise InputError(f"safetensors tensor {name!r} {what} (data_offsets {begin})")
            end = stop
            self.tensors[name] = TensorInfo(name, shape, SAFETENSORS_DTYPES[dtype])
        if self._data_start + end != size:
            raise InputError(
                f"safetensors tensors cover {end} bytes of data, the file holds "
                f"{size - self._data_start}"
            )
        return {name: (begin, stop) for name, _, _, begin, stop in entries}

    def read(self, name: str) -> np.ndarray:
        info = self.tensors.get(name)
        if info is None:
            raise InputError(f"no tensor {name!r}")
        if info.dtype.startswith("float8"):
            raise InputError(f"tensor {name!r} is {info.dtype}, which NumPy cannot hold")
        begin, stop = self._spans[name]
        buf = np.empty(stop - begin, np.uint8)
        try:
            got = read_into(self._file, self._data_start + begin, buf)
        except OSError as exc:
            raise InputError(f"tensor {name!r} cannot be read ({first_line(exc)})") from None
        if got != len(buf):
            raise InputError(f"tensor {name!r} ends early (the file is truncated)")
        dtype = np.dtype(numpy_dtype(info.dtype)).newbyteorder("<")
        array = buf.view(dtype).reshape(info.shape)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return bfloat16_to_float32(array) if info.dtype == "bfloat16" else array

    def close(self) -> None:
        self._file.close()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"name {key!r} appears twice")
        out[key] = value
    return out


def _entry(name: str, entry: Any) -> tuple[str, str, tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise InputError(f"safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise InputError(f"safetensors tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise InputError(f"safetensors tensor {name!r} has shape {str(shape)[:40]}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InputError(f"safetensors tensor {name!r} has data_offsets {str(offsets)[:40]}")
    itemsize = _ITEMSIZE.get(dtype) or np.dtype(numpy_dtype(SAFETENSORS_DTYPES[dtype])).itemsize
    nbytes = int(np.prod(shape, dtype=object)) * itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise InputError(
            f"safetensors tensor {name!r}: {dtype} {shape} needs {nbytes} bytes, "
            f"its data_offsets span {offsets[1] - offsets[0]}"
        )
    return name, dtype, tuple(shape), offsets[0], offsets[1]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
