"""Opening the HDF5 data of a Keras file (a ``.h5`` file, or the weights member of a
``.keras`` archive) safely, and reading weights from it by their dataset path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np

from bilstm_cli.errors import InputError, UsageError, first_line
from bilstm_cli.formats import h5heaps, h5safe
from bilstm_cli.formats.archive import KerasArchive
from bilstm_cli.formats.base import Session, Writer, path_identity, sniff
from bilstm_cli.formats.inplace import dataset_span
from bilstm_cli.model import Model


def open_h5(source: Any, key: tuple[object, ...] | None, session: Session) -> h5py.File:
    """``source`` (a path or a seekable file object) opened read-only by h5py. Its global
    heaps are checked before the first value kept in them is read (h5heaps.guard)."""
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"the HDF5 data cannot be opened ({first_line(exc)})") from None
    h5heaps.register_source(f, source, key, session)
    return f


@contextmanager
def about(path: str) -> Iterator[None]:
    """Name the file in every error raised while reading it."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        # h5py reports damaged files in many ways; all of them mean the same to a user.
        raise InputError(f"{path}: damaged or unreadable model data ({first_line(exc)})") from None
    except MemoryError:
        raise InputError(f"{path}: reading it needs more memory than is available") from None


@contextmanager
def open_weights(path: str, session: Session) -> Iterator[h5py.File]:
    """The HDF5 file holding a model's weights, opened read-only."""
    with open_weights_at(path, session) as (f, _span):
        yield f


Span = tuple[int, int, int]  # a stored archive member: (descriptor, start, size)


def read_direct(ds: h5py.Dataset, span: Span | None) -> np.ndarray | None:
    """A plain weight of a stored archive member (``span``) read straight from the archive
    file, without HDF5 reading it through a Python file object; None when it is not plain
    (native floating point, contiguous, unfiltered, inside the member)."""
    if span is None or ds.dtype.kind != "f" or not ds.dtype.isnative:
        return None
    where = dataset_span(ds)
    if where is None or h5safe.is_bfloat16(ds):
        return None
    fd, start, size = span
    offset, length = where
    if offset + length > size:
        return None  # beyond the member: HDF5 reports it as it reads
    out = np.empty(ds.shape, ds.dtype)
    try:
        got = os.preadv(fd, [out.reshape(-1).data.cast("B")], start + offset)
    except OSError:
        return None
    return out if got == length else None


def read_values(ds: h5py.Dataset, location: str, span: Span | None) -> np.ndarray:
    """:func:`h5safe.read` of ``ds``, straight from the archive when it is plain."""
    direct = read_direct(ds, span)
    return direct if direct is not None else h5safe.read(ds, location)


@contextmanager
def open_weights_at(
    path: str, session: Session
) -> Iterator[tuple[h5py.File, tuple[int, int, int] | None]]:
    """:func:`open_weights`, with where a stored archive member lies in its archive."""
    with _open_weights_in(path, session) as (f, archive):
        yield f, archive.weights_span if archive else None


@contextmanager
def _open_weights_in(
    path: str, session: Session
) -> Iterator[tuple[h5py.File, KerasArchive | None]]:
    """The HDF5 data of the Keras file at ``path``, and its archive when it is a ``.keras``
    one, both open until the block ends."""
    with h5safe.no_filter_plugins():
        with about(path):
            archive = KerasArchive(path, session) if sniff(path).kind == "zip" else None
            try:
                if archive:
                    f = open_h5(archive.weights_file(), archive.weights_key, session)
                else:
                    f = open_h5(path, path_identity(path), session)
            except BaseException:
                if archive:
                    archive.close()
                raise
        try:
            yield f, archive
        finally:
            f.close()
            if archive:
                archive.close()


class H5Reader:
    """Reads weights of one Keras file by dataset path until closed."""

    def __init__(self, path: str, session: Session) -> None:
        opened = open_weights_at(path, session)
        f, span = opened.__enter__()
        self._adopt(path, f, span, lambda: opened.__exit__(None, None, None))

    @classmethod
    def over(
        cls, path: str, f: h5py.File, span: Span | None, close: Callable[[], object]
    ) -> H5Reader:
        """A reader over the already open ``f`` (``span``: where its archive member lies);
        ``close`` is called when the reader is closed."""
        reader = cls.__new__(cls)
        reader._adopt(path, f, span, close)
        return reader

    def _adopt(
        self, path: str, f: h5py.File, span: Span | None, close: Callable[[], object]
    ) -> None:
        self.path = path
        self._file: h5py.File | None = f
        self._span = span
        self._close = close

    def read(self, location: str) -> np.ndarray:
        if self._file is None:
            raise UsageError(f"{self.path} is closed; read weights inside its 'with' block")
        try:
            return read_values(h5safe.dataset(self._file, location), location, self._span)
        except InputError as exc:
            raise InputError(f"{self.path}: {exc.message}") from None

    def close(self) -> None:
        if self._file is not None:
            self._file = None
            self._close()


def open_model(
    path: str, session: Session, layout: Callable[[h5py.File, KerasArchive | None], Model]
) -> Model:
    """The model ``layout`` reads from the open HDF5 data of the Keras file at ``path`` (and
    its archive, if any), bound to a reader over that same open file: the datasets found
    and checked while reading the layout are not looked up again when their values are."""
    opened = _open_weights_in(path, session)
    f, archive = opened.__enter__()
    try:
        with about(path):
            model = layout(f, archive)
    except BaseException:
        opened.__exit__(None, None, None)
        raise
    span = archive.weights_span if archive else None
    model.bind(H5Reader.over(path, f, span, lambda: opened.__exit__(None, None, None)))
    return model


def keras_writer() -> Writer:
    """How every Keras layout is written: a staged copy, edited and verified (staging.py)."""
    from bilstm_cli.formats.staging import WRITER

    return WRITER


def open_reader(path: str, session: Session) -> H5Reader:
    """A :class:`H5Reader` over the weights of the Keras file at ``path``."""
    return H5Reader(path, session)
