"""Build PyTorch-style checkpoints by hand, without torch, for the reader's hostile-input tests.

:func:`dumps` writes pickle opcodes for a tiny description of an object (plain values,
:class:`Global`, :class:`Call`, :class:`PersId`, :class:`ODict`), so a test can say exactly
what a checkpoint's ``data.pkl`` holds — including what ``torch.save`` would never write.
:func:`write_checkpoint` zips it the way ``torch.save`` does.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bilstm_cli.errors import InputError
from bilstm_cli.formats.base import Session, sniff
from bilstm_cli.formats.foreign_kind import kind_of
from bilstm_cli.formats.tensors import TensorFile, open_tensors

FOREIGN = Path(__file__).resolve().parent.parent / "fixtures" / "foreign"


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    func: Any
    args: tuple[Any, ...]


@dataclass(frozen=True)
class PersId:
    pid: tuple[Any, ...]


@dataclass(frozen=True)
class ODict:
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Raw:
    data: bytes


def dumps(obj: Any) -> bytes:
    """Protocol-2 pickle bytes for ``obj`` (see the module docstring), ending in STOP."""
    return b"\x80\x02" + _enc(obj) + b"."


def _enc(obj: Any) -> bytes:
    if isinstance(obj, Raw):
        return obj.data
    if obj is None:
        return b"N"
    if obj is True:
        return b"\x88"
    if obj is False:
        return b"\x89"
    if isinstance(obj, int):
        if -(2**31) <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(data)]) + data
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, str):
        data = obj.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(obj, tuple):
        return b"(" + b"".join(_enc(o) for o in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_enc(o) for o in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_enc(k) + _enc(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, Global):
        return b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    if isinstance(obj, Call):
        return _enc(obj.func) + _enc(obj.args) + b"R"
    if isinstance(obj, PersId):
        return _enc(obj.pid) + b"Q"
    if isinstance(obj, ODict):
        body = b"".join(_enc(k) + _enc(v) for k, v in obj.items)
        return _enc(Call(Global("collections", "OrderedDict"), ())) + b"(" + body + b"u"
    raise TypeError(obj)


def storage(key: str, numel: int, kind: str = "FloatStorage") -> PersId:
    return PersId(("storage", Global("torch", kind), key, "cpu", numel))


def tensor(
    key: str,
    numel: int,
    size: tuple[int, ...],
    stride: tuple[int, ...] | None = None,
    offset: int = 0,
    kind: str = "FloatStorage",
) -> Call:
    """``_rebuild_tensor_v2`` of storage ``key`` as ``torch.save`` writes it."""
    if stride is None:
        stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    hooks = Call(Global("collections", "OrderedDict"), ())
    return Call(
        Global("torch._utils", "_rebuild_tensor_v2"),
        (storage(key, numel, kind), offset, size, stride, False, hooks),
    )


def write_checkpoint(
    path: Path,
    pickle_bytes: bytes,
    storages: dict[str, bytes] | None = None,
    prefix: str = "archive",
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A zip laid out like ``torch.save``'s: data.pkl, byteorder, data/<key>, version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pickle_bytes)
        z.writestr(f"{prefix}/byteorder", b"little")
        for key, data in (storages or {}).items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", b"3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


@contextlib.contextmanager
def about(path: str) -> Iterator[None]:
    """Name the file in the reader's errors, as the tool does, but let every other exception
    through: a reader must never raise one (``formats.hdf5.about`` would hide it)."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None


def open_file(path: Path | str) -> TensorFile:
    """``path`` opened the way the tool opens any file: sniffed, kind found, errors named."""
    with about(str(path)):
        probe = sniff(str(path))
        kind = kind_of(probe)
        if kind is None:
            raise AssertionError(f"{path}: no kind")
        return open_tensors(str(path), kind, Session())


def read_all(path: Path | str) -> dict[str, np.ndarray]:
    """Every tensor of the file at ``path``, read through the tool's reader."""
    f = open_file(path)
    try:
        with about(str(path)):
            return {name: f.read(name) for name in f.tensors}
    finally:
        f.close()
