"""What every file format provides, and what one operation remembers about the files it read.

A format is one :class:`Format` entry: whether it claims a file, how to read its layout into a
:class:`~bilstm_cli.model.Model` (no weight values), how to open it for reading values, and how
to write a changed copy (:class:`Writer`). The operations see only these; no file handle or
format library object ever reaches them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bilstm_cli.concurrency import Background, in_parallel
from bilstm_cli.errors import InputError
from bilstm_cli.formats import crc

if TYPE_CHECKING:
    from bilstm_cli.model import Model, WeightReader

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class Session:
    """The safety checks already made on unchanged data during one operation.

    One command opens the same file several times (its layout, its values, the copy being
    verified); a whole-member CRC or a heap scan of data already checked would only cost
    time. Keys are ``(check, device, inode, size, mtime, offset)``: a file that changed is
    checked again. A session lives as long as the call that made it, never longer.

    How an archive's whole-member CRC-32 is checked depends on the operation:

    - by default, when the member is first opened;
    - ``read_only``: a command that only reports on the weights it reads checks the CRC of a
      member up to :data:`READ_ONLY_CRC_BYTES` on a helper thread while it reads, and
      :meth:`settle` before it reports; of a larger one it reads only what it shows, and
      says so in :attr:`notes`;
    - a file given to :meth:`defer_crc` is about to be copied: the writer checks its CRC in
      the same pass as the copy, and :meth:`settle` does it for any use that did not copy;
    - a file given to :meth:`crc_beside` (a transplant's donor) is checked whole on a helper
      thread from its first opening, and :meth:`settle` waits for it.
    """

    checked: set[tuple[object, ...]] = field(default_factory=set)
    read_only: bool = False
    notes: list[str] = field(default_factory=list)
    # Staged files copied byte for byte from an input (inplace.Copied), by path.
    copies: dict[str, Any] = field(default_factory=dict)
    _deferred: set[str] = field(default_factory=set)
    _beside: set[str] = field(default_factory=set)
    _owed: dict[tuple[object, ...], Callable[[], None]] = field(default_factory=dict)

    def done(self, check: str, key: tuple[object, ...] | None) -> bool:
        return key is not None and (check, *key) in self.checked

    def mark(self, check: str, key: tuple[object, ...] | None) -> None:
        if key is not None:
            self.checked.add((check, *key))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def defer_crc(self, path: str) -> None:
        """``path`` is about to be copied by a writer, which checks its archive CRC while
        copying it: opening it does not read it whole beforehand."""
        self._deferred.add(os.path.realpath(path))

    def crc_deferred(self, path: str) -> bool:
        return os.path.realpath(path) in self._deferred

    def crc_beside(self, path: str) -> None:
        """``path`` is read, not copied, by a command that settles before it finishes: its
        archive CRC is checked whole, on a helper thread, while the command goes on."""
        self._beside.add(os.path.realpath(path))

    def crc_checked_beside(self, path: str) -> bool:
        return self.read_only or os.path.realpath(path) in self._beside

    def owe(self, check: str, key: tuple[object, ...], run: Callable[[], None]) -> None:
        """Remember a check put off (``run`` makes it) until :meth:`settle`."""
        self._owed[(check, *key)] = run

    def check_beside(self, check: str, key: tuple[object, ...], run: Callable[[], None]) -> None:
        """Start the check ``run`` makes on a helper thread now, beside the reading it
        protects; :meth:`settle` waits for it and raises what it found."""
        if (check, *key) in self._owed or (check, *key) in self.checked:
            return
        self._owed[(check, *key)] = Background(run).result

    def settle(self) -> None:
        """Make every check still owed and not done since: before values read from a
        deferred file are reported or written."""
        while self._owed:
            key, run = next(iter(self._owed.items()))
            if key not in self.checked:
                run()
                self.checked.add(key)
            del self._owed[key]


# Below this a read-only command checks an archive member's CRC-32 whole; above, it reads
# only the weights it reports (a 2 GB member would take seconds to read for a listing).
READ_ONLY_CRC_BYTES = 256 * 1024**2


def identity(fileno: int, start: int = 0) -> tuple[object, ...]:
    """A file's identity and state (device, inode, size, modification time) and the offset
    of the part meant: equal keys mean the same unchanged bytes."""
    st = os.fstat(fileno)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, start)


def path_identity(path: str, start: int = 0) -> tuple[object, ...]:
    """:func:`identity` of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return identity(fd, start)
    finally:
        os.close(fd)


# Called with (location, values read back) for each weight a command wrote.
OnWritten = Callable[[str, np.ndarray], None]


class Stage(Protocol):
    """A changed copy of a model being written beside its final name (see staging.py)."""

    staged_path: str
    written: dict[str, str]

    def read(self, location: str) -> np.ndarray: ...

    def write(self, location: str, values: np.ndarray) -> None: ...

    def finish(self) -> None: ...

    def seal(self) -> None: ...

    def commit(self) -> None: ...

    def __enter__(self) -> Stage: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...


@dataclass(frozen=True)
class Comparison:
    """What re-reading a staged output found, against the input and the intended values."""

    #: Everything that changed though nothing asked it to (members, attributes, datasets).
    unchanged: list[str]
    #: Written weights that do not hold what was written, or were not found again.
    not_as_written: list[str]
    #: Written weights read back equal, bit for bit, to what was written.
    read_back: int


@dataclass(frozen=True)
class Writer:
    """How a format writes: check the output path, stage a copy, and compare the copy."""

    check_output: Callable[[Model, str, bool], str]
    stage: Callable[[Model, str, Sequence[str], Session], Stage]
    unchanged_except: Callable[[Model, str, dict[str, str], OnWritten | None, Session], Comparison]


@dataclass(frozen=True)
class Probe:
    """What is known of a file before a format claims it: its path, its kind and its first
    bytes (``head``, up to :data:`HEAD_BYTES`; empty for a directory)."""

    path: str
    kind: str  # "zip", "hdf5", "dir" (a folder) or "other" (a regular file of another kind)
    head: bytes = b""


HEAD_BYTES = 64

#: What :func:`unclaimed` says of a file no format claims, by its kind.
UNCLAIMED = {
    "dir": "is a directory, not a model file",
    "other": "not a Keras model file (neither a .keras zip archive nor HDF5)",
}


def unclaimed(probe: Probe) -> InputError:
    """The error for a file that no format claims."""
    if probe.kind == "other" and os.path.getsize(probe.path) == 0:
        return InputError("is empty")
    return InputError(UNCLAIMED.get(probe.kind, "not a model file any format here reads"))


@dataclass(frozen=True)
class Format:
    """One file layout the tool reads (and writes, when ``writer`` is set).

    ``writer`` gives the :class:`Writer` when asked, so that reading a file never loads the
    writing machinery. ``open_model``, when set, does ``read_model`` and binds a reader in
    one opening of the file (otherwise the two open it each in turn)."""

    name: str
    claims: Callable[[Probe, Session], bool]
    read_model: Callable[[str, Session], Model]
    open_reader: Callable[[str, Session], WeightReader]
    writer: Callable[[], Writer] | None = None
    open_model: Callable[[str, Session], Model] | None = None


def sniff(path: str) -> Probe:
    """The kind of file at ``path``; InputError for what cannot be read at all (missing,
    a pipe, device or socket, no permission). A regular file of an unknown kind is ``other``:
    formats decide whether they claim it, from its ``head`` and name."""
    if not os.path.exists(path):
        raise InputError("no such file")
    if os.path.isdir(path):
        return Probe(path, "dir")
    if not os.path.isfile(path):
        # Opening a pipe would wait for a writer forever; devices never end.
        raise InputError("is a pipe, device or socket, not a model file")
    try:
        with open(path, "rb") as f:
            first = f.read(HEAD_BYTES)
            head = first[:8]
            if head[:4] in ZIP_MAGICS:
                return Probe(path, "zip", first)
            # HDF5 allows a user block of 512, 1024, 2048… bytes before the signature.
            offset = 0
            while head == HDF5_MAGIC or offset < 1 << 20:
                if head == HDF5_MAGIC:
                    return Probe(path, "hdf5", first)
                offset = 512 if offset == 0 else offset * 2
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    break
    except PermissionError:
        raise InputError("permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})") from None
    return Probe(path, "other", first)


# From this many bytes on, a fingerprint's two halves are taken on two cores. With zlib-ng a
# weight of a few MiB takes well under a millisecond whole, less than handing half over saves.
_SPLIT_DIGEST = 32 << 20


def digest(array: np.ndarray) -> str:
    """A fingerprint of an array's exact bytes, dtype and shape: CRC-32 of the bytes.

    It only has to catch accidents (a write that went wrong, a mask applied to the wrong
    columns), never an adversary, and it is read back over every weight a command writes:
    CRC-32 catches any burst error and all but 1 in 4 billion others, at many times SHA-256's
    speed (crc.crc32). A very large array's two halves are taken at once and their CRCs
    joined: the same number.
    """
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1).data
    if data.nbytes < _SPLIT_DIGEST:
        value = crc.crc32(data)
    else:
        half = data.nbytes // 2
        first, second = in_parallel(lambda: crc.crc32(data[:half]), lambda: crc.crc32(data[half:]))
        value = crc.combine(first, second, data.nbytes - half)
    return f"{array.dtype.str}{array.shape}:{value:08x}"
