"""Editing weights in place, byte for byte, in a copy of the model file.

Keras writes weights as plain contiguous HDF5 datasets, and stores ``model.weights.h5`` in a
``.keras`` archive uncompressed. A weight's bytes therefore sit at a fixed offset in the file:
overwriting exactly those bytes (and, in an archive, the member's CRC-32 in its two headers)
changes nothing else, not even HDF5's own bookkeeping. Anything that does not fit that picture
(chunked or filtered datasets, a compressed member) is left to the general writer.
"""

from __future__ import annotations

import errno
import os
import struct
import zipfile
from dataclasses import dataclass

import h5py

from bilstm_cli.errors import InputError
from bilstm_cli.formats import crc

_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, 30 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # central directory header, 46 bytes
LOCAL_CRC_AT = 14
CENTRAL_CRC_AT = 16
_DATA_DESCRIPTOR = 0x08
_ENCRYPTED = 0x01


@dataclass(frozen=True)
class MemberSpan:
    """Where a stored archive member's bytes are, and where its CRC is recorded."""

    data_offset: int
    size: int
    local_header: int
    central_header: int
    crc: int  # as the archive records it


def stored_member(path: str, name: str) -> MemberSpan | None:
    """The span of member ``name`` if it is stored plainly (no compression, no encryption, no
    trailing data descriptor); None otherwise."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as z:
        infos = z.infolist()
        matches = [i for i, info in enumerate(infos) if info.filename == name]
        if len(matches) != 1:
            return None
        index = matches[0]
        info = infos[index]
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & (
            _ENCRYPTED | _DATA_DESCRIPTOR
        ):
            return None
        f.seek(info.header_offset)
        header = f.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            return None
        fields = _LOCAL.unpack(header)
        if fields[0] != b"PK\x03\x04":
            return None
        data_offset = info.header_offset + _LOCAL.size + fields[9] + fields[10]
        central = _central_header_offset(f, z, index)
        if central is None:
            return None
        return MemberSpan(data_offset, info.file_size, info.header_offset, central, info.CRC)


def _central_header_offset(f: object, z: zipfile.ZipFile, index: int) -> int | None:
    """Offset of the ``index``-th central directory entry (entries are in infolist order)."""
    start = getattr(z, "start_dir", None)
    if not isinstance(start, int):
        return None
    offset = start
    for _ in range(index + 1):
        f.seek(offset)  # type: ignore[attr-defined]
        header = f.read(_CENTRAL.size)  # type: ignore[attr-defined]
        if len(header) != _CENTRAL.size:
            return None
        fields = _CENTRAL.unpack(header)
        if fields[0] != b"PK\x01\x02":
            return None
        current = offset
        offset += _CENTRAL.size + fields[10] + fields[11] + fields[12]
    return current


def dataset_span(ds: h5py.Dataset) -> tuple[int, int] | None:
    """(offset, length) of a dataset's raw bytes in its HDF5 file, if they are one plain run."""
    if ds.chunks is not None or ds.compression is not None or ds.external or ds.is_virtual:
        return None
    try:
        if ds.id.get_create_plist().get_nfilters():
            return None
        offset = ds.id.get_offset()
        length = ds.id.get_storage_size()
    except (OSError, RuntimeError, ValueError):
        return None
    expected = ds.dtype.itemsize * int(ds.size)
    if offset is None or length != expected or expected == 0:
        return None
    return int(offset), int(length)


def copy_around(source: str, dest: str, skip: list[tuple[int, int]]) -> None:
    """Copy ``source`` over the (existing, empty) file ``dest``, except the byte ranges
    ``skip`` ((offset, length) pairs), which are about to be overwritten anyway: copying them
    first would only be undone. They are left as holes, read as zeros until written."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(dest, os.O_WRONLY)
        try:
            size = os.fstat(src).st_size
            at = 0
            for offset, length in sorted(skip) + [(size, 0)]:
                if offset > at:
                    _copy_range(src, dst, at, min(offset, size) - at)
                at = max(at, offset + length)
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_range(src: int, dst: int, offset: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` from ``src`` to the same offset in ``dst``: inside the
    kernel where it can, through a buffer where it cannot."""
    end = offset + size
    try:
        while offset < end:
            done = os.copy_file_range(src, dst, end - offset, offset, offset)
            if done == 0:
                raise OSError(errno.EIO, "the input file got shorter while it was copied")
            offset += done
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    except AttributeError:  # no copy_file_range on this system
        pass
    while offset < end:
        block = os.pread(src, min(end - offset, 1 << 20), offset)
        if not block:
            raise OSError(errno.EIO, "the input file got shorter while it was copied")
        pwrite_all(dst, memoryview(block), offset)
        offset += len(block)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def crc32_of(fd: int, offset: int, size: int) -> int:
    """The CRC-32 of ``size`` bytes at ``offset`` of ``fd``, read a block at a time."""
    value = 0
    buffer = memoryview(bytearray(min(1 << 20, max(size, 0))))
    while size > 0:
        got = os.preadv(fd, [buffer[: min(len(buffer), size)]], offset)
        if not got:
            raise OSError("the staged archive is shorter than its member")
        value = crc.crc32(buffer[:got], value)
        offset += got
        size -= got
    return value


def patch_crc(fd: int, span: MemberSpan, value: int) -> None:
    packed = struct.pack("<L", value)
    pwrite_all(fd, memoryview(packed), span.local_header + LOCAL_CRC_AT)
    pwrite_all(fd, memoryview(packed), span.central_header + CENTRAL_CRC_AT)


@dataclass(frozen=True)
class Copied:
    """A staged file made by :func:`copy_around` from ``source``: every byte is the
    source's at the same offset except ``written`` ((offset, length) pairs in the HDF5
    data, which starts ``base`` bytes into both files)."""

    source: str
    base: int
    written: tuple[tuple[int, int], ...]

    def untouched(self, span: tuple[int, int]) -> bool:
        """Whether the HDF5 byte range ``span`` was copied and never written."""
        offset, length = span
        return all(offset + length <= o or offset >= o + n for o, n in self.written)


def pieces(member: MemberSpan, cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The member's bytes as consecutive (offset, length) pieces, split where each of the
    (absolute, non-overlapping) ranges ``cuts`` starts and ends."""
    out: list[tuple[int, int]] = []
    at, end = member.data_offset, member.data_offset + member.size
    for offset, length in sorted(cuts):
        if offset > at:
            out.append((at, offset - at))
        out.append((offset, length))
        at = offset + length
    if end > at:
        out.append((at, end - at))
    return out


def piece_crcs(path: str, parts: list[tuple[int, int]]) -> list[int]:
    """The CRC-32 of each (offset, length) piece of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [crc32_of(fd, offset, length) for offset, length in parts]
    except OSError:
        raise InputError(f"{path}: the archive is shorter than its members declare") from None
    finally:
        os.close(fd)
