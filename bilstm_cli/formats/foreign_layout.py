"""Which recurrent layers another framework's named tensors hold, in the Keras picture.

A :class:`~bilstm_cli.formats.tensors.TensorFile` is a set of named tensors; here they become
:class:`ForeignLayer` / :class:`ForeignPlainLayer` entries whose weights read back in the Keras
convention (each weight's :class:`Recipe` says how), and whose :class:`RawCell` keeps the
tensors as the framework stores them, for a forward pass in the framework's own semantics.

Three layouts are recognised: a PyTorch state dict (``<module>.weight_ih_l<k>[_reverse]``, …;
a layer is ``<module>.l<k>``), ONNX recurrent nodes (or tensors named ``<layer>.W/R/B`` as
``bilstm export --layout onnx`` writes them) and Keras roles (``<layer>/forward/kernel``, …).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.cells import convention
from bilstm_cli.cells.base import get, layer_class_for_blocks
from bilstm_cli.errors import InputError
from bilstm_cli.formats.tensors import TensorFile, TensorInfo
from bilstm_cli.model import CellSettings, Layer, PlainLayer, Weight

Read = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class RawCell:
    """One direction as its framework stores it: the framework, the Keras cell family, the
    tensors by the framework's own names (``weight_ih``…, or ``W``, ``R``, ``B`` with the
    direction ``index`` along their first axis), and the attributes its semantics need."""

    framework: str
    cell: str
    units: int
    tensors: dict[str, str]
    index: int = 0
    reverse: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ForeignLayer(Layer):
    """A Bidirectional layer of another framework's file, seen in the Keras convention."""

    framework: str = ""
    raw: dict[str, RawCell] = field(default_factory=dict)
    #: Settings with no Keras equivalent, each naming the setting; refused when needed.
    refusals: list[str] = field(default_factory=list)


@dataclass
class ForeignPlainLayer(PlainLayer):
    """A unidirectional layer of another framework's file: a donor for one direction."""

    framework: str = ""
    raw: dict[str, RawCell] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    """How one Keras-convention weight is made from the file's tensors."""

    build: Callable[[Read], np.ndarray]


@dataclass
class Found:
    """What a file's tensors hold."""

    layout: str  # "pytorch", "onnx", "keras" or "" (no recurrent layer found)
    layers: list[ForeignLayer] = field(default_factory=list)
    plain: list[ForeignPlainLayer] = field(default_factory=list)
    recipes: dict[str, Recipe] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


_PYTORCH = re.compile(
    r"^(?:(?P<module>.+)\.)?(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"_l(?P<k>\d+)(?P<rev>_reverse)?$"
)
ONNX_NAMES = re.compile(r"^(?P<layer>.+)\.(?P<input>W|R|B)$")
_KERAS = re.compile(
    r"^(?P<layer>.+)/(?P<dir>forward|backward)/(?P<role>kernel|recurrent_kernel|bias)$"
)


def interpret(tf: TensorFile, metadata: dict[str, Any] | None = None) -> Found:
    """The recurrent layers the tensors of ``tf`` hold (``metadata``: what ``bilstm export``
    recorded about them, when the file keeps such a thing)."""
    meta = metadata or {}
    if tf.nodes:
        from bilstm_cli.formats.foreign_onnx import from_nodes

        return from_nodes(tf)
    names = list(tf.tensors)
    if any(_PYTORCH.match(n) for n in names):
        return _pytorch(tf)
    if any(_KERAS.match(n) for n in names):
        return _keras(tf, meta)
    if any(ONNX_NAMES.match(n) for n in names):
        from bilstm_cli.formats.foreign_onnx import from_names

        return from_names(tf, meta)
    return Found("", notes=[f"{len(names)} tensor(s), none of them recurrent layer weights"])


def in_recorded_order(groups: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, Any]]:
    """Layers in the order ``bilstm export`` recorded them (a file may store tensors sorted
    by name), the others after them in the file's order."""
    known = list(meta)
    return sorted(
        groups.items(), key=lambda kv: known.index(kv[0]) if kv[0] in known else len(known)
    )


def _shape_error(info: TensorInfo, expected: str) -> InputError:
    return InputError(f"tensor {info.name} has shape {info.shape}; expected {expected}")


def _pytorch(tf: TensorFile) -> Found:
    found = Found("pytorch")
    groups: dict[tuple[str, int], dict[bool, dict[str, TensorInfo]]] = {}
    for name, info in tf.tensors.items():
        m = _PYTORCH.match(name)
        if m is None:
            continue
        key = (m["module"] or "", int(m["k"]))
        groups.setdefault(key, {}).setdefault(bool(m["rev"]), {})[m["kind"]] = info
    other = len(tf.tensors) - sum(len(d) for g in groups.values() for d in g.values())
    if other:
        found.notes.append(f"{other} other tensor(s) left aside (not recurrent layer weights)")
    for (module, k), directions in groups.items():
        name = f"{module}.l{k}" if module else f"l{k}"
        cells = {rev: _pytorch_cell(name, k, rev, d) for rev, d in directions.items()}
        if False not in cells:
            raise InputError(f"layer {name}: only the _reverse direction is stored")
        fwd = cells[False]
        refusals = list(fwd[2])
        settings: dict[str, CellSettings] = {}
        weights: list[Weight] = []
        raws: dict[str, RawCell] = {}
        for rev, (raw, tensors, _) in cells.items():
            direction = "backward" if rev else "forward"
            if (raw.cell, raw.units) != (fwd[0].cell, fwd[0].units):
                raise InputError(f"layer {name}: the _reverse direction is another cell")
            raws[direction] = raw
            settings[direction] = CellSettings(
                cell=raw.cell,
                units=raw.units,
                activation="tanh",
                recurrent_activation="sigmoid",
                use_bias="bias_ih" in tensors,
                reset_after=True if raw.cell == "GRU" else None,
                go_backwards=rev,
                name=name,
            )
            weights += _pytorch_weights(raw, tensors, direction, found.recipes)
        notes = []
        if fwd[0].cell == "SimpleRNN":
            notes.append("nn.RNN's nonlinearity is not stored in a state dict: tanh assumed")
        if True in cells:
            layer = ForeignLayer(
                name,
                module or "(root)",
                "concat",
                settings["forward"],
                settings["backward"],
                weights,
                True,
                notes,
                not refusals,
                framework="pytorch",
                raw=raws,
                refusals=refusals,
            )
            found.layers.append(layer)
        else:
            plain = ForeignPlainLayer(
                name,
                module or "(root)",
                settings["forward"],
                weights,
                notes,
                framework="pytorch",
                raw=raws,
                refusals=refusals,
            )
            found.plain.append(plain)
    return found


def _pytorch_cell(
    name: str, k: int, rev: bool, d: dict[str, TensorInfo]
) -> tuple[RawCell, dict[str, TensorInfo], list[str]]:
    suffix = f"_l{k}" + ("_reverse" if rev else "")
    for needed in ("weight_ih", "weight_hh"):
        if needed not in d:
            raise InputError(f"layer {name}: {needed}{suffix} is missing")
    if ("bias_ih" in d) != ("bias_hh" in d):
        raise InputError(f"layer {name}: bias_ih{suffix} and bias_hh{suffix} come together")
    w_ih, w_hh = d["weight_ih"], d["weight_hh"]
    if len(w_ih.shape) != 2 or len(w_hh.shape) != 2 or 0 in w_hh.shape:
        raise _shape_error(w_hh if len(w_ih.shape) == 2 else w_ih, "a matrix")
    refusals = []
    units = w_hh.shape[1]
    if "weight_hr" in d:
        hr = d["weight_hr"]
        if len(hr.shape) != 2 or hr.shape[0] != w_hh.shape[1]:
            raise _shape_error(hr, f"(proj_size, hidden) with proj_size {w_hh.shape[1]}")
        units = hr.shape[1]
        refusals.append(
            f"proj_size={hr.shape[0]} (weight_hr{suffix}): an LSTM projection has no Keras "
            "equivalent"
        )
    blocks, rest = divmod(w_hh.shape[0], units)
    cell = layer_class_for_blocks(blocks) if not rest else None
    if cell is None:
        raise _shape_error(w_hh, "4, 3 or 1 blocks of rows (LSTM, GRU, RNN) of hidden_size")
    if w_ih.shape[0] != w_hh.shape[0]:
        raise _shape_error(w_ih, f"({w_hh.shape[0]}, input_size)")
    for b in ("bias_ih", "bias_hh"):
        if b in d and d[b].shape != (w_hh.shape[0],):
            raise _shape_error(d[b], f"({w_hh.shape[0]},)")
    tensors = {kind: info.name for kind, info in d.items()}
    return RawCell("pytorch", cell, units, tensors, reverse=rev), d, refusals


def _pytorch_weights(
    raw: RawCell, d: dict[str, TensorInfo], direction: str, recipes: dict[str, Recipe]
) -> list[Weight]:
    cell, units = raw.cell, raw.units
    width = get(cell).blocks * units
    out = []
    for role, kind in (("kernel", "weight_ih"), ("recurrent_kernel", "weight_hh")):
        info = d[kind]
        out.append(Weight(direction, role, info.name, info.shape[::-1], info.dtype))
        recipes[info.name] = Recipe(_kernel_recipe(info.name, cell, units))
    if "bias_ih" in d:
        ih, hh = d["bias_ih"].name, d["bias_hh"].name
        location = f"{ih} + {hh}"
        shape = (2, width) if cell == "GRU" else (width,)
        out.append(Weight(direction, "bias", location, shape, d["bias_ih"].dtype))
        recipes[location] = Recipe(
            lambda read: convention.bias_to_keras("pytorch", cell, read(ih), read(hh), units)
        )
    if "weight_hr" in d:
        hr = d["weight_hr"]
        out.append(Weight(direction, "projection", hr.name, hr.shape[::-1], hr.dtype))
        recipes[hr.name] = Recipe(_transposed(hr.name))
    return out


def _kernel_recipe(name: str, cell: str, units: int) -> Callable[[Read], np.ndarray]:
    return lambda read: convention.kernel_to_keras("pytorch", cell, read(name), units)


def _transposed(name: str) -> Callable[[Read], np.ndarray]:
    return lambda read: np.ascontiguousarray(read(name).T)


def _as_stored(name: str) -> Callable[[Read], np.ndarray]:
    return lambda read: read(name)


def _keras(tf: TensorFile, meta: dict[str, Any]) -> Found:
    """Tensors named by Keras roles (``bilstm export --layout keras``): the Keras convention
    already; cells and units from the shapes, settings from the recorded metadata if any."""
    found = Found("keras")
    groups: dict[str, dict[str, dict[str, TensorInfo]]] = {}
    for name, info in tf.tensors.items():
        m = _KERAS.match(name)
        if m is not None:
            groups.setdefault(m["layer"], {}).setdefault(m["dir"], {})[m["role"]] = info
    for name, dirs in in_recorded_order(groups, meta):
        if set(dirs) != {"forward", "backward"}:
            raise InputError(f"layer {name}: only its {', '.join(dirs)} weights are stored")
        recorded = meta.get(name, {})
        settings = {d: _keras_settings(name, d, roles, recorded) for d, roles in dirs.items()}
        weights = []
        for d, roles in dirs.items():
            for role in ("kernel", "recurrent_kernel", "bias"):
                if role in roles:
                    info = roles[role]
                    weights.append(Weight(d, role, info.name, info.shape, info.dtype))
                    found.recipes[info.name] = Recipe(_as_stored(info.name))
        layer = ForeignLayer(
            name,
            name,
            recorded.get("merge_mode"),
            settings["forward"],
            settings["backward"],
            weights,
            "merge_mode" in recorded,
            [],
            True,
            framework="keras",
        )
        if not recorded:
            layer.notes.append("no recorded settings: cell and units inferred from shapes")
        found.layers.append(layer)
    return found


def _keras_settings(
    name: str, direction: str, roles: dict[str, TensorInfo], recorded: dict[str, Any]
) -> CellSettings:
    rk = roles.get("recurrent_kernel")
    if rk is None or "kernel" not in roles or len(rk.shape) != 2 or rk.shape[0] == 0:
        raise InputError(f"layer {name}/{direction}: no kernel and recurrent_kernel matrices")
    blocks, rest = divmod(rk.shape[1], rk.shape[0])
    cell = layer_class_for_blocks(blocks) if not rest else None
    if cell is None:
        raise _shape_error(rk, "(units, 4, 3 or 1 × units)")
    bias = roles.get("bias")
    given = recorded.get(direction, {})
    return CellSettings(
        cell=cell,
        units=rk.shape[0],
        activation=given.get("activation"),
        recurrent_activation=given.get("recurrent_activation"),
        use_bias=bias is not None,
        reset_after=(bias is not None and len(bias.shape) == 2) if cell == "GRU" else None,
        go_backwards=direction == "backward",
        name=name,
    )
