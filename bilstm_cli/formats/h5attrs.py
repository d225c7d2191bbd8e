"""Where an HDF5 attribute's variable-length values are kept, read from the object header.

A variable-length string attribute stores, per element, a length and the address of a global
heap collection (with an index in it); HDF5 loads that collection to give the value. Reading
the object header here, with bounds, tells which collections one attribute will make HDF5
load, so that only those are walked first (h5heaps.py) rather than the whole file scanned.
Anything unexpected (shared or dense attribute storage, two attributes of one name, an odd
type) answers None, and the caller falls back to scanning the whole file.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Read = Callable[[int, int], bytes]  # (offset, size) -> at most size bytes at offset

_CONTINUATION = 0x10
_ATTRIBUTE = 0x0C
_ATTRIBUTE_INFO = 0x15
_VLEN = 9
_FIXED_STRING = 3
MAX_CHUNKS = 64
MAX_HEADER_BYTES = 1 << 20


def _u(data: bytes, at: int, size: int) -> int:
    if at + size > len(data):
        raise ValueError("short")
    return int.from_bytes(data[at : at + size], "little")


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


class _Header:
    """The messages of one object header, chunk by chunk."""

    def __init__(self, read: Read, offsets: int, lengths: int) -> None:
        self.read = read
        self.offsets = offsets
        self.lengths = lengths
        self.messages: list[tuple[int, bytes]] = []
        self.total = 0

    def load(self, addr: int) -> None:
        prefix = self.read(addr, 16)
        if prefix[:4] == b"OHDR":
            self._load_v2(addr)
        elif prefix[:1] == b"\x01":
            size = _u(prefix, 8, 4)
            self._v1_chunk(addr + 16, size)
        else:
            raise ValueError("unknown object header")

    def _take(self, addr: int, size: int) -> bytes:
        self.total += size
        if size < 0 or self.total > MAX_HEADER_BYTES:
            raise ValueError("object header too large")
        data = self.read(addr, size)
        if len(data) != size:
            raise ValueError("object header cut short")
        return data

    def _v1_chunk(self, addr: int, size: int) -> None:
        pending = [(addr, size)]
        for _ in range(MAX_CHUNKS):
            if not pending:
                return
            at, size = pending.pop(0)
            data = self._take(at, size)
            p = 0
            while p + 8 <= len(data):
                kind, length = _u(data, p, 2), _u(data, p + 2, 2)
                body = data[p + 8 : p + 8 + length]
                if len(body) != length:
                    raise ValueError("message beyond its chunk")
                self._message(kind, body, pending)
                p += 8 + _pad8(length)
        raise ValueError("too many header chunks")

    def _load_v2(self, addr: int) -> None:
        head = self._take(addr, 6)
        flags = head[5]
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        size = _u(self._take(addr + p, width), 0, width)
        pending = [(addr + p + width, size, False)]
        for _ in range(MAX_CHUNKS):
            if not pending:
                return
            at, size, continued = pending.pop(0)
            data = self._take(at, size)
            q = 4 if continued else 0
            if continued and data[:4] != b"OCHK":
                raise ValueError("bad continuation block")
            end = len(data) - (4 if continued else 0)
            found: list[tuple[int, int]] = []
            while q + 4 <= end:
                kind, length = data[q], _u(data, q + 1, 2)
                q += 4 + (2 if flags & 0x04 else 0)
                body = data[q : q + length]
                if len(body) != length:
                    raise ValueError("message beyond its chunk")
                self._message(kind, body, found)
                q += length
            # A continuation block's length includes its signature and checksum.
            pending += [(a, n, True) for a, n in found]
        raise ValueError("too many header chunks")

    def _message(self, kind: int, body: bytes, pending: list[tuple[int, int]]) -> None:
        if kind == _CONTINUATION:
            at = _u(body, 0, self.offsets)
            size = _u(body, self.offsets, self.lengths)
            pending.append((at, size))
        self.messages.append((kind, body))


def _element_count(space: bytes, lengths: int) -> int:
    version, rank = space[0], space[1]
    if version == 1:
        p = 8
    elif version == 2:
        kind = space[3]
        if kind == 0:
            return 1
        if kind == 2:
            return 0
        p = 4
    else:
        raise ValueError("unknown dataspace version")
    return math.prod(_u(space, p + k * lengths, lengths) for k in range(rank))


def _attribute(body: bytes, wanted: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(datatype, dataspace, data) of the attribute message ``body`` if it is named
    ``wanted``; None for another name. ValueError for a form not read here."""
    version, flags = body[0], body[1]
    name_size, type_size, space_size = _u(body, 2, 2), _u(body, 4, 2), _u(body, 6, 2)
    if version == 1:
        sizes = (_pad8(name_size), _pad8(type_size), _pad8(space_size))
        p = 8
    elif version in (2, 3):
        if flags & 0x03:
            raise ValueError("shared datatype or dataspace")
        sizes = (name_size, type_size, space_size)
        p = 8 if version == 2 else 9
    else:
        raise ValueError("unknown attribute message version")
    name = body[p : p + name_size].rstrip(b"\0")
    if name != wanted:
        return None
    p += sizes[0]
    datatype = body[p : p + type_size]
    p += sizes[1]
    space = body[p : p + space_size]
    p += sizes[2]
    return datatype, space, body[p:]


def heap_addresses(
    read: Read, header: int, name: bytes, count: int, offsets: int = 8, lengths: int = 8
) -> list[int] | None:
    """The global heap collections HDF5 loads to read attribute ``name`` (``count``
    elements) of the object whose header is at ``header``; None when it cannot be told."""
    try:
        h = _Header(read, offsets, lengths)
        h.load(header)
        matches = []
        for kind, body in h.messages:
            if kind == _ATTRIBUTE_INFO:
                heap = _u(body, 2 + (2 if body[1] & 0x01 else 0), offsets)
                if heap != (1 << (8 * offsets)) - 1:
                    return None  # attributes kept densely, in a fractal heap
            elif kind == _ATTRIBUTE:
                found = _attribute(body, name)
                if found is not None:
                    matches.append(found)
        if len(matches) != 1:
            return None
        datatype, space, data = matches[0]
        kind = datatype[0] & 0x0F
        if kind == _FIXED_STRING:
            return []
        if kind != _VLEN or _element_count(space, lengths) != count:
            return None
        item = 4 + offsets + 4
        if len(data) < count * item:
            return None
        undefined = (1 << (8 * offsets)) - 1
        found_at = {_u(data, k * item + 4, offsets) for k in range(count)}
        return sorted(a for a in found_at if a not in (0, undefined))
    except (ValueError, IndexError, OSError):
        return None
