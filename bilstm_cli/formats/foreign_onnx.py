"""ONNX recurrent nodes (``LSTM``, ``GRU``, ``RNN``, com.microsoft ``DynamicQuantizeLSTM``) as
layers in the Keras picture.

A node is one layer: ``direction="bidirectional"`` a Bidirectional layer, ``forward`` or
``reverse`` a plain one. W [D, blocks·h, in], R [D, blocks·h, h], B [D, 2·blocks·h]; gates
LSTM i,o,f,c and GRU z,r,h (see cells/convention.py). What Keras cannot express (``clip``,
``input_forget``, peepholes, activations Keras has no name for, an LSTM whose cell and output
activations differ) is listed on the layer, each naming the attribute, and refused by the
operations that would need it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilstm_cli.cells import convention
from bilstm_cli.cells.base import get, layer_class_for_blocks
from bilstm_cli.cells.framework_forward import ONNX_DEFAULT_ACTIVATIONS, onnx_activation_params
from bilstm_cli.errors import InputError
from bilstm_cli.formats.foreign_layout import (
    ONNX_NAMES,
    ForeignLayer,
    ForeignPlainLayer,
    Found,
    RawCell,
    Read,
    Recipe,
    in_recorded_order,
)
from bilstm_cli.formats.tensors import RnnNode, TensorFile
from bilstm_cli.model import CellSettings, Weight

OPS = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN", "DynamicQuantizeLSTM": "LSTM"}

# ONNX activation names Keras has a name for (with the operator's default alpha/beta).
_KERAS_ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "softsign": "softsign",
    "softplus": "softplus",
}


def from_nodes(tf: TensorFile) -> Found:
    """One layer per recurrent node of the graph."""
    found = Found("onnx")
    for k, node in enumerate(tf.nodes):
        if node.op_type not in OPS:
            found.notes.append(f"node {node.name or k}: {node.op_type} left aside")
            continue
        _add_layer(tf, node, node.name or f"{node.op_type.lower()}_{k}", found)
    if any(n.op_type == "DynamicQuantizeLSTM" for n in tf.nodes):
        found.notes.append("DynamicQuantizeLSTM weights are dequantized (W, R) to be read")
    return found


def from_names(tf: TensorFile, meta: dict[str, Any]) -> Found:
    """Tensors named ``<layer>.W``, ``<layer>.R``, ``<layer>.B`` (``bilstm export --layout
    onnx``), read as nodes with the attributes recorded beside them, else the defaults."""
    found = Found("onnx")
    groups: dict[str, dict[str, str]] = {}
    for name in tf.tensors:
        m = ONNX_NAMES.match(name)
        if m is not None:
            groups.setdefault(m["layer"], {})[m["input"]] = name
    for layer, inputs in in_recorded_order(groups, meta):
        if "W" not in inputs or "R" not in inputs:
            continue
        w = tf.tensors[inputs["W"]]
        recorded = dict(meta.get(layer, {}))
        if "direction" not in recorded:
            recorded["direction"] = "bidirectional" if w.shape[:1] == (2,) else "forward"
        attrs = {k: v for k, v in recorded.items() if k != "op_type"}
        r = tf.tensors[inputs["R"]]
        op = recorded.get("op_type") or _op_from_shape(r.shape)
        node = RnnNode(layer, op, attrs, inputs)
        _add_layer(tf, node, layer, found)
        if not meta.get(layer):
            found.notes.append(
                f"{layer}: no recorded attributes; ONNX defaults assumed"
                + (" (GRU linear_before_reset=0)" if op == "GRU" else "")
            )
    return found


def _text(value: Any) -> Any:
    """An attribute with ONNX's byte strings decoded (``direction``, ``activations``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    return value


def _op_from_shape(shape: tuple[int, ...]) -> str:
    if len(shape) != 3 or shape[2] == 0 or shape[1] % shape[2]:
        return "?"
    cell = layer_class_for_blocks(shape[1] // shape[2])
    return {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}.get(cell or "", "?")


def _add_layer(tf: TensorFile, node: RnnNode, name: str, found: Found) -> None:
    if node.op_type not in OPS:
        raise InputError(f"{name}: tensors that fit no LSTM, GRU or RNN")
    cell = OPS[node.op_type]
    blocks = get(cell).blocks
    attrs = {k: _text(v) for k, v in node.attributes.items()}
    direction = str(attrs.get("direction", "forward"))
    count = 2 if direction == "bidirectional" else 1
    for needed in ("W", "R"):
        if not node.inputs.get(needed) or node.inputs[needed] not in tf.tensors:
            raise InputError(f"node {name}: input {needed} is not a stored initializer")
    w, r = tf.tensors[node.inputs["W"]], tf.tensors[node.inputs["R"]]
    quantized = node.op_type == "DynamicQuantizeLSTM"
    if quantized:  # stored transposed: [D, in, 4h] and [D, h, 4h]
        units = r.shape[1] if len(r.shape) == 3 else 0
        w_shape = (w.shape[0], w.shape[2], w.shape[1]) if len(w.shape) == 3 else w.shape
    else:
        units = r.shape[2] if len(r.shape) == 3 else 0
        w_shape = w.shape
    units = int(attrs.get("hidden_size", units))
    width = blocks * units
    if len(w_shape) != 3 or w_shape[:2] != (count, width):
        raise InputError(f"node {name}: W of shape {w.shape} does not fit {count}×{cell}({units})")
    if r.shape not in ((count, width, units), (count, units, width)):
        raise InputError(f"node {name}: R of shape {r.shape} does not fit {count}×{cell}({units})")
    b_name = node.inputs.get("B") or None
    if b_name is not None:
        if b_name not in tf.tensors:
            raise InputError(f"node {name}: input B is not a stored initializer")
        if tf.tensors[b_name].shape != (count, 2 * width):
            raise InputError(f"node {name}: B of shape {tf.tensors[b_name].shape} does not fit")
    refusals = []
    for key, why in (("clip", "Keras cells do not clip"), ("input_forget", "no Keras setting")):
        if attrs.get(key) not in (None, 0):
            refusals.append(f"{key}={attrs[key]}: {why}")
    if node.inputs.get("P"):
        refusals.append("P (peephole weights): Keras LSTM cells have no peepholes")
    for key in ("initial_h", "initial_c"):
        if node.inputs.get(key):
            refusals.append(f"{key} (a stored initial state): Keras layers start from zeros")
    lbr = int(attrs.get("linear_before_reset", 0))
    per = len(ONNX_DEFAULT_ACTIVATIONS[cell])
    names = list(attrs.get("activations") or ONNX_DEFAULT_ACTIVATIONS[cell] * count)
    alphas, betas = onnx_activation_params(
        names, list(attrs.get("activation_alpha") or []), list(attrs.get("activation_beta") or [])
    )
    kinds = ("forward", "backward") if count == 2 else ("forward",)
    settings: dict[str, CellSettings] = {}
    raws: dict[str, RawCell] = {}
    weights: list[Weight] = []
    dtype = "float32" if quantized else w.dtype
    for d, kind in enumerate(kinds):
        own = names[d * per : (d + 1) * per]
        reverse = kind == "backward" or direction == "reverse"
        own_a, own_b = alphas[d * per : (d + 1) * per], betas[d * per : (d + 1) * per]
        keras_acts, refused = _keras_activations(cell, own, own_a, own_b)
        if refused:
            refusals.append(refused)
        raw = RawCell(
            "onnx",
            cell,
            units,
            dict(node.inputs),
            d,
            reverse,
            {
                "activations": own,
                "alphas": alphas[d * per : (d + 1) * per],
                "betas": betas[d * per : (d + 1) * per],
                "clip": attrs.get("clip"),
                "input_forget": int(attrs.get("input_forget", 0)),
                "linear_before_reset": lbr,
                "input_size": w_shape[2],
            },
        )
        raws[kind] = raw
        settings[kind] = CellSettings(
            cell=cell,
            units=units,
            activation=keras_acts[0],
            recurrent_activation=keras_acts[1],
            use_bias=b_name is not None,
            reset_after=bool(lbr) if cell == "GRU" else None,
            go_backwards=reverse,
            name=name,
        )
        weights += _weights(raw, kind, node.inputs, b_name, dtype, quantized, found)
    notes = [f"ONNX {node.op_type} node, direction={direction}"]
    refusals = list(dict.fromkeys(refusals))
    if count == 2:
        found.layers.append(
            ForeignLayer(
                name,
                name,
                None,
                settings["forward"],
                settings["backward"],
                weights,
                True,
                notes,
                not refusals,
                framework="onnx",
                raw=raws,
                refusals=refusals,
            )
        )
    else:
        found.plain.append(
            ForeignPlainLayer(
                name, name, settings["forward"], weights, notes, "onnx", raws, refusals
            )
        )


def _keras_activations(
    cell: str, names: list[str], alphas: list[float | None], betas: list[float | None]
) -> tuple[tuple[str, str], str | None]:
    """(activation, recurrent_activation) in Keras' names, and why not when Keras has none.
    HardSigmoid with slope 1/6 and offset 0.5 is Keras 3's ``hard_sigmoid``."""
    keras = [_KERAS_ACTIVATIONS.get(n.lower()) for n in names]
    for k, n in enumerate(names):
        a, b = (alphas[k : k + 1] or [None])[0], (betas[k : k + 1] or [None])[0]
        if n.lower() == "hardsigmoid" and a is not None and abs(a - 1 / 6) < 1e-6 and b == 0.5:
            keras[k] = "hard_sigmoid"
    why = None
    if None in keras:
        bad = names[keras.index(None)]
        why = f"activations ({bad}): no Keras activation computes ONNX's {bad}"
    if cell == "LSTM":
        if keras[1] != keras[2] and why is None:
            why = f"activations ({names[1]}, {names[2]}): Keras uses one for the cell and output"
        return (keras[1] or names[1].lower(), keras[0] or names[0].lower()), why
    if cell == "GRU":
        return (keras[1] or names[1].lower(), keras[0] or names[0].lower()), why
    return (keras[0] or names[0].lower(), "sigmoid"), why


def _weights(
    raw: RawCell,
    kind: str,
    inputs: dict[str, str],
    b_name: str | None,
    dtype: str,
    quantized: bool,
    found: Found,
) -> list[Weight]:
    cell, units, d = raw.cell, raw.units, raw.index
    width = get(cell).blocks * units
    out = []
    for role, key in (("kernel", "W"), ("recurrent_kernel", "R")):
        tensor = inputs[key]
        location = f"{tensor}[{d}]"

        def build(read: Read, key: str = key) -> np.ndarray:
            matrix = raw_matrix(read, inputs, key, d, quantized)
            return convention.kernel_to_keras("onnx", cell, matrix, units)

        rows = raw.attributes["input_size"] if role == "kernel" else units
        out.append(Weight(kind, role, location, (rows, width), dtype))
        found.recipes[location] = Recipe(build)
    if b_name is not None:
        location = f"{b_name}[{d}]"
        lbr = bool(raw.attributes["linear_before_reset"])

        def build_bias(read: Read) -> np.ndarray:
            b = read(b_name)[d]
            return convention.bias_to_keras("onnx", cell, b[:width], b[width:], units, lbr)

        shape = (2, width) if cell == "GRU" and lbr else (width,)
        out.append(Weight(kind, "bias", location, shape, dtype))
        found.recipes[location] = Recipe(build_bias)
    return out


def raw_matrix(read: Read, inputs: dict[str, str], key: str, d: int, quantized: bool) -> np.ndarray:
    """Direction ``d`` of W or R in the operator's own [blocks·h, n] layout. DynamicQuantizeLSTM
    stores them transposed, [n, 4h]; the reader already gives them dequantized
    (``(q − zero_point) · scale``), so here they are only transposed."""
    values: np.ndarray = read(inputs[key])[d]
    if not quantized:
        return values
    out: np.ndarray = np.ascontiguousarray(values.T)
    return out
