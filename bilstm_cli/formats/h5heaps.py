"""Checking the global heaps of untrusted HDF5 data before HDF5 reads them.

Variable-length strings (Keras' model_config, weight_names, layer_names…) live in "global
heap" collections. HDF5 walks a collection's objects by their declared sizes, and a damaged
free-space entry of size zero makes it loop forever, inside the library, where no signal
reaches. The collections are therefore walked here first, the same way, with bounds.

HDF5 loads a collection only to give the value of a variable-length or reference datum, so
the walk is owed only by a file whose values of such a type are about to be read: a
``.keras`` weights file, which holds none, is never scanned byte by byte. Every file the
tool opens is registered (:func:`register`) with how its collections are checked, and
:func:`guard` runs that check, once, before the first such value is read.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5attrs

if TYPE_CHECKING:
    from bilstm_cli.formats.base import Session

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_GCOL = b"GCOL"
_SCAN_BLOCK = 1024 * 1024  # small: the scan should not grow memory with the file


_SIZES = (2, 4, 8)  # the sizes of offsets and lengths HDF5 writes


def _sizes(head: bytes) -> tuple[int, int] | None:
    """The superblock's "size of offsets" and "size of lengths" as its first 16 bytes
    declare them; None when they are not a superblock."""
    if len(head) < 16 or head[:8] != _SIGNATURE:
        return None
    return (head[13], head[14]) if head[8] in (0, 1) else (head[9], head[10])


def _lengths_size(f: Any) -> int:
    """The superblock's "size of lengths" (8 in every file h5py writes)."""
    offset = 0
    while offset < 1 << 30:
        f.seek(offset)
        head = f.read(16)
        if len(head) < 16:
            break
        sizes = _sizes(head)
        if sizes is not None:
            return sizes[1] if sizes[1] in _SIZES else 8
        offset = 512 if offset == 0 else offset * 2
    return 8


_GCOL_BYTES = np.frombuffer(_GCOL, np.uint8)


def _signature_starts(block: bytes) -> np.ndarray:
    """Offsets in ``block`` where the global-heap signature starts and fits."""
    data = np.frombuffer(block, np.uint8)
    if data.size < len(_GCOL):
        return np.empty(0, np.intp)
    # Candidates on the first byte (about 1 in 256 of weight bytes), then the other three
    # checked at those places only: a few times quicker than bytes.find on float data.
    at = np.flatnonzero(data[: data.size - len(_GCOL) + 1] == _GCOL_BYTES[0])
    for k in range(1, len(_GCOL)):
        at = at[data[at + k] == _GCOL_BYTES[k]]
    return at


class CollectionFinder:
    """Where the global-heap signature occurs in data fed to it block by block (so a pass
    that reads the bytes anyway, such as a CRC check, finds the collections too)."""

    def __init__(self) -> None:
        self.found: list[int] = []
        self._offset = 0
        self._tail = b""

    def feed(self, block: bytes) -> None:
        keep = len(_GCOL) - 1
        # Matches that start in the last bytes seen before this block and end inside it.
        edge = self._tail + block[:keep]
        base = self._offset - len(self._tail)
        at = edge.find(_GCOL)
        while 0 <= at < len(self._tail):
            self.found.append(base + at)
            at = edge.find(_GCOL, at + 1)
        self.found.extend(int(self._offset + at) for at in _signature_starts(block))
        self._offset += len(block)
        # Only the last few bytes carry over (joining the whole block would copy it).
        self._tail = block[-keep:] if len(block) >= keep else (self._tail + block)[-keep:]


def check_collections(f: Any, found: list[int]) -> None:
    """Walk each candidate collection at the offsets ``found`` in the seekable file ``f``."""
    if not found:
        return
    f.seek(0, 2)
    end_of_file = f.tell()
    lengths = _lengths_size(f)
    for at in found:
        _check_collection(f, at, lengths, end_of_file)


def check_global_heaps(f: Any) -> None:
    """Refuse an HDF5 file (a seekable binary file object) whose global heap collections
    HDF5 could not walk to their end; InputError names the first bad one."""
    finder = CollectionFinder()
    f.seek(0)
    while True:
        block = f.read(_SCAN_BLOCK)
        if not block:
            break
        finder.feed(block)
    check_collections(f, finder.found)


def _check_collection(f: Any, at: int, lengths: int, end_of_file: int) -> None:
    f.seek(at)
    header = f.read(8 + lengths)
    if (
        len(header) < 8 + lengths
        or header[:4] != _GCOL
        or header[4] != 1
        or header[5:8] != b"\0\0\0"
    ):
        return  # not a collection HDF5 would accept as one (or four bytes of data)
    size = int.from_bytes(header[8:], "little")
    if size < len(header) or at + size > end_of_file:
        raise InputError(
            f"global heap at byte {at} declares {size} bytes, beyond the end of the file"
        )
    f.seek(at)
    heap = f.read(size)
    object_header = 8 + lengths
    p = len(header)
    while p < size:
        if p + object_header > size:
            break  # the remainder is free space too small to describe itself
        index = int.from_bytes(heap[p : p + 2], "little")
        length = int.from_bytes(heap[p + 8 : p + 8 + lengths], "little")
        need = object_header + (length + 7) // 8 * 8 if index > 0 else length
        if need <= 0 or p + need > size:
            raise InputError(
                f"global heap at byte {at} is damaged (object {index} of {length} bytes at "
                f"offset {p} does not fit)"
            )
        p += need


def check_heaps_of(source: Any, key: tuple[object, ...] | None, session: Session) -> None:
    """``check_global_heaps`` on a path or on a seekable file object (left at its start),
    once per session for the same unchanged data (``key``)."""
    if session.done("heaps", key):
        return
    if isinstance(source, str | bytes | os.PathLike):
        with open(source, "rb") as f:
            check_global_heaps(f)
    else:
        try:
            check_global_heaps(source)
        finally:
            source.seek(0)
    session.mark("heaps", key)


class _Heaps:
    """How one open file's global heaps are checked: the collections one attribute points
    to (h5attrs.py), or, when that cannot be told, every collection the file holds."""

    def __init__(self, source: Any, key: tuple[object, ...] | None, session: Session) -> None:
        self.source = source
        self.key = key
        self.session = session
        self.walked: set[int] = set()
        self._layout: tuple[int, int, int] | None = None  # offsets, lengths, end of file

    def whole(self) -> None:
        check_heaps_of(self.source, self.key, self.session)

    def attribute(self, node: Any, name: bytes) -> None:
        if self.session.done("heaps", self.key):
            return
        with self._opened() as f:
            layout = self._layout_of(f)
            count = _count(node, name)
            addresses = None
            if layout is not None and count is not None:
                header = h5py.h5o.get_info(node.id).addr

                def read(offset: int, size: int) -> bytes:
                    f.seek(offset)
                    return bytes(f.read(size))

                addresses = h5attrs.heap_addresses(read, header, name, count, *layout[:2])
            if addresses is None:
                self.whole()
                return
            for at in addresses:
                if at not in self.walked:
                    _check_collection(f, at, layout[1], layout[2])  # type: ignore[index]
                    self.walked.add(at)

    def _layout_of(self, f: Any) -> tuple[int, int, int] | None:
        if self._layout is None:
            f.seek(0)
            # Only a superblock at the start: a user block moves every address, and the
            # whole file is scanned instead.
            sizes = _sizes(f.read(16))
            if sizes is None or not set(sizes) <= set(_SIZES):
                return None
            f.seek(0, 2)
            self._layout = (*sizes, f.tell())
        return self._layout

    @contextlib.contextmanager
    def _opened(self) -> Iterator[Any]:
        if isinstance(self.source, str | bytes | os.PathLike):
            with open(self.source, "rb") as f:
                yield f
        else:
            try:
                yield self.source
            finally:
                self.source.seek(0)


def _count(node: Any, name: bytes) -> int | None:
    try:
        space = h5py.h5a.open(node.id, name).get_space()
        return int(space.get_simple_extent_npoints())
    except (OSError, RuntimeError, ValueError, KeyError):
        return None


# HDF5's number for each open file (the same for every object in it) -> how its global heaps
# are checked before a value kept in them is read; None for a file built here.
_FILES: dict[tuple[int, int], _Heaps | None] = {}


def _file_number(obj: Any) -> tuple[int, int]:
    fid = h5py.h5i.get_file_id(obj.id)
    return tuple(fid.fileno)


def register(f: h5py.File, heaps: _Heaps | None) -> None:
    """Remember how the global heaps of the just-opened ``f`` are checked (None: nothing
    to check, a file this process built itself); forgotten with ``f``."""
    number = _file_number(f)
    _FILES[number] = heaps
    weakref.finalize(f, _FILES.pop, number, None)


def register_source(
    f: h5py.File, source: Any, key: tuple[object, ...] | None, session: Session
) -> None:
    """:func:`register` ``f``, opened from ``source`` (a path or a seekable file object)."""
    register(f, _Heaps(source, key, session))


def needs_heap(tid: Any) -> bool:
    """Whether values of HDF5 type ``tid`` are kept in, or point into, global heaps."""
    if isinstance(tid, h5py.h5t.TypeVlenID | h5py.h5t.TypeReferenceID):
        return True
    if isinstance(tid, h5py.h5t.TypeStringID):
        return bool(tid.is_variable_str())
    if isinstance(tid, h5py.h5t.TypeCompoundID):
        return any(needs_heap(tid.get_member_type(k)) for k in range(tid.get_nmembers()))
    if isinstance(tid, h5py.h5t.TypeArrayID):
        return needs_heap(tid.get_super())
    return False


def guard(obj: Any, tid: Any, attribute: bytes | None = None) -> None:
    """Before a value of type ``tid`` is read from ``obj`` (its attribute ``attribute``, or
    its data): the global heaps HDF5 will load for it checked, if it lives in them. A file
    the tool did not register is scanned whole from its path; InputError if it has none."""
    if not needs_heap(tid):
        return
    number = _file_number(obj)
    if number in _FILES:
        heaps = _FILES[number]
        if heaps is None:
            return
        if attribute is not None:
            heaps.attribute(obj, attribute)
        else:
            heaps.whole()
        return
    path = obj.file.filename
    if not isinstance(path, str) or not os.path.isfile(path):
        raise InputError("HDF5 data whose global heaps were never checked; not read")
    with open(path, "rb") as f:
        check_global_heaps(f)
