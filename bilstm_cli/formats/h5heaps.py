"""Checking the global heaps of untrusted HDF5 data before HDF5 reads them.

Variable-length strings (Keras' model_config, weight_names, layer_names…) live in "global
heap" collections. HDF5 walks a collection's objects by their declared sizes, and a damaged
free-space entry of size zero makes it loop forever, inside the library, where no signal
reaches. The collections are therefore walked here first, the same way, with bounds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from bilstm_cli.errors import InputError

if TYPE_CHECKING:
    from bilstm_cli.formats.base import Session

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_GCOL = b"GCOL"
_SCAN_BLOCK = 1024 * 1024  # small: the scan should not grow memory with the file


def _lengths_size(f: Any) -> int:
    """The superblock's "size of lengths" (8 in every file h5py writes)."""
    offset = 0
    while offset < 1 << 30:
        f.seek(offset)
        head = f.read(16)
        if len(head) < 16:
            break
        if head[:8] == _SIGNATURE:
            size = head[15] if head[8] in (0, 1) else head[10]
            return size if size in (2, 4, 8) else 8
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
    if len(header) < 8 + lengths or header[4] != 1 or header[5:8] != b"\0\0\0":
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
