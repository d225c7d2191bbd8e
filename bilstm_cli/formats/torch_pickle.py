"""A restricted unpickler for PyTorch state dicts: data only, nothing imported, nothing called.

``torch.save`` pickles a state dict as ordered dicts of tensors, each tensor a call of
``torch._utils._rebuild_tensor_v2`` on a *persistent id* that names a raw storage kept
beside the pickle. Python's own unpickler imports whatever module a pickle names and calls
whatever it is told to: a file could run any code. This one is a separate interpreter of
the pickle opcodes over a small table of its own (:data:`HONOURED`):

- the globals a state dict needs (ordered dicts, the tensor and parameter rebuild functions,
  the storage types, ``torch.Size``, a few builtins) map to this module's own stand-ins —
  a "call" of a rebuild function records a :class:`TensorRef` (storage, offset, size,
  stride), it builds no tensor and reads no data;
- a few names that only ever hold harmless metadata in checkpoints (``argparse.Namespace``,
  NumPy scalars, ``torch.device``) become :class:`Opaque` placeholders: calling or building
  one records nothing and runs nothing;
- every other global refuses the whole file, naming it (``refuses global os.system``),
  before anything further is read.

Nothing named in a file is ever imported: :func:`lookup` is a dictionary lookup.
Opcodes that only exist to call arbitrary code (``INST``, ``OBJ``, extension registries,
out-of-band buffers) are refused too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from bilstm_cli.errors import InputError
from bilstm_cli.formats.torch_globals import (
    Opaque,
    PickleRefused,
    StorageType,
    TensorRef,
    _Global,
    lookup,
    plain_key,
)

#: What :func:`load` does with a persistent id: ``(type_name, storage_type, key, location,
#: numel)`` → the object the pickle sees.
PersistentLoad = Callable[[tuple[Any, ...]], Any]

_MARK = object()
_MAX_MEMO = 1 << 24


def load(data: bytes, persistent_load: PersistentLoad) -> Any:
    """The object the pickle ``data`` describes, built from honoured globals only."""
    try:
        return _Machine(data, persistent_load).run()
    except InputError:
        raise
    except (IndexError, KeyError, struct.error, UnicodeDecodeError, TypeError, ValueError):
        raise InputError("damaged pickle data (data.pkl)") from None
    except RecursionError:
        raise InputError("pickle data nested too deeply (data.pkl)") from None


class _Machine:
    """The pickle virtual machine, reduced to data: a stack, marks and a memo."""

    def __init__(self, data: bytes, persistent_load: PersistentLoad) -> None:
        self.data = data
        self.pos = 0
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.persistent_load = persistent_load

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InputError("pickle data ends early (data.pkl is truncated or damaged)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise InputError("damaged pickle data (no mark)")

    def line(self) -> str:
        end = self.data.find(b"\n", self.pos)
        if end < 0 or end - self.pos > 1024:
            raise InputError("damaged pickle data (a global's name)")
        text = self.data[self.pos : end].decode("ascii")
        self.pos = end + 1
        return text

    def run(self) -> Any:
        while True:
            op = self.take(1)
            handler = _OPS.get(op)
            if handler is None:
                raise PickleRefused(f"pickle opcode {op!r} is not one a state dict uses")
            if handler is _stop:
                if len(self.stack) != 1:
                    raise InputError("damaged pickle data (stack at STOP)")
                return self.stack.pop()
            handler(self)

    # helpers used by several opcodes
    def memo_put(self, index: int) -> None:
        if index >= _MAX_MEMO or not self.stack:
            raise InputError("damaged pickle data (memo)")
        self.memo[index] = self.stack[-1]

    def call(self, func: Any, args: Any) -> Any:
        if not isinstance(args, tuple):
            raise InputError("damaged pickle data (arguments are not a tuple)")
        if isinstance(func, _Global):
            return func.call(*args)
        if isinstance(func, Opaque):
            return func
        raise PickleRefused(f"a pickle call of {_describe(func)}, which is never made")

    def build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        # OrderedDict attributes (a state dict's _metadata) and placeholders' state: dropped.
        if isinstance(target, dict | Opaque):
            return
        if isinstance(target, TensorRef) and state in (None, {}, ()):
            return
        raise PickleRefused(f"a pickle BUILD of {_describe(target)}, which is never done")


def _describe(value: Any) -> str:
    if isinstance(value, StorageType):
        return f"torch.{value.name}"
    if isinstance(value, str):
        return f"torch.{value}"
    return type(value).__name__


def _stop(m: _Machine) -> None:  # pragma: no cover - handled in run()
    pass


def _global(m: _Machine) -> None:
    module = m.line()
    name = m.line()
    m.stack.append(lookup(module, name))


def _stack_global(m: _Machine) -> None:
    name = m.stack.pop()
    module = m.stack.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise InputError("damaged pickle data (STACK_GLOBAL)")
    m.stack.append(lookup(module, name))


def _reduce(m: _Machine) -> None:
    args = m.stack.pop()
    m.stack[-1] = m.call(m.stack[-1], args)


def _newobj(m: _Machine) -> None:
    args = m.stack.pop()
    cls = m.stack.pop()
    m.stack.append(m.call(cls, args))


def _binpersid(m: _Machine) -> None:
    pid = m.stack.pop()
    if not isinstance(pid, tuple):
        raise PickleRefused("a persistent id that is not a storage")
    m.stack.append(m.persistent_load(pid))


def _setitems(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.stack[-1]
    if not isinstance(target, dict) or len(items) % 2:
        raise InputError("damaged pickle data (SETITEMS)")
    for i in range(0, len(items), 2):
        target[plain_key(items[i])] = items[i + 1]


def _setitem(m: _Machine) -> None:
    value = m.stack.pop()
    key = m.stack.pop()
    target = m.stack[-1]
    if not isinstance(target, dict):
        raise InputError("damaged pickle data (SETITEM)")
    target[plain_key(key)] = value


def _appends(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.stack[-1]
    if not isinstance(target, list):
        raise InputError("damaged pickle data (APPENDS)")
    target.extend(items)


def _append(m: _Machine) -> None:
    item = m.stack.pop()
    target = m.stack[-1]
    if not isinstance(target, list):
        raise InputError("damaged pickle data (APPEND)")
    target.append(item)


def _additems(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.stack[-1]
    if not isinstance(target, set):
        raise InputError("damaged pickle data (ADDITEMS)")
    target.update(plain_key(i) for i in items)


def _push(value: Callable[[_Machine], Any]) -> Callable[[_Machine], None]:
    return lambda m: m.stack.append(value(m))


def _text(m: _Machine, n: int) -> str:
    return m.take(n).decode("utf-8", "surrogatepass")


def _tuple_n(n: int) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:
        if len(m.stack) < n:
            raise InputError("damaged pickle data (TUPLE)")
        items = tuple(m.stack[len(m.stack) - n :])
        del m.stack[len(m.stack) - n :]
        m.stack.append(items)

    return op


def _get(m: _Machine, index: int) -> None:
    if index not in m.memo:
        raise InputError("damaged pickle data (memo)")
    m.stack.append(m.memo[index])


def _dup(m: _Machine) -> None:
    m.stack.append(m.stack[-1])


def _proto(m: _Machine) -> None:
    if m.take(1)[0] > 5:
        raise InputError("pickle protocol newer than 5")


def _frame(m: _Machine) -> None:
    m.take(8)  # a hint for buffered reading: nothing to do


def _pop_mark(m: _Machine) -> None:
    m.pop_mark()


_OPS: dict[bytes, Callable[[_Machine], None]] = {
    b"\x80": _proto,
    b"\x95": _frame,
    b".": _stop,
    b"c": _global,
    b"\x93": _stack_global,
    b"R": _reduce,
    b"\x81": _newobj,
    b"b": lambda m: m.build(),
    b"Q": _binpersid,
    b"(": lambda m: m.stack.append(_MARK),
    b"t": lambda m: m.stack.append(tuple(m.pop_mark())),
    b")": _push(lambda m: ()),
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"]": _push(lambda m: []),
    b"l": lambda m: m.stack.append(m.pop_mark()),
    b"}": _push(lambda m: {}),
    b"d": lambda m: m.stack.append(_dict_of(m.pop_mark())),
    b"\x8f": _push(lambda m: set()),
    b"\x91": lambda m: m.stack.append(frozenset(plain_key(i) for i in m.pop_mark())),
    b"a": _append,
    b"e": _appends,
    b"s": _setitem,
    b"u": _setitems,
    b"\x90": _additems,
    b"N": _push(lambda m: None),
    b"\x88": _push(lambda m: True),
    b"\x89": _push(lambda m: False),
    b"J": _push(lambda m: m.unpack("<i")),
    b"K": _push(lambda m: m.take(1)[0]),
    b"M": _push(lambda m: m.unpack("<H")),
    b"\x8a": _push(lambda m: int.from_bytes(m.take(m.take(1)[0]), "little", signed=True)),
    b"\x8b": _push(lambda m: _long4(m)),
    b"G": _push(lambda m: m.unpack(">d")),
    b"X": _push(lambda m: _text(m, m.unpack("<I"))),
    b"\x8c": _push(lambda m: _text(m, m.take(1)[0])),
    b"\x8d": _push(lambda m: _text(m, m.unpack("<Q"))),
    b"U": _push(lambda m: m.take(m.take(1)[0])),  # SHORT_BINSTRING, read as bytes
    b"T": _push(lambda m: m.take(m.unpack("<i"))),  # BINSTRING
    b"C": _push(lambda m: m.take(m.take(1)[0])),
    b"B": _push(lambda m: m.take(m.unpack("<I"))),
    b"\x8e": _push(lambda m: m.take(m.unpack("<Q"))),
    b"q": lambda m: m.memo_put(m.take(1)[0]),
    b"r": lambda m: m.memo_put(m.unpack("<I")),
    b"\x94": lambda m: m.memo_put(len(m.memo)),
    b"h": lambda m: _get(m, m.take(1)[0]),
    b"j": lambda m: _get(m, m.unpack("<I")),
    b"0": lambda m: m.stack.pop(),
    b"1": _pop_mark,
    b"2": _dup,
}


def _long4(m: _Machine) -> int:
    n = m.unpack("<i")
    if n > 64:
        raise PickleRefused(f"an integer of {n} bytes")
    return int.from_bytes(m.take(n), "little", signed=True)


def _dict_of(items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise InputError("damaged pickle data (DICT)")
    return {plain_key(items[i]): items[i + 1] for i in range(0, len(items), 2)}


__all__ = ["PersistentLoad", "load"]
