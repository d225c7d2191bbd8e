"""Writing a model file with some weight datasets replaced, and nothing else touched.

The output is built as a temporary file beside the target and renamed into place only once
the caller has verified it, so the target path is always either absent, its old self, or a
complete verified file. The input is only ever opened for reading.

- ``.h5`` / ``.weights.h5``: the input is copied, and the chosen datasets are overwritten in
  place in the copy. Every other byte of HDF5 structure stays as Keras wrote it. Datasets
  stored chunked or through filters (gzip, lzf, shuffle, fletcher32) are rewritten by HDF5
  with their own chunk shape and filters; every dataset keeps its dtype and byte order
  (bfloat16 stays 2-byte data tagged ``dtype="bfloat16"``).
- ``.keras``: ``model.weights.h5`` is copied out and edited the same way, then the archive is
  rebuilt member by member in the original order with the original member metadata.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from bilstm_cli import dtypes
from bilstm_cli.concurrency import Background, in_parallel
from bilstm_cli.errors import InputError, OutputError, first_line
from bilstm_cli.formats import crc, h5heaps, h5safe
from bilstm_cli.formats.archive import (
    WEIGHTS_H5,
    KerasArchive,
    rewrite_archive,
)
from bilstm_cli.formats.base import Session, Writer, digest, path_identity
from bilstm_cli.formats.compare import unchanged_except
from bilstm_cli.formats.hdf5 import Span, open_weights_at, read_values
from bilstm_cli.formats.inplace import (
    Copied,
    MemberSpan,
    copy_around,
    crc32_of,
    dataset_span,
    patch_crc,
    piece_crcs,
    pieces,
    pwrite_all,
    stored_member,
)
from bilstm_cli.formats.outputs import check_output, os_error
from bilstm_cli.model import Model

# From this size on, a written weight is fingerprinted in a helper thread during the write.
_PARALLEL_DIGEST = 1 << 20


class _Terminated(BaseException):
    """SIGTERM, raised so that temporary files are removed on the way out."""


class StagedWrite:
    """An editable copy of a model's weights, staged beside the final output.

    Use as a context manager: ``write()`` datasets, ``finish()`` to assemble the staged file,
    verify it at ``staged_path``, then ``commit()``. Leaving the block without ``commit()``
    (an error, Ctrl-C, SIGTERM) removes every temporary file.
    """

    def __init__(
        self, model: Model, output: str, datasets: Sequence[str], session: Session
    ) -> None:
        self.model = model
        self.session = session
        self.output = output
        self.written: dict[str, str] = {}
        self.staged_path = ""
        self._h5: h5py.File | None = None
        self._edit_path: str | None = None
        self._committed = False
        self._terminated = False
        self._previous_term: Any = None
        # In-place editing (see inplace.py): the datasets to write, where their bytes are in
        # the staged copy, the input opened for reading, and the staged copy's descriptor.
        self._datasets = list(datasets)
        self._spans: dict[str, tuple[int, int]] = {}
        self._member: MemberSpan | None = None
        self._source: contextlib.ExitStack | None = None
        self._source_h5: h5py.File | None = None
        self._source_span: Span | None = None
        self._fd: int | None = None
        # The finishing pass (member CRC, flush to disk) running while the copy is verified.
        self._sealing: tuple[int, Background[None]] | None = None
        self._seal_crc: int | None = None
        # An archive member's pieces with the input's CRC of each, and of each span written.
        self._kept: dict[tuple[int, int], int] = {}
        # While the copy's CRC pass runs: its pieces, the pass, the input's state before it.
        self._input_crc: (
            tuple[list[tuple[int, int]], Background[list[int]], tuple[object, ...]] | None
        ) = None
        self._new_crc: dict[tuple[int, int], int] = {}

    @property
    def in_place(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> StagedWrite:
        try:
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread: nothing to install
            self._previous_term = None
        directory, base = os.path.split(self.output)
        suffix = ".keras" if self.model.format == "keras" else os.path.splitext(base)[1]
        try:
            self._create_staged(directory, base, suffix)
            if self._plan_in_place():
                self._copy_in_place()
                self._fd = os.open(self.staged_path, os.O_RDWR)
            elif self.model.format == "keras":
                self._edit_path = self.staged_path + ".weights.h5"
                with KerasArchive(self.model.path, self.session) as archive:
                    archive.extract_weights_to(self._edit_path)
            else:
                self._edit_path = self.staged_path
                shutil.copyfile(self.model.path, self._edit_path)
            if not self.in_place:
                try:
                    self._h5 = h5py.File(self._edit_path, "r+")
                except (OSError, RuntimeError, ValueError) as exc:
                    raise self._h5_error(exc, "opened for rewriting") from None
                # A copy of the input: its heaps are checked as the input's would be.
                edit = self._edit_path
                assert edit is not None
                h5heaps.register_source(self._h5, edit, path_identity(edit), self.session)
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            if isinstance(exc, OSError):
                raise os_error(self.output, exc) from None
            raise
        return self

    def _on_term(self, signum: int, frame: Any) -> None:
        # Remembered as well as raised: h5py may swallow the exception in a callback and
        # fail in some other way, which must still end as an interruption.
        self._terminated = True
        raise _Terminated()

    def _create_staged(self, directory: str, base: str, suffix: str) -> None:
        """Create the staged file, naming it before it exists: a Ctrl-C or SIGTERM landing
        at any moment then finds the name to clean up (tempfile.mkstemp only tells it once
        the file is already there)."""
        for _ in range(100):
            self.staged_path = os.path.join(
                directory, f".{base[:120]}.{os.urandom(6).hex()}.tmp{suffix}"
            )
            try:
                fd = os.open(self.staged_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.close(fd)
            return
        raise FileExistsError(errno.EEXIST, "no free temporary name", directory)

    def _plan_in_place(self) -> bool:
        """Whether every dataset to write is one plain run of bytes in a plainly stored file;
        if so, remember where each one is."""
        if not self._datasets:
            return False
        base = 0
        if self.model.format == "keras":
            self._member = stored_member(self.model.path, WEIGHTS_H5)
            if self._member is None:
                return False
            base = self._member.data_offset
        self._source = contextlib.ExitStack()
        self._source_h5, self._source_span = self._source.enter_context(
            open_weights_at(self.model.path, self.session)
        )
        for name in self._datasets:
            span = dataset_span(h5safe.dataset(self._source_h5, name))
            if span is None:
                self._close_source()
                self._spans.clear()
                return False
            self._spans[name] = (base + span[0], span[1])
        ordered = sorted(self._spans.values())
        if any(a + n > b for (a, n), (b, _) in zip(ordered, ordered[1:])):
            # Two names for the same bytes: the general writer, whose verification says so.
            self._close_source()
            self._spans.clear()
            return False
        return True

    def _copy_in_place(self) -> None:
        """Copy the input around the spans about to be written. An archive's member CRC is
        taken meanwhile, on the other core, piece by piece (checked by finish()): the pieces
        that stay give the output's CRC too (crc.py), with no second read."""
        source, spans = self.model.path, list(self._spans.values())
        before = path_identity(source)
        member = self._member
        if member is not None:
            # Read on the other core while the work goes on: finish() waits for it, and
            # nothing made from the input is finished before its CRC is known to match.
            parts = pieces(member, spans)
            self._input_crc = (parts, Background(lambda: piece_crcs(source, parts)), before)
        copy_around(source, self.staged_path, spans)
        if path_identity(source) != before:
            raise InputError(f"{source}: changed while it was being copied; try again")
        base = member.data_offset if member is not None else 0
        written = tuple((offset - base, length) for offset, length in spans)
        self.session.copies[self.staged_path] = Copied(source, base, written)

    def _check_input_crc(self) -> None:
        """Wait for the input member's CRC-32 taken piece by piece beside the work; refuse
        the input if it does not match. The pieces' CRCs then give the output's (crc.py)."""
        if self._input_crc is None:
            return
        assert self._member is not None
        (parts, pending, before), self._input_crc = self._input_crc, None
        crcs = pending.result()
        if path_identity(self.model.path) != before:
            # What was read for the CRC may not be what was copied: the output's CRC,
            # derived from it, would not hold.
            raise InputError(f"{self.model.path}: changed while it was being copied; try again")
        self._kept = dict(zip(parts, crcs))
        if crc.joined((c, p[1]) for p, c in zip(parts, crcs)) != self._member.crc:
            raise InputError(
                f"{self.model.path}: archive member '{WEIGHTS_H5}' is damaged (CRC mismatch)"
            )
        self.session.mark("crc", path_identity(self.model.path, self._member.data_offset))

    def _close_source(self) -> None:
        if self._source is not None:
            source, self._source, self._source_h5 = self._source, None, None
            self._source_span = None  # its descriptor closes with it
            source.close()

    def read(self, dataset: str) -> np.ndarray:
        h5 = self._source_h5 if self.in_place else self._h5
        assert h5 is not None
        span = self._source_span if self.in_place else None
        return read_values(h5safe.dataset(h5, dataset), dataset, span)

    def write(self, dataset: str, values: np.ndarray) -> None:
        """Overwrite one dataset; shape and dtype must be the dataset's own."""
        h5 = self._source_h5 if self.in_place else self._h5
        assert h5 is not None
        ds = h5safe.dataset(h5, dataset)
        stored_as, given = h5safe.dtype_name(ds), dtypes.storage(values)
        if tuple(ds.shape) != tuple(values.shape) or stored_as != given:
            raise InputError(
                f"{self.model.path}: '{dataset}' is {stored_as}{tuple(ds.shape)}, "
                f"cannot take {given}{tuple(values.shape)}"
            )
        # The file's own dtype and byte order (bfloat16 as its 2-byte patterns): h5py then
        # writes the bytes as they are, through the dataset's chunking and filters if any.
        stored = h5safe.stored_form(ds, values)
        if self.in_place:
            assert self._fd is not None and dataset in self._spans, dataset
            offset, length = self._spans[dataset]
            data = np.ascontiguousarray(stored)
            if data.nbytes != length:
                raise InputError(
                    f"{self.model.path}: '{dataset}' holds {length} bytes, not {data.nbytes}"
                )
            view = data.data.cast("B")
            try:
                if data.nbytes < _PARALLEL_DIGEST:
                    pwrite_all(self._fd, view, offset)
                    self.written[dataset] = digest(values)
                else:  # the fingerprint is taken while the bytes go out
                    fd = self._fd
                    self.written[dataset], _ = in_parallel(
                        lambda: digest(values), lambda: pwrite_all(fd, view, offset)
                    )
                if self._member is not None:
                    # The fingerprint is the CRC-32 of the same bytes when no cast was needed.
                    same = stored.dtype == np.asarray(values).dtype
                    tag = self.written[dataset].rsplit(":", 1)[1]
                    self._new_crc[(offset, length)] = int(tag, 16) if same else crc.crc32(view)
            except OSError as exc:
                raise os_error(self.output, exc) from None
            return
        try:
            ds[...] = stored
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise self._h5_error(exc, f"rewritten at '{dataset}'") from None
        self.written[dataset] = digest(values)

    def _h5_error(self, exc: BaseException, what: str) -> OutputError | InputError:
        """An HDF5 failure while editing the copy: the output's fault when the system
        refused a write (disk full, read-only), otherwise the input's damaged structure."""
        if isinstance(exc, OSError) and exc.errno is not None:
            return os_error(self.output, exc)
        text = str(exc)
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO):
            if f"errno = {code}," in text:
                return os_error(self.output, OSError(code, os.strerror(code)))
        return InputError(
            f"{self.model.path}: damaged HDF5 data; it cannot be {what} ({first_line(exc)})"
        )

    def finish(self) -> None:
        """Close the edited weights and, for an archive, assemble the staged ``.keras``."""
        self._check_input_crc()
        self.session.settle()  # a check of the input put off for a copy that did not make it
        if self.in_place:
            self._finish_in_place()
            return
        try:
            if self._h5 is not None:
                h5, self._h5 = self._h5, None
                try:
                    h5.close()
                except (OSError, RuntimeError, ValueError) as exc:
                    raise self._h5_error(exc, "written back") from None
            if self.model.format == "keras":
                assert self._edit_path is not None
                rewrite_archive(self.model.path, self.staged_path, {WEIGHTS_H5: self._edit_path})
                os.remove(self._edit_path)
                self._edit_path = None
            with open(self.staged_path, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as exc:
            raise os_error(self.output, exc) from None

    def _finish_in_place(self) -> None:
        assert self._fd is not None
        self._close_source()
        if self._member is not None:
            self._seal_crc = self._output_crc(self._fd)
        # The flush to disk needs nothing from the caller: a helper thread does it while the
        # copy is verified, and seal() (or commit()) waits for it, writes the CRC into the
        # zip headers and reports failures.
        # The descriptor moves to the pass only once the pass was surely handed over: a signal
        # can interrupt starting a helper, and work never handed over cannot be waited for.
        fd = self._fd
        sealing = Background(lambda: os.fsync(fd))
        self._sealing, self._fd = (fd, sealing), None
        start = self._member.data_offset if self._member is not None else 0
        key = path_identity(self.staged_path, start)
        if self._member is not None:
            # Its bytes were just written and verification checks them itself; the recorded
            # CRC is brought up to date from those same bytes before the rename.
            self.session.mark("crc", key)
        # Only weight bytes changed; the HDF5 structure (heaps included) is the input's, so
        # heaps already found sound there are sound here.
        if self.session.done("heaps", path_identity(self.model.path, start)):
            self.session.mark("heaps", key)

    def _output_crc(self, fd: int) -> int:
        """The staged member's CRC-32 from its pieces: those copied keep the input's, each
        span written has the CRC of the bytes written (read back only if left unwritten)."""
        spans = set(self._spans.values())
        parts = []
        for piece, kept in self._kept.items():
            if piece in self._new_crc:
                value = self._new_crc[piece]
            elif piece in spans:
                value = crc32_of(fd, *piece)
            else:
                value = kept
            parts.append((value, piece[1]))
        return crc.joined(parts)

    def seal(self) -> None:
        """Wait for the finishing pass; write the member's CRC into the zip headers and flush
        that too. After this the staged file is complete, as it will be renamed."""
        if self._sealing is None:
            return
        fd, sealing = self._sealing
        self._sealing = None
        try:
            sealing.result()  # the flush's failure, if any, raised here
            if self._member is not None:
                assert self._seal_crc is not None
                patch_crc(fd, self._member, self._seal_crc)
                os.fsync(fd)
        except OSError as exc:
            raise os_error(self.output, exc) from None
        finally:
            os.close(fd)

    def _abandon_seal(self) -> None:
        if self._sealing is None:
            return
        fd, sealing = self._sealing
        self._sealing = None
        sealing.wait()
        with contextlib.suppress(OSError):
            os.close(fd)

    def commit(self) -> None:
        """Give the staged file the permissions of the file it replaces (ordinary ones for a
        new file) and rename it over the output."""
        self.seal()
        try:
            try:
                mode = stat.S_IMODE(os.stat(self.output).st_mode) & 0o777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(self.staged_path, mode)
            os.replace(self.staged_path, self.output)
        except OSError as exc:
            raise os_error(self.output, exc) from None
        self._committed = True
        # Make the rename itself durable; not every file system can sync a directory.
        with contextlib.suppress(OSError):
            fd = os.open(os.path.dirname(self.output) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._abandon_seal()
        self._close_source()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._h5 is not None:
            with contextlib.suppress(Exception):
                self._h5.close()
            self._h5 = None
        for path in (self._edit_path, None if self._committed else self.staged_path):
            if path and os.path.exists(path):
                with contextlib.suppress(OSError):
                    os.remove(path)
        if self._previous_term is not None:
            signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None
        if exc_type is _Terminated or (self._terminated and exc_type is not None):
            raise KeyboardInterrupt from None


WRITER = Writer(check_output, StagedWrite, unchanged_except)
