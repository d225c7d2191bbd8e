"""Weights-only HDF5 files (``save_weights``): no configuration, so each Bidirectional layer
is recognised from two sibling RNN weight sets and its cell and units from their shapes, in
both the legacy (``layer_names``) and the Keras 3 object-tracking layout."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from itertools import permutations
from typing import Any

import h5py

from bilstm_cli import cells
from bilstm_cli.cells.blocks import ROLES
from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe
from bilstm_cli.formats.base import Format, Probe, Session, path_identity
from bilstm_cli.formats.h5_legacy import strip_suffix
from bilstm_cli.formats.hdf5 import about, keras_writer, open_h5, open_reader
from bilstm_cli.formats.keras_layout import (
    add_note,
    check_directions,
    check_stack,
    numbered,
    unknown_cell_note,
    vars_name,
    weight_at,
)
from bilstm_cli.formats.shard_names import json_of_shard
from bilstm_cli.model import CellSettings, ConvSettings, Layer, Model, StackPlace, Weight

MAX_GROUPS_VISITED = 200_000


def claims(probe: Probe, session: Session) -> bool:
    """Any other HDF5 file: :func:`read_model` says whether it holds Keras weights."""
    return probe.kind == "hdf5"


def read_model(path: str, session: Session) -> Model:
    """The Bidirectional layers a weights-only file holds, inferred from names and shapes."""
    with about(path), open_h5(path, path_identity(path), session) as f:
        version = h5safe.attr_string(f, "keras_version")
        if "layer_names" in f.attrs:
            layers = _legacy_layers_inferred(f, "")
            notes = [
                "weights only: no configuration, so cells and settings are inferred "
                "from names and shapes (activations, merge mode unknown)"
            ]
            return Model(path, "weights.h5", version, layers, False, notes=notes)
        if h5safe.has(f, "layers") or h5safe.has(f, "vars"):
            _refuse_shard(path, f)
            layers = _tracked_layers_inferred(f)
            notes = [
                "weights only: no configuration, so cells and settings are inferred "
                "from group names and shapes (activations, merge mode unknown)"
            ]
            return Model(path, "weights.h5", version, layers, False, notes=notes)
    raise InputError(f"{path}: an HDF5 file, but not a Keras model or weights file")


def _refuse_shard(path: str, f: h5py.File) -> None:
    """One shard of sharded weights holds only part of the model: point to its JSON."""
    found = json_of_shard(path, f)
    if found is not None:
        json_path, there = found
        name = os.path.basename(json_path)
        raise InputError(
            f"one shard of sharded weights; open {name} beside it instead"
            if there
            else f"one shard of sharded weights, whose {name} is not beside it"
        )


def _cell_family(name: str) -> cells.Cell | None:
    """The family whose cell Keras tracks or names ``name`` (``lstm_cell``, ``lstm_cell_2``)."""
    return cells.for_tracked_group(re.sub(r"_\d+$", "", name))


def _is_stack(name: str) -> bool:
    return re.fullmatch(r"stacked_rnn_cells(_\d+)?", name) is not None


#: scope -> direction layer -> cell ("" when the layer has one cell) -> (dataset, role).
Scopes = dict[str, dict[str, dict[str, list[tuple[str, str]]]]]


def _legacy_layers_inferred(f: h5py.File, prefix: str) -> list[Layer]:
    found: list[Layer] = []
    for layer_name in h5safe.attr_strings(f, "layer_names"):
        group_path = f"{prefix}{layer_name}"
        if not h5safe.has(f, group_path):
            continue
        scopes: Scopes = {}
        for n in h5safe.attr_strings(h5safe.group(f, group_path), "weight_names"):
            parts = strip_suffix(n).split("/")
            role = parts[-1]
            if role not in ROLES or len(parts) < 2:
                continue
            cell = ""
            if len(parts) >= 4 and _is_stack(parts[-3]):
                # bi/forward_rnn/stacked_rnn_cells/lstm_cell_1/kernel: one cell of a stack
                cell, sub, scope = parts[-2], parts[-4], "/".join(parts[:-4])
            elif len(parts) >= 3 and _cell_family(parts[-2]) is not None:
                sub, scope = parts[-3], "/".join(parts[:-3])
            else:
                sub, scope = parts[-2], "/".join(parts[:-2])
            scopes.setdefault(scope, {}).setdefault(sub, {}).setdefault(cell, []).append((n, role))
        for scope, subs in scopes.items():
            if len(subs) != 2:
                continue
            if not scope or scope == layer_name or scope.startswith(layer_name + "/"):
                name = scope or layer_name
            else:
                name = f"{layer_name}/{scope}"
            found += _legacy_cells(f, name, group_path, subs)
    return found


def _legacy_cells(
    f: h5py.File, name: str, group_path: str, subs: dict[str, dict[str, list[tuple[str, str]]]]
) -> list[Layer]:
    """One layer per cell of the two direction layers (the weight names keep a stack's cell
    order); nothing when the two do not hold the same number of cells."""
    (fwd_sub, fwd), (bwd_sub, bwd) = subs.items()
    if len(fwd) != len(bwd):
        return []
    stacked = list(fwd) != [""]
    pairs = list(zip(fwd.items(), bwd.items()))
    out = []
    for k, ((fcell, fitems), (bcell, bitems)) in enumerate(pairs):
        layer = _inferred_layer(
            f,
            f"{name}/{k}" if stacked else name,
            group_path,
            [(fcell or fwd_sub, fitems), (bcell or bwd_sub, bitems)],
            lambda n, g=group_path: f"{g}/{n}",
        )
        if layer is None:
            return []
        out.append(layer)
    if stacked:
        _as_stack(out, name)
    return out


def _as_stack(layers: list[Layer], name: str, note: str | None = None) -> None:
    """Mark inferred layers as the cells of one stack, in order."""
    for k, layer in enumerate(layers):
        layer.stack = StackPlace(name, k, len(layers))
        layer.aliases = (*layer.aliases, name, name.rsplit("/", 1)[-1])
        layer.notes.append(f"cell {k + 1} of {len(layers)} of a StackedRNNCells in '{name}'")
        if note:
            layer.notes.append(note)
    check_stack(layers)


def _infer_settings(sub: str, shapes: dict[str, tuple[int, ...]]) -> CellSettings | None:
    rk = shapes.get("recurrent_kernel")
    if rk is None or len(rk) < 2 or rk[-2] == 0 or rk[-1] % rk[-2]:
        return None
    units, gates = rk[-2], rk[-1] // rk[-2]
    lowered = sub.lower()
    cell = cells.layer_class_for_blocks(gates, stored="cu_dnn" in lowered or "cudnn" in lowered)
    conv = None
    if len(rk) > 2:  # a convolutional cell: kernel_size + (filters, 4 filters)
        cell = cells.conv_class_for_rank(len(rk) - 2) if gates == 4 else None
        conv = ConvSettings(kernel_size=tuple(rk[:-2]))
    if cell is None:
        return None
    bias = shapes.get("bias")
    reset_after = None
    if cell == "GRU":
        reset_after = bias is not None and len(bias) == 2
    return CellSettings(
        cell=cell,
        units=units,
        activation=None,
        recurrent_activation=None,
        use_bias=bias is not None,
        reset_after=reset_after,
        go_backwards=False,
        name=sub,
        conv=conv,
    )


def _inferred_layer(
    f: h5py.File,
    name: str,
    group: str,
    subs: list[tuple[str, list[tuple[str, str]]]],
    dataset_path: Any,
) -> Layer | None:
    """A Bidirectional recognised from two sibling RNN weight sets (forward first)."""
    settings = []
    refs: list[Weight] = []
    for direction, (sub, items) in zip(("forward", "backward"), subs):
        direction_refs = [weight_at(f, dataset_path(n), direction, role) for n, role in items]
        s = _infer_settings(sub, {r.role: r.shape for r in direction_refs})
        if s is None:
            return None
        if direction == "backward":
            s = CellSettings(**{**s.__dict__, "go_backwards": True})
        settings.append(s)
        refs.extend(direction_refs)
    layer = Layer(name, group, None, settings[0], settings[1], refs, config_known=False)
    layer.supported = cells.supported(*settings)
    layer.notes.append("no configuration: cell and units inferred from shapes")
    check_directions(layer)
    return layer


def _tracked_layers_inferred(f: h5py.File) -> list[Layer]:
    found = []
    visited = 0
    seen = set()
    stack = [""]
    while stack:
        path = stack.pop()
        visited += 1
        if visited > MAX_GROUPS_VISITED:
            raise InputError("the weights file has too many groups to search")
        g = h5safe.group(f, path) if path else f
        key = h5safe.object_key(g)
        if key in seen:
            continue  # reached again through another hard link (a cycle or an alias)
        seen.add(key)
        children = [k for k in g.keys() if k != "vars"]
        if "forward_layer" in children and "backward_layer" in children:
            layers = _tracked_bidirectional_inferred(f, path)
            if layers:
                found.extend(layers)
                continue
        for child in sorted(children, reverse=True):
            # Only groups reached through hard links are searched; datasets are skipped.
            if isinstance(g.get(child, getlink=True), h5py.HardLink) and isinstance(
                g.get(child), h5py.Group
            ):
                stack.append(f"{path}/{child}" if path else child)
    return found


def _tracked_names(f: h5py.File, path: str) -> tuple[list[str], list[str]]:
    """The names of the layers along a tracked path, preferring the names recent Keras
    records: each layer of a model's list, and the layer a wrapper holds (``layer``); and
    the names of those wrappers, short and full (other names the layer answers to)."""
    parts = path.split("/")
    names: list[str] = []
    wrappers: list[str] = []
    for i, part in enumerate(parts):
        listed = i > 0 and parts[i - 1] in ("layers", "_layer_checkpoint_dependencies")
        wrapped = i > 0 and part == "layer" and not listed and bool(names)
        if wrapped:
            wrappers += [names[-1], "/".join(names)]
        if listed or wrapped:
            names.append(vars_name(f, "/".join(parts[: i + 1])) or part)
    return (names or [path]), wrappers


def _tracked_bidirectional_inferred(f: h5py.File, path: str) -> list[Layer]:
    names, wrappers = _tracked_names(f, path)
    name = "/".join(names)
    aliases = tuple(dict.fromkeys(wrappers))
    if all(
        h5safe.has(f, f"{path}/{sub}/cell/cells") for sub in ("forward_layer", "backward_layer")
    ):
        layers = _tracked_stack_inferred(f, path, name)
    else:
        layer = _tracked_single_inferred(f, path, name)
        layers = [layer] if layer is not None else []
    for layer in layers:
        layer.aliases = tuple(dict.fromkeys((*aliases, *layer.aliases)))
    return layers


def _tracked_single_inferred(f: h5py.File, path: str, name: str) -> Layer | None:
    subs = []
    for sub in ("forward_layer", "backward_layer"):
        vars_path = f"{path}/{sub}/cell/vars"
        if not h5safe.has(f, vars_path):
            return None
        keys = numbered(h5safe.group(f, vars_path))
        if len(keys) not in (2, 3):
            return None
        cell_name = vars_name(f, f"{path}/{sub}/cell")
        items = [(f"{vars_path}/{k}", role) for k, role in zip(keys, ROLES)]
        subs.append((cell_name or sub, items))
    layer = _inferred_layer(f, name, path, subs, lambda n: n)
    if layer is not None:
        recorded = [vars_name(f, f"{path}/{s}/cell") for s in ("forward_layer", "backward_layer")]
        for r, s in zip(recorded, (layer.forward, layer.backward)):
            family = _cell_family(r) if r is not None else None
            # The ConvLSTM classes share one group name; their shapes gave s.conv.
            same = family is None or family.name == s.cell or bool(family.spatial_dims and s.conv)
            if not same:
                raise InputError(f"layer '{name}': a {r} whose shapes fit a {s.cell}")
            if r is not None and family is None:
                add_note(
                    layer,
                    f"the cell is recorded as '{r}', a name Keras gives none of its own cells: "
                    f"if it is a custom cell, reading it as a {s.cell} from its shapes is a guess",
                )
    return layer


# Stacks longer than this are not put in order by trying every order.
MAX_STACK_ORDERS = 8


def _tracked_stack_inferred(f: h5py.File, path: str, name: str) -> list[Layer]:
    """The cells of a stack (``<direction>/cell/cells/<class>[_N]``). The file keeps no order
    of the cells: it is the one their shapes allow (each cell reads the previous one's units),
    with cells of one class in their counter order."""
    found: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for sub in ("forward_layer", "backward_layer"):
        base = f"{path}/{sub}/cell/cells"
        found[sub] = {}
        for child in h5safe.group(f, base).keys():
            vars_path = f"{base}/{child}/vars"
            if not h5safe.has(f, vars_path):
                continue
            keys = numbered(h5safe.group(f, vars_path))
            found[sub][child] = [(f"{vars_path}/{k}", role) for k, role in zip(keys, ROLES)]
    if sorted(found["forward_layer"]) != sorted(found["backward_layer"]):
        return []
    shapes = {
        cell: {role: tuple(h5safe.dataset(f, p).shape) for p, role in items}
        for cell, items in found["forward_layer"].items()
    }
    orders = _stack_orders(shapes)
    if not orders:
        return []
    note = None
    if len(orders) > 1:
        note = (
            "the file keeps no order of the stacked cells and their shapes allow more than "
            f"one: listed as {', '.join(orders[0])}"
        )
    layers = []
    for k, cell in enumerate(orders[0]):
        subs = [(cell, found[sub][cell]) for sub in ("forward_layer", "backward_layer")]
        if _cell_family(cell) is None:
            # A stack's cells are tracked by class name: this one is none of Keras' cells.
            layer: Layer | None = _unknown_cell(f, f"{name}/{k}", path, cell, subs)
        else:
            layer = _inferred_layer(f, f"{name}/{k}", path, subs, lambda n: n)
        if layer is None:
            return []
        layers.append(layer)
    _as_stack(layers, name, note)
    return layers


def _unknown_cell(
    f: h5py.File, name: str, path: str, cell: str, subs: list[tuple[str, list[tuple[str, str]]]]
) -> Layer:
    """A cell of a class Keras does not have: its weights by position, nothing changed. Its
    units are taken as the stack's order took them: the rows of its second weight."""
    weights = [
        weight_at(f, location, direction, f"weight_{k}")
        for direction, (_, items) in zip(("forward", "backward"), subs)
        for k, (location, _) in enumerate(items)
    ]
    units = weights[1].shape[0] if len(weights) > 1 and len(weights[1].shape) == 2 else 0
    settings = CellSettings(cell, units, None, None, True, None, False, cell)
    layer = Layer(name, path, None, settings, replace(settings, go_backwards=True), weights)
    layer.config_known = False
    add_note(layer, unknown_cell_note(cell))
    return layer


def _stack_orders(shapes: dict[str, dict[str, tuple[int, ...]]]) -> list[list[str]]:
    """Orders of the cells (at most two) in which each cell's kernel reads the units of the
    cell before it, cells of one class keeping their counter order."""

    def counter(cell: str) -> tuple[str, int]:
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", cell)
        assert m is not None
        return m.group(1), int(m.group(2) or 0)

    def fits(order: tuple[str, ...]) -> bool:
        for before, cell in zip(order, order[1:]):
            rk, kernel = shapes[before].get("recurrent_kernel"), shapes[cell].get("kernel")
            if not rk or not kernel or kernel[0] != rk[0]:
                return False
        seen: dict[str, int] = {}
        for cell in order:
            cls, n = counter(cell)
            if n < seen.get(cls, -1):
                return False
            seen[cls] = n
        return True

    cells_ = sorted(shapes)
    if len(cells_) > MAX_STACK_ORDERS:
        return []
    out: list[list[str]] = []
    for order in permutations(cells_):
        if fits(order):
            out.append(list(order))
            if len(out) == 2:
                break
    return out


FORMAT = Format("weights.h5", claims, read_model, open_reader, keras_writer)
