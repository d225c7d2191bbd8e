"""What a PyTorch pickle may name: the globals a state dict needs, as stand-ins of our own.

:data:`HONOURED` maps each global honoured by the restricted unpickler of
:mod:`~bilstm_cli.formats.torch_pickle` to this module's stand-in: ordered dicts are plain
dicts, a "call" of a tensor rebuild function records a :class:`TensorRef`, storage types are
:class:`StorageType` values. It is the table ``torch.load(weights_only=True)`` allows for
state dicts, minus what a reader of weights never needs (sparse, nested and quantized
tensors, tensor subclasses). Harmless metadata (:data:`HARMLESS`) becomes :class:`Opaque`
placeholders. :func:`lookup` is a dictionary lookup: nothing is ever imported.
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bilstm_cli.errors import InputError

#: What the ``torch.*Storage`` classes hold, as NumPy dtype names (``bfloat16`` has none).
STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
}
#: Quantized storages: their bytes are not values without the quantizer's parameters.
QUANTIZED_STORAGES = (
    "QInt8Storage",
    "QInt32Storage",
    "QUInt8Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
)
#: ``torch.<dtype>`` globals (``_rebuild_tensor_v3`` names its dtype) that NumPy can hold.
TORCH_DTYPES = {
    "float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "complex64": "complex64", "complex128": "complex128",
}  # fmt: skip


@dataclass(frozen=True)
class StorageType:
    """A ``torch.<X>Storage`` class named in a persistent id: only its element dtype matters.
    ``dtype`` is ``None`` for ``torch.UntypedStorage`` (bytes; the tensor names its dtype)."""

    name: str
    dtype: str | None


@dataclass(frozen=True)
class Storage:
    """A raw storage of the archive, ``data/<key>``: ``numel`` elements of ``dtype``."""

    key: str
    dtype: str | None
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it; its values stay in the storage until read."""

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Opaque:
    """A value built from a global honoured only as harmless metadata; never called."""

    name: str


@dataclass(frozen=True)
class _Global:
    """An honoured global: what a REDUCE/NEWOBJ of it yields (``call``) and its name."""

    name: str
    call: Callable[..., Any]


class PickleRefused(InputError):
    """The pickle asks for something a state dict never needs."""


def _dtype_global(name: str) -> Any:
    return TORCH_DTYPES[name]


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    if not isinstance(storage, Storage) or storage.dtype is None:
        raise PickleRefused("a tensor whose storage is not a typed storage")
    return _tensor(storage, offset, size, stride, storage.dtype)


def _rebuild_v3(
    storage: Any, offset: Any, size: Any, stride: Any, rg: Any, hooks: Any, dtype: Any, *_: Any
) -> TensorRef:
    if not isinstance(storage, Storage) or dtype not in TORCH_DTYPES.values():
        raise PickleRefused("a tensor whose storage or dtype is not one")
    return _tensor(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRef:
    return _rebuild_v2(storage, offset, size, stride)


def _tensor(storage: Storage, offset: Any, size: Any, stride: Any, dtype: str) -> TensorRef:
    if not _is_int(offset) or offset < 0:
        raise PickleRefused(f"a tensor with storage offset {_short(offset)}")
    size = tuple(size) if isinstance(size, tuple | list) else size
    stride = tuple(stride) if isinstance(stride, tuple | list) else stride
    if not isinstance(size, tuple) or not all(_is_int(d) and d >= 0 for d in size):
        raise PickleRefused(f"a tensor with size {_short(size)}")
    if not isinstance(stride, tuple) or not all(_is_int(s) and s >= 0 for s in stride):
        raise PickleRefused(f"a tensor with stride {_short(stride)}")
    if len(size) != len(stride):
        raise PickleRefused(f"a tensor of size {_short(size)} with stride {_short(stride)}")
    return TensorRef(storage, offset, size, stride, dtype)


def _short(value: Any) -> str:
    """A value for an error message: never the repr of a huge or deeply nested structure."""
    if isinstance(value, int | float | str | bytes | type(None)):
        return repr(value)[:40]
    if isinstance(value, tuple | list) and len(value) <= 8:
        if all(isinstance(v, int | float) for v in value):
            return repr(value)
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameter(data: Any, *_: Any) -> Any:
    # nn.Parameter is a tensor with requires_grad: its data is all a reader wants.
    return data


def _size(*args: Any) -> tuple[Any, ...]:
    return tuple(args[0]) if args and isinstance(args[0], tuple | list) else ()


def _ordered_dict(*args: Any) -> dict[Any, Any]:
    return dict(args[0]) if args and isinstance(args[0], list | tuple) else {}


def _encode(text: Any = "", encoding: Any = "latin1", *_: Any) -> bytes:
    # _codecs.encode is how protocol 2 spells a bytes object: the text's code points.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleRefused(f"_codecs.encode of {type(text).__name__} as {_short(encoding)}")
    return text.encode("latin1")


def _collection(kind: type) -> Callable[..., Any]:
    def make(*args: Any) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], list | tuple | set)):
            raise PickleRefused(f"builtins.{kind.__name__} of {type(args[0]).__name__}")
        return kind(plain_key(item) for item in args[0]) if args else kind()

    return make


def _bytearray(*args: Any) -> bytearray:
    if len(args) > 1 or (args and not isinstance(args[0], bytes)):
        raise PickleRefused("builtins.bytearray of something other than bytes")
    return bytearray(*args)


def _complex(*args: Any) -> complex:
    if len(args) > 2 or not all(isinstance(a, int | float) for a in args):
        raise PickleRefused("builtins.complex of something other than numbers")
    return complex(*args)


def _opaque(name: str) -> Callable[..., Opaque]:
    return lambda *_: Opaque(name)


def _honoured() -> dict[str, Any]:
    table: dict[str, Any] = {
        "collections.OrderedDict": _Global("collections.OrderedDict", _ordered_dict),
        "collections.Counter": _Global("collections.Counter", _ordered_dict),
        "torch._utils._rebuild_tensor_v2": _Global("_rebuild_tensor_v2", _rebuild_v2),
        "torch._utils._rebuild_tensor_v3": _Global("_rebuild_tensor_v3", _rebuild_v3),
        "torch._utils._rebuild_tensor": _Global("_rebuild_tensor", _rebuild_tensor),
        "torch._utils._rebuild_parameter": _Global("_rebuild_parameter", _parameter),
        "torch._utils._rebuild_parameter_with_state": _Global("_rebuild_parameter", _parameter),
        "torch.nn.parameter.Parameter": _Global("Parameter", _parameter),
        "torch.Size": _Global("torch.Size", _size),
        "torch.storage.UntypedStorage": StorageType("UntypedStorage", None),
        "torch.UntypedStorage": StorageType("UntypedStorage", None),
        "_codecs.encode": _Global("_codecs.encode", _encode),
        "builtins.set": _Global("set", _collection(set)),
        "builtins.frozenset": _Global("frozenset", _collection(frozenset)),
        "builtins.bytearray": _Global("bytearray", _bytearray),
        "builtins.complex": _Global("complex", _complex),
    }
    for name, dtype in STORAGE_DTYPES.items():
        table[f"torch.{name}"] = StorageType(name, dtype)
    for name, dtype in TORCH_DTYPES.items():
        table[f"torch.{name}"] = dtype
    # Harmless metadata some checkpoints carry beside the weights: kept as placeholders.
    for name in HARMLESS:
        table[name] = _Global(name, _opaque(name))
    return table


#: Globals that only ever hold metadata in checkpoints (training arguments, a NumPy scalar
#: such as a best score, a device): each becomes an :class:`Opaque` value, never called.
HARMLESS = (
    "argparse.Namespace",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "torch.device",
    "torch.serialization._get_layout",
    "torch.torch_version.TorchVersion",
)

HONOURED = _honoured()


def lookup(module: str, name: str) -> Any:
    """The stand-in for global ``module.name``; PickleRefused when it is not honoured.

    Protocol 2 writes some globals by their Python 2 names (``__builtin__.set``,
    ``commands.Popen`` for ``subprocess.Popen``): they are translated first, from the
    standard library's own tables, so a refusal names what the pickle really meant."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    if full in HONOURED:
        return HONOURED[full]
    for quantized in QUANTIZED_STORAGES:
        if full == f"torch.{quantized}":
            raise PickleRefused(f"holds a quantized tensor ({full}), which is not read")
    if module.startswith("torch.nn.modules") or module.startswith("__torch__"):
        raise PickleRefused(
            f"refuses global {full}: the file pickles a whole model object, not a state dict "
            "(save model.state_dict() instead)"
        )
    raise PickleRefused(
        f"refuses global {full}: only tensors, storages and plain containers are read "
        "from a PyTorch pickle"
    )


_PLAIN = (str, bytes, int, float, type(None))


def plain_key(key: Any) -> Any:
    # Keys must be plain values or flat tuples of them: hashing a deeply nested tuple
    # would recurse without limit, and a stand-in object as a key is damage anyway.
    if isinstance(key, _PLAIN) or (
        isinstance(key, tuple) and all(isinstance(k, _PLAIN) for k in key)
    ):
        return key
    raise InputError("damaged pickle data (a dictionary key)")


__all__ = [
    "plain_key",
    "HARMLESS",
    "HONOURED",
    "Opaque",
    "PickleRefused",
    "Storage",
    "StorageType",
    "TensorRef",
    "lookup",
]
