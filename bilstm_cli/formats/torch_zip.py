"""PyTorch checkpoints (``torch.save`` since PyTorch 1.6): a zip of a pickle and raw storages.

The archive holds ``<name>/data.pkl`` (the pickled object, protocol 2), one member
``<name>/data/<key>`` per storage (raw bytes, little-endian unless ``<name>/byteorder`` says
``big``), and bookkeeping records (``version``, ``.format_version``, ``.storage_alignment``,
``.data/serialization_id``). The pickle is read by :mod:`~bilstm_cli.formats.torch_pickle`,
which imports and calls nothing; tensors are references into the storages and their values
are read one tensor at a time, only the bytes the tensor spans.

Everything a reference claims is checked against the archive before any value is read: the
storage member exists, holds as many bytes as the storage declares, and the tensor's offset,
sizes and strides stay inside it. Checkpoint dictionaries (``{"model_state_dict": …,
"epoch": 3, "optimizer_state_dict": …}``) are searched for the state dict.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from bilstm_cli.errors import InputError, first_line
from bilstm_cli.formats import torch_globals, torch_pickle
from bilstm_cli.formats.foreign_kind import data_pkl_prefixes
from bilstm_cli.formats.tensors import (
    RnnNode,
    TensorInfo,
    bfloat16_to_float32,
    numpy_dtype,
    read_into,
)
from bilstm_cli.formats.torch_globals import Opaque, Storage, TensorRef

#: The largest ``data.pkl`` read; a state dict's pickle is about 100 bytes per tensor.
MAX_PICKLE = 256 << 20

#: Deflate expands at most about 1032 times.
DEFLATE_RATIO = 1032

#: Where checkpoints keep the model's state dict, most likely first.
STATE_DICT_KEYS = (
    "model_state_dict", "state_dict", "model_state", "model", "module", "net", "network",
    "weights", "params", "ema", "generator", "encoder",
)  # fmt: skip

ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
              RuntimeError, ValueError, struct.error)  # fmt: skip


@dataclass
class TorchTensors:
    """The state dict in a PyTorch zip checkpoint, read without torch."""

    path: str
    framework: str = "pytorch"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[RnnNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Unbuffered: storages are read straight into their arrays.
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            self._open()
        except ZIP_ERRORS as exc:
            self.close()
            raise InputError(f"damaged PyTorch archive ({first_line(exc)})") from None
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._size = os.fstat(self._file.fileno()).st_size
        self._zip = zipfile.ZipFile(self._file)
        infos = {i.filename: i for i in self._zip.infolist()}
        prefixes = set(data_pkl_prefixes(list(infos)))
        if len(prefixes) != 1:
            raise InputError(f"not one PyTorch data.pkl record but {len(prefixes)}")
        self._prefix = prefix = prefixes.pop()
        if f"{prefix}/constants.pkl" in infos or any(
            n.startswith(f"{prefix}/code/") for n in infos
        ):
            raise InputError(
                "a TorchScript archive (torch.jit.save), not a state dict: "
                "save model.state_dict() with torch.save instead"
            )
        self._infos = infos
        order = infos.get(f"{prefix}/byteorder")
        byteorder = self._member_bytes(order, 16).decode("ascii", "replace") if order else "little"
        if byteorder not in ("little", "big"):
            raise InputError(f"unknown byte order record {byteorder[:16]!r}")
        self._order = "<" if byteorder == "little" else ">"
        pkl = self._member_bytes(infos[f"{prefix}/data.pkl"], MAX_PICKLE)
        self._storages: dict[str, Storage] = {}
        root = torch_pickle.load(pkl, self._persistent_load)
        self._refs = self._state_dict(root)
        for name, ref in self._refs.items():
            self._check_extent(name, ref)
            self.tensors[name] = TensorInfo(name, ref.size, ref.dtype)

    # --- the pickle's storages ------------------------------------------------------------

    def _persistent_load(self, pid: tuple[Any, ...]) -> Storage:
        if len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise torch_globals.PickleRefused("a persistent id that is not a storage")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, torch_globals.StorageType):
            raise torch_globals.PickleRefused("a storage whose type is not a storage type")
        if not isinstance(key, str) or isinstance(numel, bool) or not isinstance(numel, int):
            raise InputError("damaged storage reference in data.pkl")
        if numel < 0:
            raise InputError(f"storage {key} declares {numel} elements")
        known = self._storages.get(key)
        if known is not None:
            if known.dtype != kind.dtype or known.numel != numel:
                raise InputError(f"storage {key} is declared twice, differently")
            return known
        member = self._infos.get(f"{self._prefix}/data/{key}")
        if member is None:
            raise InputError(f"storage data/{key} is missing from the archive")
        nbytes = numel * (np.dtype(numpy_dtype(kind.dtype)).itemsize if kind.dtype else 1)
        if member.file_size < nbytes:
            raise InputError(
                f"storage data/{key} holds {member.file_size} bytes, "
                f"shorter than the {nbytes} it declares"
            )
        self._check_member(member, nbytes)
        storage = Storage(key, kind.dtype, numel)
        self._storages[key] = storage
        return storage

    def _check_member(self, member: zipfile.ZipInfo, nbytes: int) -> None:
        """That the member can really hold ``nbytes``: a damaged directory may declare
        any size, and a read buffer is allocated before the bytes arrive."""
        if member.compress_type == zipfile.ZIP_STORED:
            if member.header_offset + member.compress_size > self._size:
                raise InputError(f"member {member.filename} reaches past the end of the file")
        elif member.compress_type == zipfile.ZIP_DEFLATED:
            if nbytes > member.compress_size * DEFLATE_RATIO + 1024:
                raise InputError(
                    f"member {member.filename} declares {nbytes} bytes, more than its "
                    f"{member.compress_size} compressed bytes can hold"
                )
        else:
            raise InputError(f"member {member.filename} uses compression {member.compress_type}")

    def _check_extent(self, name: str, ref: TensorRef) -> None:
        item = np.dtype(numpy_dtype(ref.dtype)).itemsize
        storage_bytes = ref.storage.numel * (
            np.dtype(numpy_dtype(ref.storage.dtype)).itemsize if ref.storage.dtype else 1
        )
        if _extent(ref) * item > storage_bytes:
            raise InputError(
                f"tensor {name} (size {list(ref.size)}, stride {list(ref.stride)}, offset "
                f"{ref.offset}) reaches past the end of its storage data/{ref.storage.key}"
            )

    # --- finding the state dict -----------------------------------------------------------

    def _state_dict(self, root: Any) -> dict[str, TensorRef]:
        if isinstance(root, TensorRef):
            raise InputError("holds a single tensor, not a state dict of named tensors")
        candidates = _tensor_dicts(root)
        if not candidates:
            raise InputError("holds no tensors (not a PyTorch state dict)")
        where, chosen = _choose(candidates)
        refs: dict[str, TensorRef] = {}
        skipped: list[str] = []
        for key, value in chosen.items():
            if isinstance(value, TensorRef):
                refs[str(key)] = value
            else:
                skipped.append(str(key))
        if where:
            self.notes.append(f"the state dict is the checkpoint's {'/'.join(where)!r} entry")
        if isinstance(root, dict):
            others = [str(k) for k in root if not where or k != where[0]]
            if where and others:
                self.notes.append(f"other checkpoint entries ignored: {_names(others)}")
        if skipped:
            self.notes.append(f"entries that are not tensors ignored: {_names(skipped)}")
        opaque = sorted({v.name for v in _walk_values(root) if isinstance(v, Opaque)})
        if opaque:
            self.notes.append(f"metadata objects not read: {', '.join(opaque)}")
        return refs

    # --- reading values -------------------------------------------------------------------

    def read(self, name: str) -> np.ndarray:
        ref = self._refs.get(name)
        if ref is None:
            raise InputError(f"no tensor {name!r}")
        dtype = np.dtype(self._order + np.dtype(numpy_dtype(ref.dtype)).str[1:])
        item = dtype.itemsize
        count = _extent(ref) - ref.offset
        flat = self._storage_bytes(ref.storage, ref.offset * item, count * item).view(dtype)
        if _contiguous(ref.size, ref.stride) or count == 0:
            array = flat[: int(np.prod(ref.size, dtype=np.int64))].reshape(ref.size)
        else:
            strided = np.lib.stride_tricks.as_strided(
                flat, shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
            )
            array = np.array(strided)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        if ref.dtype == "bfloat16":
            return bfloat16_to_float32(array)
        return array

    def _storage_bytes(self, storage: Storage, start: int, length: int) -> np.ndarray:
        info = self._infos[f"{self._prefix}/data/{storage.key}"]
        buf = np.empty(length, np.uint8)
        if length == 0:
            return buf
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                got = read_into(self._file, self._data_offset(info) + start, buf)
            else:
                with self._zip.open(info) as member:
                    _skip(member, start)
                    got = _read_member_into(member, buf)
        except ZIP_ERRORS as exc:
            raise InputError(
                f"storage data/{storage.key} cannot be read ({first_line(exc)})"
            ) from None
        if got != length:
            raise InputError(f"storage data/{storage.key} ends early (the file is truncated)")
        return buf

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        self._file.seek(info.header_offset)
        header = self._file.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise InputError(f"member {info.filename} has a damaged local header")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start: int = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > self._size or info.compress_size != info.file_size:
            raise InputError(f"member {info.filename} reaches past the end of the file")
        return start

    def _member_bytes(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise InputError(f"member {info.filename} is larger than {limit} bytes")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size > self._size:
            raise InputError(f"member {info.filename} reaches past the end of the file")
        # In chunks: one read of the size a damaged directory declares would allocate it.
        chunks = []
        total = 0
        with self._zip.open(info) as member:
            while total <= limit:
                chunk = member.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        if total > limit:
            raise InputError(f"member {info.filename} is larger than {limit} bytes")
        return b"".join(chunks)

    def close(self) -> None:
        zip_ = getattr(self, "_zip", None)
        if zip_ is not None:
            zip_.close()
        self._file.close()


def first_member(path: str) -> str | None:
    """The name in a zip's first local header, read without the central directory."""
    try:
        with open(path, "rb") as f:
            header = f.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                return None
            (length,) = struct.unpack("<H", header[26:28])
            return f.read(length).decode("utf-8", "replace")
    except OSError:
        return None


#: The first bytes of a pre-1.6 ``torch.save`` pickle: protocol 2, then its magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def refuse_pickle(path: str) -> NoReturn:
    """Refuse a bare pickle by name (never unpickling it): a pre-1.6 PyTorch file or another."""
    with open(path, "rb") as f:
        legacy = f.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC
    if legacy:
        raise InputError(
            "a PyTorch file from before 1.6 (a bare pickle, not a zip), which is never "
            "unpickled: save it again with torch.save in PyTorch 1.6 or later"
        )
    raise InputError("a Python pickle, which is never loaded (PyTorch zip checkpoints are)")


def _extent(ref: TensorRef) -> int:
    """One past the last element (in tensor elements) the tensor touches in its storage."""
    if any(d == 0 for d in ref.size):
        return ref.offset
    return ref.offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride)) + 1


def _contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for d, s in zip(reversed(size), reversed(stride)):
        if d != 1 and s != expected:
            return False
        expected *= d
    return True


def _read_member_into(member: Any, buf: np.ndarray) -> int:
    view = buf.data.cast("B")
    done = 0
    while done < len(view):
        got = member.readinto(view[done:])
        if not got:
            break
        done += got
    return done


def _skip(member: Any, count: int) -> None:
    while count > 0:
        chunk = member.read(min(count, 1 << 20))
        if not chunk:
            return
        count -= len(chunk)


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_MAX_DEPTH = 8


def _tensor_dicts(root: Any) -> list[tuple[tuple[str, ...], dict[Any, Any]]]:
    """Every dictionary (to a bounded depth) that holds tensors directly, with its path."""
    found = []
    queue: deque[tuple[tuple[str, ...], Any]] = deque([((), root)])
    seen: set[int] = set()
    while queue:
        path, value = queue.popleft()
        if id(value) in seen or len(path) > _MAX_DEPTH:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            if any(isinstance(v, TensorRef) for v in value.values()):
                found.append((path, value))
            items: Any = value.items()
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        else:
            continue
        for k, v in items:
            if isinstance(v, dict | list | tuple):
                queue.append(((*path, str(k)), v))
    return found


def _choose(
    candidates: list[tuple[tuple[str, ...], dict[Any, Any]]],
) -> tuple[tuple[str, ...], dict[Any, Any]]:
    for path, d in candidates:
        if not path:
            return path, d
    for key in STATE_DICT_KEYS:
        for path, d in candidates:
            if path[-1] == key:
                return path, d
    plain = [(p, d) for p, d in candidates if not any("optim" in part for part in p)]
    pool = plain or candidates
    return max(pool, key=lambda pd: sum(isinstance(v, TensorRef) for v in pd[1].values()))


def _walk_values(root: Any) -> list[Any]:
    out: list[Any] = []
    stack = [root]
    seen: set[int] = set()
    while stack and len(out) < 100_000:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        out.append(value)
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return out
