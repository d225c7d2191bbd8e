"""The ``.keras`` zip archive: checked member by member, read without unpacking.

Keras stores the archive's members uncompressed, so the weights file is opened in place
through a window onto the zip file instead of being copied out; a compressed member
(some tools re-zip archives) is first inflated into an anonymous temporary file, only as far
as its configuration's weights need (budget.py) and only when the temporary directory has
the room.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from typing import IO, TYPE_CHECKING, Any

from bilstm_cli.errors import InputError, first_line
from bilstm_cli.formats import budget
from bilstm_cli.formats.base import READ_ONLY_CRC_BYTES, identity
from bilstm_cli.formats.inplace import crc32_of
from bilstm_cli.formats.keras_config import MAX_CONFIG_BYTES, load_json

if TYPE_CHECKING:
    from bilstm_cli.formats.base import Session

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS_H5 = "model.weights.h5"
WEIGHTS_NPZ = "model.weights.npz"

# Keras itself writes members stored (ratio 1:1) and DEFLATE cannot exceed about 1032:1.
MAX_EXPANSION = 1100
MAX_MEMBER_BYTES = 64 * 1024**3
MAX_MEMBERS = 100_000
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


# From this size a member's CRC may be taken on a helper thread (base.Session); a smaller one
# is read at once, in less time than starting a thread takes.
_BESIDE_BYTES = 4 * 1024**2


class _ReadError(Exception):
    """Reading a member of the source archive failed."""


def _verify_crc(fd: int, start: int, info: zipfile.ZipInfo) -> None:
    """InputError unless the ``info.file_size`` bytes at ``start`` have the member's CRC."""
    try:
        crc = crc32_of(fd, start, info.file_size)
    except OSError:
        raise InputError(f"archive member '{info.filename}' is cut short") from None
    if crc != info.CRC:
        raise InputError(f"archive member '{info.filename}' is damaged (CRC mismatch)")


def check_member_crc(path: str, start: int, info: zipfile.ZipInfo) -> None:
    """:func:`_verify_crc` of the member in the archive at ``path``, errors naming it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read again ({exc.strerror or exc})") from None
    try:
        _verify_crc(fd, start, info)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None
    finally:
        os.close(fd)


class _Window(io.RawIOBase):
    """A read-only view of ``size`` bytes of ``f`` starting at ``start``."""

    def __init__(self, f: io.BufferedReader, start: int, size: int) -> None:
        super().__init__()
        self._f = f
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        view = memoryview(buffer).cast("B")[:n]
        got = self._f.readinto(view) or 0
        self._pos += got
        return got


class KerasArchive:
    """An open ``.keras`` archive. Use as a context manager."""

    def __init__(self, path: str, session: Session) -> None:
        self.path = path
        self._session = session
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._temp: IO[bytes] | None = None
        # Identity of the weights member's bytes (see base.identity), None when inflated.
        self.weights_key: tuple[object, ...] | None = None
        # Where a stored model.weights.h5 lies in the archive file: (descriptor, start, size).
        self.weights_span: tuple[int, int, int] | None = None
        try:
            self.zip = zipfile.ZipFile(self._file)
        except BaseException as exc:
            self._file.close()
            # NotImplementedError: a zip format version or feature zipfile does not know.
            if isinstance(exc, _DAMAGED + (zipfile.LargeZipFile, OSError, ValueError)):
                raise InputError(f"not a readable .keras archive ({first_line(exc)})") from None
            raise
        try:
            self._check_members()
        except BaseException:
            self.close()
            raise

    def _check_members(self) -> None:
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"the archive holds {len(infos)} members; refused as implausible")
        names = set()
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise InputError(f"archive member '{name}' has an unsafe path; refused")
            if info.file_size > MAX_MEMBER_BYTES or (
                info.file_size > 1024 * 1024
                and info.file_size > MAX_EXPANSION * max(info.compress_size, 1)
            ):
                raise InputError(
                    f"archive member '{name}' declares {info.file_size} bytes from "
                    f"{info.compress_size} stored; refused as a decompression bomb"
                )
            if name in names:
                # Readers disagree on which copy counts, so the file could show one model
                # here and load as another elsewhere.
                raise InputError(f"archive member '{name}' appears more than once; refused")
            names.add(name)
        self.names = names
        if CONFIG not in names:
            if WEIGHTS_H5 in names or WEIGHTS_NPZ in names:
                raise InputError("the archive has no config.json")
            raise InputError("a zip archive, but not a Keras model (no config.json)")
        if WEIGHTS_H5 not in names:
            if WEIGHTS_NPZ in names:
                # Keras writes that member with numpy.save of Python objects: reading it means
                # unpickling, which would run whatever the file names.
                raise InputError(
                    "its weights are stored as model.weights.npz, which holds pickled Python "
                    "objects; they are never loaded (re-save with the default weights format)"
                )
            raise InputError("the archive has no model.weights.h5")

    def read_member(self, name: str, limit: int) -> bytes:
        info = self.zip.getinfo(name)
        if info.file_size > limit:
            raise InputError(f"archive member '{name}' is {info.file_size} bytes; too large")
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise InputError(f"archive member '{name}' cannot be read ({exc})") from None
        if len(data) > limit:
            raise InputError(f"archive member '{name}' is larger than it declares")
        return data

    def weights_file(self) -> IO[bytes]:
        """A seekable file object over ``model.weights.h5``."""
        info = self.zip.getinfo(WEIGHTS_H5)
        if _plainly_stored(info):
            start = self._data_start(info)
            if start is None:
                raise InputError(f"archive member '{WEIGHTS_H5}' has a damaged header")
            self._check_crc(start, info)
            self.weights_key = self._key(start)
            self.weights_span = (self._file.fileno(), start, info.file_size)
            # Small: HDF5 reads its metadata through it; weights are read directly.
            return io.BufferedReader(_Window(self._file, start, info.file_size), 1 << 16)
        import tempfile  # only a compressed member needs it

        limit = self.inflate_limit(info)
        self._temp = tempfile.TemporaryFile()
        try:
            with self.zip.open(info) as src:
                _inflate(src, self._temp, limit)
        except _DAMAGED as exc:
            raise InputError(f"archive member '{WEIGHTS_H5}' cannot be read ({exc})") from None
        except OSError as exc:
            raise InputError(
                f"archive member '{WEIGHTS_H5}' cannot be inflated into the temporary "
                f"directory ({exc.strerror or exc})"
            ) from None
        self._temp.seek(0)
        return self._temp

    def _data_start(self, info: zipfile.ZipInfo) -> int | None:
        """Where a member's bytes start, after its local header; None if that is damaged."""
        self._file.seek(info.header_offset)
        header = self._file.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            return None
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != b"PK\x03\x04":
            return None
        return int(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])

    def _key(self, start: int) -> tuple[object, ...] | None:
        """The session key of the member data at ``start`` (see base.identity)."""
        try:
            return identity(self._file.fileno(), start)
        except (OSError, ValueError):
            return None

    def inflate_limit(self, info: zipfile.ZipInfo) -> int:
        """How far the compressed weights member may inflate (budget.py), once the
        temporary directory is known to have room for it; InputError otherwise."""
        import tempfile

        config = load_json(self.read_member(CONFIG, MAX_CONFIG_BYTES), CONFIG)
        limit = min(info.file_size, budget.weights_bytes(config), MAX_MEMBER_BYTES)
        where = tempfile.gettempdir()
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            free = None
        if free is not None and limit > free:
            raise InputError(
                f"archive member '{WEIGHTS_H5}' is compressed and needs up to {limit} bytes "
                f"of temporary space to read; {where} has {free} free"
            )
        return limit

    def _check_crc(self, start: int, info: zipfile.ZipInfo) -> None:
        """Read a stored member once, as zipfile would, so damaged bytes are reported here
        rather than read as weights. A command opens the same archive several times (read,
        edit, verify); an unchanged file is checked only the first time. When the session
        says so (base.Session), the check is put off to the writer's copy, made beside the
        reading of a command that only reports, or, for a large member read only in part,
        not made and said."""
        key = self._key(start)
        session = self._session
        if session.done("crc", key):
            return
        if key is not None and session.crc_deferred(self.path):
            path = self.path
            session.owe("crc", key, lambda: check_member_crc(path, start, info))
            return
        if session.read_only and info.file_size > READ_ONLY_CRC_BYTES:
            session.note(
                f"the CRC-32 of {info.filename} ({info.file_size / 1024**3:.1f} GiB) was not "
                "checked: only the weights shown were read (bilstm check and every write "
                "read it whole)"
            )
            return
        if (
            key is not None
            and info.file_size >= _BESIDE_BYTES
            and session.crc_checked_beside(self.path)
        ):
            path = self.path
            session.check_beside("crc", key, lambda: check_member_crc(path, start, info))
            return
        _verify_crc(self._file.fileno(), start, info)
        session.mark("crc", key)

    def extract_weights_to(self, dest: str) -> None:
        """Copy ``model.weights.h5`` out to ``dest`` (for editing in place)."""
        info = self.zip.getinfo(WEIGHTS_H5)
        limit = info.file_size if info.compress_type == zipfile.ZIP_STORED else None
        with open(dest, "wb") as out:
            try:
                with self.zip.open(WEIGHTS_H5) as src:
                    if limit is None:
                        _inflate(src, out, self.inflate_limit(info))
                    else:
                        _copy_member(src, out)
            except _DAMAGED as exc:
                raise InputError(
                    f"{self.path}: archive member '{WEIGHTS_H5}' is damaged ({first_line(exc)})"
                ) from None
            except InputError as exc:
                raise InputError(f"{self.path}: {exc.message}") from None
        if limit is not None and _plainly_stored(info):
            # zipfile checked the CRC as the copy reached the member's end: a check owed
            # for this member (base.Session) is made.
            start = self._data_start(info)
            if start is not None:
                self._session.mark("crc", self._key(start))

    def close(self) -> None:
        if self._temp is not None:
            self._temp.close()
        try:
            self.zip.close()
        except AttributeError:
            pass
        self._file.close()

    def __enter__(self) -> KerasArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plainly_stored(info: zipfile.ZipInfo) -> bool:
    """Whether a member's bytes are in the archive as they are (not compressed, not
    encrypted)."""
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1


# What zipfile raises for a member whose stored bytes are damaged (CRC, inflate, headers).
_DAMAGED = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, _ReadError)


def _copy_member(src: IO[bytes], out: IO[bytes]) -> None:
    """Copy a member out in blocks; errors writing ``out`` stay ``OSError``, errors reading
    ``src`` become ``_ReadError`` so that the two can be told apart."""
    while True:
        try:
            block = src.read(1 << 20)
        except OSError as exc:
            raise _ReadError(str(exc)) from None
        if not block:
            return
        out.write(block)


def _inflate(src: IO[bytes], out: IO[bytes], limit: int) -> None:
    """Copy a compressed member out, stopping with InputError as soon as it inflates beyond
    ``limit`` or beyond the end its HDF5 superblock declares (budget.py). Errors reading
    ``src`` become ``_ReadError``; errors writing ``out`` stay ``OSError``."""
    total = 0
    while True:
        try:
            block = src.read(1 << 20)
        except OSError as exc:
            raise _ReadError(str(exc)) from None
        if not block:
            return
        if total == 0:
            end = budget.declared_end(block)
            if end is not None:
                limit = min(limit, end + budget.EOA_SLACK)
        total += len(block)
        if total > limit:
            raise InputError(
                f"archive member '{WEIGHTS_H5}' inflates beyond {limit} bytes, more than the "
                "weights its configuration and HDF5 header describe; refused as a "
                "decompression bomb"
            )
        out.write(block)


def _without_zip64(extra: bytes) -> bytes:
    """Drop the zip64 record from a member's extra field: zipfile writes its own when needed."""
    kept = b""
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        if tag != 0x0001:
            kept += extra[i : i + 4 + size]
        i += 4 + size
    return kept


def rewrite_archive(src: str, dest: str, replacement: dict[str, str]) -> None:
    """Write ``dest`` as a copy of archive ``src``, member by member and in the same order,
    keeping each member's metadata (dates, attributes, compression), with the contents of
    the members named in ``replacement`` taken from the given files instead."""
    try:
        _rewrite(src, dest, replacement)
    except _DAMAGED as exc:
        raise InputError(f"{src}: the archive is damaged ({first_line(exc)})") from None


def _rewrite(src: str, dest: str, replacement: dict[str, str]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        zout.comment = zin.comment
        for info in zin.infolist():
            # A fresh ZipInfo carrying the same metadata; sizes and CRC are recomputed.
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.compress_type = info.compress_type
            out.external_attr = info.external_attr
            out.internal_attr = info.internal_attr
            out.create_system = info.create_system
            out.comment = info.comment
            out.extra = _without_zip64(info.extra)
            if info.filename in replacement:
                size = os.path.getsize(replacement[info.filename])
                with (
                    open(replacement[info.filename], "rb") as f,
                    zout.open(out, "w", force_zip64=size > 0x7FFFFFFF) as w,
                ):
                    shutil.copyfileobj(f, w, 1 << 20)
            else:
                with (
                    zin.open(info) as f,
                    zout.open(out, "w", force_zip64=info.file_size > 0x7FFFFFFF) as w,
                ):
                    _copy_member(f, w)
