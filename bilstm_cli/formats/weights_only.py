"""Weights-only HDF5 files (``save_weights``): no configuration, so each Bidirectional layer
is recognised from two sibling RNN weight sets and its cell and units from their shapes, in
both the legacy (``layer_names``) and the Keras 3 object-tracking layout."""

from __future__ import annotations

import os
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
    check_directions,
    numbered,
    vars_name,
    weight_at,
)
from bilstm_cli.formats.shard_names import json_of_shard
from bilstm_cli.model import CellSettings, ConvSettings, Layer, Model, Weight

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


def _legacy_layers_inferred(f: h5py.File, prefix: str) -> list[Layer]:
    found = []
    for layer_name in h5safe.attr_strings(f, "layer_names"):
        group_path = f"{prefix}{layer_name}"
        if not h5safe.has(f, group_path):
            continue
        scopes: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for n in h5safe.attr_strings(h5safe.group(f, group_path), "weight_names"):
            parts = strip_suffix(n).split("/")
            role = parts[-1]
            if role not in ROLES or len(parts) < 2:
                continue
            if len(parts) >= 3 and cells.for_tracked_group(parts[-2]) is not None:
                sub, scope = parts[-3], "/".join(parts[:-3])
            else:
                sub, scope = parts[-2], "/".join(parts[:-2])
            scopes.setdefault(scope, {}).setdefault(sub, []).append((n, role))
        for scope, subs in scopes.items():
            if len(subs) != 2:
                continue
            if not scope or scope == layer_name or scope.startswith(layer_name + "/"):
                name = scope or layer_name
            else:
                name = f"{layer_name}/{scope}"
            layer = _inferred_layer(
                f,
                name,
                group_path,
                list(subs.items()),
                lambda n, g=group_path: f"{g}/{n}",
            )
            if layer is not None:
                found.append(layer)
    return found


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
            layer = _tracked_bidirectional_inferred(f, path)
            if layer is not None:
                found.append(layer)
                continue
        for child in sorted(children, reverse=True):
            # Only groups reached through hard links are searched; datasets are skipped.
            if isinstance(g.get(child, getlink=True), h5py.HardLink) and isinstance(
                g.get(child), h5py.Group
            ):
                stack.append(f"{path}/{child}" if path else child)
    return found


def _tracked_display_name(f: h5py.File, path: str) -> str:
    """``outer/inner`` from a tracked path, preferring the names recent Keras records."""
    parts = path.split("/")
    names = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] in ("layers", "_layer_checkpoint_dependencies"):
            names.append(vars_name(f, "/".join(parts[: i + 1])) or part)
    return "/".join(names) or path


def _tracked_bidirectional_inferred(f: h5py.File, path: str) -> Layer | None:
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
    name = _tracked_display_name(f, path)
    layer = _inferred_layer(f, name, path, subs, lambda n: n)
    if layer is not None:
        recorded = [vars_name(f, f"{path}/{s}/cell") for s in ("forward_layer", "backward_layer")]
        for r, s in zip(recorded, (layer.forward, layer.backward)):
            family = cells.for_tracked_group(r) if r is not None else None
            # The ConvLSTM classes share one group name; their shapes gave s.conv.
            same = family is None or family.name == s.cell or bool(family.spatial_dims and s.conv)
            if not same:
                raise InputError(f"layer '{name}': a {r} whose shapes fit a {s.cell}")
    return layer


FORMAT = Format("weights.h5", claims, read_model, open_reader, keras_writer)
