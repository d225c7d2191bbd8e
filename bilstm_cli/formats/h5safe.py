"""Guarded access to HDF5 data from files nobody vouched for.

Every group and dataset is reached one path component at a time through hard links only:
external links and soft links could make h5py open another file or wander elsewhere, and
external or virtual datasets read their bytes from other files. All of them are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from bilstm_cli import dtypes
from bilstm_cli.errors import InputError, first_line
from bilstm_cli.formats import h5heaps

if TYPE_CHECKING:
    pass

# Larger than any single RNN weight anyone trains; a declared shape beyond this is hostile.
MAX_DATASET_BYTES = 4 * 1024**3
# A dataset up to this size may leave chunks unwritten (they read as the fill value); a larger
# one must store every byte it declares (:func:`unbacked_storage`).
UNWRITTEN_ALLOWANCE = 1024**2
FLOAT_KINDS = ("f",)
# Filters built into the HDF5 library (deflate, shuffle, fletcher32, szip, nbit, scaleoffset)
# and LZF (32000), which h5py itself registers: none of them is loaded from a plugin.
LZF_FILTER = 32000
BUILTIN_FILTERS = frozenset(range(1, 7)) | {LZF_FILTER}


@contextmanager
def no_filter_plugins() -> Iterator[None]:
    """HDF5 plugin loading switched off while the block runs.

    To find a filter it lacks, HDF5 loads every shared library in its plugin path (running
    their initialisers); a file naming an unknown filter must not make it load anything.
    Datasets with such filters are refused before reading (:func:`check_dataset`); this is
    the second guard. The search path is emptied for the block and put back as it was, so the
    process's own HDF5 setting is left alone; a nested block finds it empty and restores
    nothing.
    """
    saved: list[bytes] = []
    try:
        while h5py.h5pl.size():
            saved.append(h5py.h5pl.get(0))
            h5py.h5pl.remove(0)
    except (AttributeError, RuntimeError, OSError, ValueError):
        pass
    try:
        yield
    finally:
        for entry in saved:
            with suppress(AttributeError, RuntimeError, OSError, ValueError):
                h5py.h5pl.append(entry)


def _child(parent: h5py.Group, part: str, path: str) -> Any:
    try:
        link = parent.get(part, default=None, getlink=True)
    except (KeyError, ValueError, OSError, RuntimeError):
        link = None
    if link is None:
        raise KeyError(path)
    if not isinstance(link, h5py.HardLink):
        kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
        raise InputError(f"'{path}' is {kind}; links are not followed")
    try:
        return parent[part]
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        raise InputError(f"'{path}' cannot be opened ({exc})") from None


# Groups already reached through hard links, per open file: weights share long prefixes
# (layers/bidirectional/forward_layer/cell/vars), and each step costs two HDF5 calls.
_GROUPS = "_bilstm_groups"
# Datasets already found and checked, per open file: a command looks each weight up several
# times (its layout, the current values, the write, the verification).
_DATASETS = "_bilstm_datasets"


# Handles kept per file and cache. Every open HDF5 object costs a little in each later HDF5
# call and at close, so a file of thousands of layers must not keep all of them open (that
# made reading it quadratic); the handles worth keeping are those of the layer at hand.
MAX_CACHED = 256


def _cache_of(root: h5py.Group, name: str) -> dict[str, Any] | None:
    """The cache ``name`` of an open file, kept on the file object itself (and gone with it):
    a dictionary keyed by h5py objects would hash and compare them, asking HDF5 each time."""
    if not isinstance(root, h5py.File):
        return None
    found: dict[str, Any] | None = vars(root).get(name)
    if found is None:
        found = {}
        setattr(root, name, found)
    return found


def _remember(cache: dict[str, Any], path: str, node: Any) -> None:
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[path] = node


def group(root: h5py.Group, path: str) -> h5py.Group:
    """The group at ``path`` below ``root``; KeyError when absent."""
    cache = _cache_of(root, _GROUPS)
    parts = [part for part in path.split("/") if part]
    node: Any = root
    start = 0
    if cache is not None:
        # Resume from the longest prefix already checked.
        for k in range(len(parts), 0, -1):
            hit = cache.get("/".join(parts[:k]))
            if hit is not None:
                node, start = hit, k
                break
    for k in range(start, len(parts)):
        done = "/".join(parts[: k + 1])
        node = _child(node, parts[k], done)
        if not isinstance(node, h5py.Group):
            raise InputError(f"'{done}' is a dataset where a group was expected")
        if cache is not None:
            _remember(cache, done, node)
    return node


def object_key(obj: h5py.HLObject) -> Any:
    """The same value for every path to one object: hard links can make cycles and aliases."""
    try:
        info = h5py.h5o.get_info(obj.id)
        return (info.fileno, info.addr)
    except (AttributeError, RuntimeError, ValueError, OSError, KeyError):
        return hash(obj.id)


def has(root: h5py.Group, path: str) -> bool:
    try:
        group(root, path)
    except KeyError:
        return False
    return True


def dataset(root: h5py.Group, path: str) -> h5py.Dataset:
    """The dataset at ``path`` below ``root``, refused if it reads data from elsewhere."""
    cache = _cache_of(root, _DATASETS)
    if cache is not None and path in cache:
        return cache[path]
    parent_path, _, name = path.rpartition("/")
    parent = group(root, parent_path) if parent_path else root
    node = _child(parent, name, path)
    if not isinstance(node, h5py.Dataset):
        raise InputError(f"'{path}' is a group where a weight dataset was expected")
    check_dataset(node, path)
    if cache is not None:
        _remember(cache, path, node)
    return node


# The IEEE layouts (sign, exponent position and size, mantissa position and size; exponent
# bias) of half, single and double precision. HDF5 files can declare any other bit layout,
# and converting values to a damaged one crashes the HDF5 library, so nothing else is used.
IEEE_FLOATS = {
    2: ((15, 10, 5, 0, 10), 15),
    4: ((31, 23, 8, 0, 23), 127),
    8: ((63, 52, 11, 0, 52), 1023),
}


def odd_type(tid: Any) -> str | None:
    """What is wrong with an HDF5 datatype whose values would be converted, or None."""
    if isinstance(tid, h5py.h5t.TypeFloatID):
        size = tid.get_size()
        standard = IEEE_FLOATS.get(size)
        if (
            standard is None
            or (tid.get_fields(), tid.get_ebias()) != standard
            or tid.get_offset() != 0
            or tid.get_precision() != 8 * size
            or tid.get_norm() != h5py.h5t.NORM_IMPLIED
            or tid.get_order() not in (h5py.h5t.ORDER_LE, h5py.h5t.ORDER_BE)
        ):
            return f"a {size * 8}-bit floating-point type with a non-IEEE bit layout"
    elif isinstance(tid, h5py.h5t.TypeIntegerID):
        if tid.get_offset() != 0 or tid.get_precision() != 8 * tid.get_size():
            return "an integer type with an unusual bit layout"
    elif isinstance(tid, h5py.h5t.TypeCompoundID):
        for k in range(tid.get_nmembers()):
            problem = odd_type(tid.get_member_type(k))
            if problem:
                return problem
    elif isinstance(tid, h5py.h5t.TypeArrayID | h5py.h5t.TypeEnumID | h5py.h5t.TypeVlenID):
        return odd_type(tid.get_super())
    return None


def check_dataset(ds: h5py.Dataset, path: str) -> None:
    if ds.external:
        raise InputError(f"dataset '{path}' keeps its data in an external file; refused")
    if ds.is_virtual:
        raise InputError(f"dataset '{path}' is a virtual dataset; refused")
    if ds.dtype.kind not in FLOAT_KINDS and not is_bfloat16(ds):
        raise InputError(f"dataset '{path}' holds {ds.dtype}, not floating-point weights")
    # Python integers: a hostile shape must not overflow its way under the limit.
    nbytes = math.prod(int(d) for d in ds.shape) * ds.dtype.itemsize if ds.shape else 0
    if nbytes > MAX_DATASET_BYTES:
        raise InputError(f"dataset '{path}' declares {nbytes} bytes; refused as implausible")
    problem = odd_type(ds.id.get_type())
    if problem:
        raise InputError(f"dataset '{path}' is declared as {problem}; damaged or hostile")
    plugin = plugin_filter(ds)
    if plugin is not None:
        raise InputError(
            f"dataset '{path}' needs HDF5 filter {plugin}, which is not built into HDF5; "
            "filter plugins are not loaded"
        )
    unbacked = unbacked_storage(ds, nbytes)
    if unbacked:
        raise InputError(f"dataset '{path}' {unbacked}; refused before reading")


def unbacked_storage(ds: h5py.Dataset, declared: int) -> str | None:
    """How the bytes ``ds`` declares go beyond what the file stores for it, or None.

    HDF5 reads a chunk that was never written, or contiguous data never allocated, as the
    fill value: a file of a few kilobytes can declare gigabytes that every reader would
    materialise. The rule: every chunk a chunked dataset's shape needs is written, and a
    contiguous dataset's data is allocated in full, inside the file. Compressed chunks may
    be small (zeros deflate well); a chunk never inflates beyond its declared extent. Only
    datasets of at most :data:`UNWRITTEN_ALLOWANCE` bytes may leave chunks unwritten.
    """
    if declared <= UNWRITTEN_ALLOWANCE:
        return None
    if ds.file.driver == "core":
        # Only the tool's own in-memory outlines (sharded weights: types and shapes, no
        # values) are opened this way; the shards' datasets are checked when read.
        return None
    try:
        layout = ds.id.get_create_plist().get_layout()
        size = int(ds.file.id.get_filesize())
        if layout == h5py.h5d.CHUNKED:
            return _unbacked_chunks(ds, declared, size)
        if layout == h5py.h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            stored = int(ds.id.get_storage_size())
            if offset is None or stored < declared:
                return f"declares {declared} bytes but the file stores {stored} of them"
            if int(offset) + declared > size:
                return f"declares {declared} bytes that lie beyond the end of the file"
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:
        return f"has storage that cannot be examined ({first_line(exc)})"
    return None  # compact: the values live in the object header itself


def _unbacked_chunks(ds: h5py.Dataset, declared: int, size: int) -> str | None:
    extent = ds.chunks or ()
    needed = math.prod(-(-int(n) // max(int(c), 1)) for n, c in zip(ds.shape, extent))
    written = int(ds.id.get_num_chunks())
    if written < needed:
        return (
            f"declares {declared} bytes in {needed} chunks but the file stores {written} "
            "of them (unwritten chunks)"
        )
    beyond: list[int] = []

    def visit(info: Any) -> None:
        if info.byte_offset is None or int(info.byte_offset) + int(info.size) > size:
            beyond.append(1)

    ds.id.chunk_iter(visit)
    if beyond:
        return f"has {len(beyond)} chunks beyond the end of the file"
    return None


def plugin_filter(ds: h5py.Dataset) -> int | None:
    """The first filter of ``ds`` that only a plugin could provide, or None."""
    try:
        dcpl = ds.id.get_create_plist()
        for k in range(dcpl.get_nfilters()):
            code = int(dcpl.get_filter(k)[0])
            if code not in BUILTIN_FILTERS:
                return code
    except (RuntimeError, ValueError, OSError, KeyError):
        return None  # reading it will fail with its own message
    return None


def _dtype_tag(ds: h5py.Dataset) -> str | None:
    """The ``dtype`` attribute Keras puts on bfloat16 datasets, or None."""
    if "dtype" not in ds.attrs:
        return None
    try:
        marked = attr(ds, "dtype")
    except InputError:
        return None
    if isinstance(marked, bytes):
        marked = marked.decode("utf-8", "replace")
    return marked if isinstance(marked, str) and marked else None


def is_bfloat16(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` holds bfloat16 weights as Keras stores them: 2-byte opaque values
    tagged ``dtype="bfloat16"`` (the ``.keras`` and ``.weights.h5`` writers) or untagged
    (the legacy ``.h5`` writer, for which 2-byte opaque data can only be bfloat16: float16
    is a native HDF5 type and the float8 types take one byte); or float32 values widened
    exactly and tagged."""
    if ds.dtype.kind not in ("V", "f") or ds.dtype.fields is not None:
        return False
    tag = _dtype_tag(ds)
    if ds.dtype.kind == "V":
        return ds.dtype.itemsize == 2 and ds.dtype.subdtype is None and tag in (None, "bfloat16")
    return tag == dtypes.BFLOAT16


def dtype_name(ds: h5py.Dataset) -> str:
    """The weights' dtype by name: ``float16``, ``bfloat16``, ``float32`` or ``float64``,
    whatever the byte order it is stored in."""
    if is_bfloat16(ds):
        return dtypes.BFLOAT16
    marked = _dtype_tag(ds)
    if marked:
        return marked
    return ds.dtype.name if ds.dtype.kind == "f" else str(ds.dtype)


def read(ds: h5py.Dataset, path: str) -> np.ndarray:
    """The values of ``ds`` in native byte order; bfloat16 widened exactly to float32 and
    tagged (:data:`bilstm_cli.dtypes.BF16`)."""
    h5heaps.guard(ds, ds.id.get_type())
    try:
        raw = np.asarray(ds[()])
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise InputError(f"dataset '{path}' cannot be read ({first_line(exc)})") from None
    except MemoryError:
        raise InputError(
            f"dataset '{path}' ({ds.nbytes} bytes) needs more memory than is available"
        ) from None
    if is_bfloat16(ds):
        if raw.dtype.kind == "V":
            return dtypes.decode_bf16(raw)
        return dtypes.round_bf16(raw.astype(np.float32))
    if not raw.dtype.isnative:
        return raw.astype(raw.dtype.newbyteorder("="))
    return raw


def stored_form(ds: h5py.Dataset, values: np.ndarray) -> np.ndarray:
    """``values`` (as :func:`read` gives them) in the dataset's own stored dtype and byte
    order, ready to be written as they are. bfloat16 values must be exactly bfloat16."""
    if is_bfloat16(ds) and ds.dtype.kind == "V":
        return dtypes.encode_bf16(values).astype("<u2").view(ds.dtype)
    return np.asarray(values).astype(ds.dtype, copy=False)


def odd_attribute_type(tid: Any) -> str | None:
    """What is wrong with an attribute's datatype, or None. Beyond :func:`odd_type`: a
    variable-length type that is not a string is refused. A Keras file has none, and a
    damaged string type reads as one, which HDF5 crashes converting."""
    if isinstance(tid, h5py.h5t.TypeVlenID):
        return "a variable-length sequence type"
    return odd_type(tid)


def attr(node: h5py.HLObject, name: str | bytes) -> Any:
    """The value of attribute ``name`` of ``node``, its datatype checked before HDF5 converts
    it; InputError when the type is damaged. (A name that is not UTF-8 comes as bytes.)"""
    key = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    tid = h5py.h5a.open(node.id, key).get_type()
    problem = odd_attribute_type(tid)
    if problem:
        shown = key.decode("utf-8", "replace")
        raise InputError(f"attribute '{shown}' of '{node.name}' is declared as {problem}; damaged")
    h5heaps.guard(node, tid, key)
    return node.attrs[name]


def attr_strings(node: h5py.Group | h5py.File, name: str) -> list[str]:
    """A string-list attribute, rejoining the ``name0``, ``name1``… chunks of a long list."""
    if name in node.attrs:
        values = [attr(node, name)]
    else:
        values = []
        k = 0
        while f"{name}{k}" in node.attrs:
            values.append(attr(node, f"{name}{k}"))
            k += 1
    out: list[str] = []
    for value in values:
        arr = np.atleast_1d(np.asarray(value))
        for item in arr.tolist():
            if isinstance(item, bytes):
                out.append(item.decode("utf-8", "replace"))
            elif isinstance(item, str):
                out.append(item)
            # Empty lists come back as float arrays; anything else is not a name.
    return out


def attr_string(node: h5py.Group | h5py.File, name: str) -> str | None:
    if name not in node.attrs:
        return None
    value = attr(node, name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.size == 1:
        item = value.reshape(-1)[0]
        return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
    return None
