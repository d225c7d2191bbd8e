"""ONNX models: the recurrent nodes of the graph and the stored tensors they take.

The file is parsed by the ``onnx`` package (an optional extra, ``bilstm-cli[onnx]``) with
``load_external_data=False``: nothing outside the file is opened, and parsing holds the
file's own bytes and their decoded form, never more. Each ``LSTM``, ``GRU`` and ``RNN`` node
of the main graph (and com.microsoft ``DynamicQuantizeLSTM``) becomes a
:class:`~bilstm_cli.formats.tensors.RnnNode`; its weight inputs must be stored in the file,
as initializers or ``Constant`` nodes. A weight computed by the graph, missing, or kept in
an external data file refuses the file, naming the tensor. Values are decoded here from the
tensor's bytes (raw little-endian data or the typed repeated fields), after checking that
the data holds exactly what the dims declare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.errors import InputError, UsageError, first_line
from bilstm_cli.formats.tensors import RnnNode, TensorInfo, bfloat16_to_float32, numpy_dtype

#: Protocol buffers cannot hold more than 2 GB; a larger file keeps its data elsewhere.
MAX_ONNX_BYTES = 2 << 30

INSTALL = "pip install 'bilstm-cli[onnx]'"

#: Each recurrent operator's inputs, in order (ONNX operator specs; ORT contrib ops).
OPERATORS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "LSTM"): ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    ("", "GRU"): ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    ("", "RNN"): ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    ("com.microsoft", "DynamicQuantizeLSTM"): (
        "X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P",
        "W_scale", "W_zero_point", "R_scale", "R_zero_point",
    ),
}  # fmt: skip
#: Inputs that are data flowing through the graph, never weights.
RUNTIME_INPUTS = ("X", "sequence_lens")
#: Inputs read only when stored (a graph usually computes or feeds its initial states).
OPTIONAL_STORED = ("initial_h", "initial_c")

# TensorProto.DataType → (NumPy dtype name, the repeated field holding values when there is
# no raw_data). bfloat16 and float16 keep their bits in int32_data.
DATA_TYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "float_data"), 2: ("uint8", "int32_data"), 3: ("int8", "int32_data"),
    4: ("uint16", "int32_data"), 5: ("int16", "int32_data"), 6: ("int32", "int32_data"),
    7: ("int64", "int64_data"), 9: ("bool", "int32_data"), 10: ("float16", "int32_data"),
    11: ("float64", "double_data"), 12: ("uint32", "uint64_data"), 13: ("uint64", "uint64_data"),
    16: ("bfloat16", "int32_data"),
}  # fmt: skip
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def _import_onnx(path: str) -> Any:
    try:
        import onnx
    except ImportError:
        raise UsageError(f"{path}: reading ONNX models needs the onnx package: {INSTALL}") from None
    return onnx


@dataclass
class OnnxTensors:
    """The recurrent nodes of an ONNX model and the stored tensors they take."""

    path: str
    framework: str = "onnx"
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[RnnNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        onnx = _import_onnx(self.path)
        if os.path.getsize(self.path) > MAX_ONNX_BYTES:
            raise InputError("larger than 2 GB, which an ONNX protobuf cannot be")
        try:
            model = onnx.load(self.path, load_external_data=False)
        except Exception as exc:  # the protobuf parser reports damage in many ways
            raise InputError(f"not a readable ONNX model ({first_line(exc)})") from None
        if not model.HasField("graph"):
            raise InputError("not a readable ONNX model (it holds no graph)")
        graph = model.graph
        stored: dict[str, Any] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == 4:  # AttributeProto.TENSOR
                        stored.setdefault(node.output[0], attr.t)
        self._stored: dict[str, Any] = {}
        self._dequantize: dict[str, tuple[str, str]] = {}
        for index, node in enumerate(graph.node):
            roles = OPERATORS.get((_domain(node.domain), node.op_type))
            if roles is not None:
                self._add_node(node, roles, stored, index)
        nested = sorted({n.op_type for n in _subgraph_nodes(graph) if _is_rnn(n)})
        if nested:
            self.notes.append(
                f"{', '.join(nested)} nodes inside subgraphs (If, Loop, Scan) are not read"
            )

    def _add_node(self, node: Any, roles: tuple[str, ...], stored: dict[str, Any], i: int) -> None:
        name = node.name or f"{node.op_type}_{i}"
        inputs: dict[str, str] = {}
        for role, tensor_name in zip(roles, node.input):
            if not tensor_name or role in RUNTIME_INPUTS:
                continue
            tensor = stored.get(tensor_name)
            if tensor is None:
                if role in OPTIONAL_STORED:
                    continue
                raise InputError(
                    f"{node.op_type} node {name!r} input {role} ({tensor_name!r}) is not "
                    "stored in the file (computed by the graph or missing), so it cannot be read"
                )
            self._add_tensor(tensor_name, tensor)
            inputs[role] = tensor_name
        for required in ("W", "R"):
            if required not in inputs:
                raise InputError(f"{node.op_type} node {name!r} has no {required} input")
        attributes = {a.name: _attribute(a) for a in node.attribute}
        if node.op_type == "DynamicQuantizeLSTM":
            self._quantized(name, inputs)
        self.nodes.append(RnnNode(name, node.op_type, attributes, inputs))

    def _add_tensor(self, name: str, tensor: Any) -> None:
        if name in self._stored:
            return
        if tensor.data_location == _EXTERNAL or tensor.external_data:
            where = {e.key: e.value for e in tensor.external_data}.get("location", "?")
            raise InputError(
                f"tensor {name!r} is stored in an external data file ({where[:80]}), "
                "which is never opened"
            )
        kind = DATA_TYPES.get(tensor.data_type)
        if kind is None:
            raise InputError(f"tensor {name!r} has ONNX data type {tensor.data_type}, not read")
        dims = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in dims):
            raise InputError(f"tensor {name!r} has dims {list(dims)}")
        dtype, values_field = kind
        count = int(np.prod(dims, dtype=object))
        if tensor.HasField("raw_data"):
            need = count * np.dtype(numpy_dtype(dtype)).itemsize
            held = len(tensor.raw_data)
        else:
            need, held = count, len(getattr(tensor, values_field))
        if need != held:
            raise InputError(
                f"tensor {name!r} declares dims {list(dims)} of {dtype} but holds "
                f"{held} {'bytes' if tensor.HasField('raw_data') else 'values'}, not {need}"
            )
        self._stored[name] = tensor
        self.tensors[name] = TensorInfo(name, dims, dtype)

    def _quantized(self, node: str, inputs: dict[str, str]) -> None:
        for weight in ("W", "R"):
            scale, zero = inputs.get(f"{weight}_scale"), inputs.get(f"{weight}_zero_point")
            if scale is None or zero is None:
                raise InputError(
                    f"DynamicQuantizeLSTM node {node!r} has no {weight} scale or zero point"
                )
            q = self.tensors[inputs[weight]]
            s, z = self.tensors[scale], self.tensors[zero]
            if q.dtype not in ("int8", "uint8") or len(q.shape) != 3 or z.dtype != q.dtype:
                raise InputError(
                    f"DynamicQuantizeLSTM node {node!r}: {weight} is {q.dtype} {list(q.shape)}, "
                    f"zero point {z.dtype}; expected int8 or uint8 [D, rows, 4h] alike"
                )
            per_direction, per_column = (q.shape[0],), (q.shape[0], q.shape[2])
            if s.shape not in (per_direction, per_column) or z.shape != s.shape:
                raise InputError(
                    f"DynamicQuantizeLSTM node {node!r}: {weight} scale {list(s.shape)} and zero "
                    f"point {list(z.shape)} fit neither [D] nor [D, 4h] of {list(q.shape)}"
                )
            self._dequantize[inputs[weight]] = (scale, zero)
            self.tensors[inputs[weight]] = TensorInfo(q.name, q.shape, "float32")
            self.notes.append(
                f"{weight} of DynamicQuantizeLSTM node {node!r} is {q.dtype}, read dequantized "
                "to float32 as (q - zero_point) * scale, in its stored [D, rows, 4h] layout"
            )

    def read(self, name: str) -> np.ndarray:
        if name not in self._stored:
            raise InputError(f"no tensor {name!r}")
        values = self._decode(name)
        if name in self._dequantize:
            scale_name, zero_name = self._dequantize[name]
            scale = self._decode(scale_name).astype(np.float32)
            zero = self._decode(zero_name).astype(np.float32)
            if scale.ndim == 1:
                scale, zero = scale[:, None, None], zero[:, None, None]
            else:
                scale, zero = scale[:, None, :], zero[:, None, :]
            return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
        return values

    def _decode(self, name: str) -> np.ndarray:
        tensor = self._stored[name]
        dtype, values_field = DATA_TYPES[tensor.data_type]
        dims = tuple(int(d) for d in tensor.dims)
        bits = np.dtype(numpy_dtype(dtype))
        if tensor.HasField("raw_data"):
            flat = np.frombuffer(tensor.raw_data, dtype=bits.newbyteorder("<")).astype(bits)
        elif dtype in ("float16", "bfloat16"):
            flat = np.asarray(tensor.int32_data, dtype=np.int64).astype(np.uint16).view(bits)
        else:
            flat = np.asarray(getattr(tensor, values_field)).astype(bits)
        array = flat.reshape(dims)
        return bfloat16_to_float32(array) if dtype == "bfloat16" else array

    def close(self) -> None:
        self._stored.clear()


# ModelProto's fields and their protobuf wire types (0 varint, 2 length-delimited).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def looks_like_onnx(head: bytes, onnx_suffix: bool) -> bool:
    """Whether ``head`` starts like a serialized ModelProto: one or two well-formed fields of
    it (without the ``.onnx`` suffix: an ``ir_version`` first, then another field)."""
    fields: list[tuple[int, int]] = []
    pos = 0
    while pos < len(head) and len(fields) < 2:
        key, pos = _varint(head, pos)
        if key is None or _ONNX_FIELDS.get(key >> 3) != key & 7:
            break
        value, pos = _varint(head, pos)
        if value is None:
            break
        fields.append((key >> 3, value))
        if key & 7 == 2:
            pos += value
    if not fields:
        return False
    if onnx_suffix:
        return True
    return len(fields) == 2 and fields[0][0] == 1 and 1 <= fields[0][1] <= 64


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _is_rnn(node: Any) -> bool:
    return (_domain(node.domain), node.op_type) in OPERATORS


def _subgraph_nodes(graph: Any) -> list[Any]:
    found: list[Any] = []
    stack = [g for n in graph.node for a in n.attribute for g in ([a.g] if a.type == 5 else [])]
    stack += [g for n in graph.node for a in n.attribute if a.type == 10 for g in a.graphs]
    while stack and len(found) < 100_000:
        sub = stack.pop()
        for node in sub.node:
            found.append(node)
            stack.extend(a.g for a in node.attribute if a.type == 5)
            stack.extend(g for a in node.attribute if a.type == 10 for g in a.graphs)
    return found


def _attribute(attr: Any) -> Any:
    """An attribute's value as plain Python (tensors and graphs only by kind)."""
    kinds = {1: "f", 2: "i", 3: "s", 6: "floats", 7: "ints", 8: "strings"}
    key = kinds.get(attr.type)
    if key is None:
        return f"<{attr.type}>"
    value = getattr(attr, key)
    if key == "s":
        return bytes(value).decode("utf-8", "replace")
    if key == "strings":
        return [bytes(v).decode("utf-8", "replace") for v in value]
    if key in ("floats", "ints"):
        return list(value)
    return value
