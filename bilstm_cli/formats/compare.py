"""Proof that a written file differs from its input only where it was meant to."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from functools import partial
from typing import Any

import h5py
import numpy as np

from bilstm_cli.concurrency import SerialWorker
from bilstm_cli.errors import InputError, first_line
from bilstm_cli.formats import h5heaps, h5safe
from bilstm_cli.formats.archive import WEIGHTS_H5
from bilstm_cli.formats.base import Comparison, OnWritten, Session, digest
from bilstm_cli.formats.hdf5 import Span, open_weights, open_weights_at, read_values
from bilstm_cli.formats.inplace import Copied, dataset_span
from bilstm_cli.model import Model

MAX_PROBLEMS = 20
# Datasets are compared a block at a time, so memory stays bounded whatever the file declares.
BLOCK_BYTES = 16 * 1024**2
MAX_OBJECTS = 1_000_000


class _Damaged(Exception):
    """The HDF5 data could not be read at ``where``."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(where)
        self.where = where
        self.exc = exc


def _link_key(link: Any) -> tuple[Any, ...]:
    if isinstance(link, h5py.SoftLink):
        return ("soft", link.path)
    if isinstance(link, h5py.ExternalLink):
        return ("external", link.filename, link.path)
    if isinstance(link, h5py.HardLink):
        return ("hard",)
    return ("missing",)


def _same_value(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return bool(a.tolist() == b.tolist())
    return bool(a.tobytes() == b.tobytes())


def _same_attrs(x: Any, y: Any) -> bool:
    if _attribute_count(x) == 0 == _attribute_count(y):
        return True  # most groups of a weights file have none: nothing to list or read
    if set(x.attrs) != set(y.attrs):
        return False
    return all(_same_value(h5safe.attr(x, k), h5safe.attr(y, k)) for k in x.attrs)


def _attribute_count(obj: Any) -> int | None:
    """How many attributes the object header of ``obj`` lists (None when it cannot say)."""
    try:
        return int(h5py.h5o.get_info(obj.id).num_attrs)
    except (AttributeError, RuntimeError, ValueError, OSError, KeyError, TypeError):
        return None


def compare_weights(
    before: h5py.Group,
    after: h5py.Group,
    written: dict[str, str],
    problems: list[str],
    on_written: OnWritten | None = None,
    not_as_written: list[str] | None = None,
    copied: Copied | None = None,
    span: Span | None = None,
) -> set[str]:
    """Walk two HDF5 trees side by side; return the datasets seen. ``on_written`` is given
    each written dataset's values as read back, so callers check them without a second read.

    Each object is compared once, however many hard links lead to it (a file may link a
    group into itself). Raises ``_Damaged`` (naming the place) when a tree cannot be read.
    When ``after`` was copied from ``before`` (``copied``), a dataset whose bytes were copied
    and never written is known equal without reading it: only what changed is compared.
    """
    not_as_written = not_as_written if not_as_written is not None else problems
    walk = _Walk(written, problems, on_written, _written_objects(after, written, not_as_written))
    walk.not_as_written = not_as_written
    walk.copied = copied
    walk.span = span
    try:
        _walk_trees(before, after, walk)
        walk.helper.finish()  # every written dataset read back is checked
    finally:
        walk.helper.close()
    return walk.seen


# A group still to be walked: its path and the group in each file, opened as its parent's
# members were (so that it is not looked up again from the root), or None when the stack
# already holds many open groups: a file can give one group a million members, and those
# wait as paths, opened when their turn comes.
_Pending = tuple[str, h5py.Group | None, h5py.Group | None]
_OPEN_PENDING = 64


def _walk_trees(before: h5py.Group, after: h5py.Group, walk: _Walk) -> None:
    problems = walk.problems
    stack: list[_Pending] = [("", before, after)]
    visited = 0
    while stack and len(problems) < MAX_PROBLEMS:
        path, g1, g2 = stack.pop()
        visited += 1
        if visited > MAX_OBJECTS:
            raise _Damaged(path or "/", ValueError("more groups than any model has"))
        try:
            if g1 is None or g2 is None:
                g1, g2 = before[path], after[path]
            if not walk.first_visit(g1):
                continue
            if not _same_attrs(g1, g2):
                problems.append(f"attributes of '{path or '/'}' changed")
            names = list(g1.keys())
            if set(names) != set(g2.keys()):
                problems.append(f"members of '{path or '/'}' changed")
                continue
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, InputError) as exc:
            raise _Damaged(path or "/", exc) from None
        for name in names:
            child = f"{path}/{name}" if path else name
            try:
                _compare_child(g1, g2, name, child, walk, stack)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, InputError) as exc:
                raise _Damaged(child, exc) from None


class _Walk:
    """What a comparison has seen so far."""

    def __init__(
        self,
        written: dict[str, str],
        problems: list[str],
        on_written: OnWritten | None,
        written_at: dict[Any, str],
    ) -> None:
        self.written = written
        self.problems = problems
        # Written datasets that do not hold what was written (by default, with the rest).
        self.not_as_written = problems
        self.on_written = on_written
        self.written_at = written_at  # object in the new file -> the path it was written at
        self.seen: set[str] = set()
        self.copied: Copied | None = None
        self.span: Span | None = None  # where the new file's weights lie, if read directly
        self._done: set[Any] = set()
        # Written datasets, once read back, are checked on the other core while the walk
        # reads on: one at a time, in the order read, so at most two are held.
        self.helper = SerialWorker()

    def check_written(self, path: str, child: str, values: np.ndarray) -> None:
        self.helper.submit(partial(self._check_written, path, child, values))

    def _check_written(self, path: str, child: str, values: np.ndarray) -> None:
        if digest(values) != self.written[path]:
            self.not_as_written.append(f"dataset '{path}' does not hold the intended values")
        elif self.on_written is not None:
            try:
                self.on_written(path, values)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, InputError) as exc:
                raise _Damaged(child, exc) from None

    def first_visit(self, obj: h5py.HLObject) -> bool:
        key = h5safe.object_key(obj)
        if key in self._done:
            return False
        self._done.add(key)
        return True


def _written_objects(
    after: h5py.Group, written: dict[str, str], problems: list[str]
) -> dict[Any, str]:
    found: dict[Any, str] = {}
    for path in written:
        try:
            key = h5safe.object_key(after[path])
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            continue  # reported as not found again
        if key in found:
            problems.append(
                f"'{found[key]}' and '{path}' are one dataset linked under two names, "
                "so writing one overwrote the other"
            )
        found[key] = path
    return found


def _compare_child(
    g1: h5py.Group, g2: h5py.Group, name: str, child: str, walk: _Walk, stack: list[_Pending]
) -> None:
    l1, l2 = g1.get(name, getlink=True), g2.get(name, getlink=True)
    if not isinstance(l1, h5py.HardLink) or not isinstance(l2, h5py.HardLink):
        if l1 is None:
            raise KeyError(f"'{name}' is listed but cannot be found")
        if _link_key(l1) != _link_key(l2):
            walk.problems.append(f"link '{child}' changed")
        return
    o1, o2 = g1[name], g2[name]
    if isinstance(o1, h5py.Group) and isinstance(o2, h5py.Group):
        stack.append((child, o1, o2) if len(stack) < _OPEN_PENDING else (child, None, None))
    elif isinstance(o1, h5py.Dataset) and isinstance(o2, h5py.Dataset):
        if walk.first_visit(o1):
            # A dataset reached by another name than the one it was written at is still it.
            path = walk.written_at.get(h5safe.object_key(o2), child)
            walk.seen.add(path)
            _compare_dataset(path, child, o1, o2, walk)
    elif isinstance(o1, h5py.Datatype) and isinstance(o2, h5py.Datatype):
        if o1.dtype != o2.dtype or not _same_attrs(o1, o2):
            walk.problems.append(f"named datatype '{child}' changed")
    else:
        walk.problems.append(f"'{child}' changed kind")


def _compare_dataset(
    path: str, child: str, d1: h5py.Dataset, d2: h5py.Dataset, walk: _Walk
) -> None:
    written, problems = walk.written, walk.problems
    if d1.shape != d2.shape or d1.dtype != d2.dtype:
        problems.append(f"dataset '{path}' changed shape or dtype")
        return
    if not _same_attrs(d1, d2):
        problems.append(f"attributes of dataset '{path}' changed")
    if _storage(d1) != _storage(d2):
        problems.append(f"storage of dataset '{path}' changed (chunks, filters or byte order)")
    if d1.external or d1.is_virtual:
        return  # never read data from elsewhere; the reader already refused such weights
    if path in written:
        walk.check_written(path, child, read_values(d2, path, walk.span))  # as read
        return
    if walk.copied is not None:
        span = dataset_span(d1)
        if span is not None and span == dataset_span(d2) and walk.copied.untouched(span):
            return  # the same bytes at the same place, copied by the tool, never written
    nbytes = _declared_bytes(d1)
    if nbytes > h5safe.MAX_DATASET_BYTES:
        raise ValueError(f"declares {nbytes} bytes, more than any model holds")
    odd = h5safe.odd_type(d1.id.get_type())
    if odd:
        raise ValueError(f"declared as {odd}")
    plugin = h5safe.plugin_filter(d1)
    if plugin is not None:
        raise ValueError(f"needs HDF5 filter {plugin}, which is not built into HDF5")
    h5heaps.guard(d1, d1.id.get_type())
    h5heaps.guard(d2, d2.id.get_type())
    for block in _blocks(d1):
        if not _same_value(d1[block], d2[block]):
            problems.append(f"dataset '{path}' changed but was not selected")
            return


def _storage(ds: h5py.Dataset) -> tuple[Any, ...]:
    """How a dataset is stored: its exact dtype (byte order included), layout, chunk shape
    and filter pipeline (each filter's code, flags and parameters)."""
    dcpl = ds.id.get_create_plist()
    filters = tuple(dcpl.get_filter(k)[:3] for k in range(dcpl.get_nfilters()))
    return (ds.dtype.str, dcpl.get_layout(), ds.chunks, filters)


def _declared_bytes(ds: h5py.Dataset) -> int:
    itemsize = int(ds.dtype.itemsize)
    if not ds.shape:
        return itemsize
    return math.prod(int(d) for d in ds.shape) * itemsize


def _blocks(ds: h5py.Dataset) -> Iterator[Any]:
    """Index expressions covering ``ds`` in slices of at most about ``BLOCK_BYTES``."""
    shape = ds.shape
    if not shape or 0 in shape:
        yield ()
        return
    row = max(1, math.prod(int(d) for d in shape[1:]) * ds.dtype.itemsize)
    step = max(1, BLOCK_BYTES // row)
    for start in range(0, shape[0], step):
        yield slice(start, start + step)


def _zip_members(path: str) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as z:
        return z.infolist()


def compare_archives(before: str, after: str, problems: list[str]) -> None:
    a, b = _zip_members(before), _zip_members(after)
    if [i.filename for i in a] != [i.filename for i in b]:
        problems.append("the archive's members changed")
        return
    for x, y in zip(a, b):
        fields = ("date_time", "compress_type", "external_attr", "comment")
        if any(getattr(x, f) != getattr(y, f) for f in fields):
            problems.append(f"metadata of archive member '{x.filename}' changed")
        if x.filename != WEIGHTS_H5 and (x.CRC, x.file_size) != (y.CRC, y.file_size):
            problems.append(f"archive member '{x.filename}' changed")


def unchanged_except(
    model: Model,
    staged: str,
    written: dict[str, str],
    on_written: OnWritten | None,
    session: Session,
) -> Comparison:
    """How the staged output differs from the input: the written datasets that do not hold
    what was written, and everything else that changed."""
    problems: list[str] = []
    not_as_written: list[str] = []
    if model.format == "keras":
        compare_archives(model.path, staged, problems)
    with open_weights(model.path, session) as f1, open_weights_at(staged, session) as (f2, span):
        try:
            copied = session.copies.get(staged)
            if copied is not None and copied.source != model.path:
                copied = None
            seen = compare_weights(
                f1, f2, written, problems, on_written, not_as_written, copied, span
            )
        except _Damaged as exc:
            # The staged file is a copy of the input, so what cannot be read is the input's.
            raise InputError(
                f"{model.path}: damaged HDF5 data at '{exc.where}' ({first_line(exc.exc)}); "
                "cannot check that it is carried over unchanged"
            ) from None
    # One line per written dataset that differs, one more naming those not found at all.
    read_back = len(written) - len(not_as_written)
    missing = set(written) - seen
    if missing:
        read_back -= len(missing)
        not_as_written.append(f"written datasets not found again: {', '.join(sorted(missing))}")
    return Comparison(problems[:MAX_PROBLEMS], not_as_written[:MAX_PROBLEMS], read_back)
