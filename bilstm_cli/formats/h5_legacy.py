"""Legacy ``.h5`` model files (Keras 2, tf.keras, tf-keras, Keras 3's legacy writer): the
``model_config`` attribute names the layers, ``model_weights/<layer>`` holds each top-level
layer's datasets in the order of its ``weight_names`` attribute."""

from __future__ import annotations

from functools import partial
from typing import Any

import h5py

from bilstm_cli import cells
from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe, hdf5
from bilstm_cli.formats.base import Format, Probe, Session, path_identity
from bilstm_cli.formats.hdf5 import about, keras_writer, open_h5, open_reader
from bilstm_cli.formats.keras_config import (
    LayerEntry,
    bidirectional_cells,
    load_json,
    walk_layers,
)
from bilstm_cli.formats.keras_layout import (
    bidirectional_layers,
    check_plain,
    dataset_shapes,
    plain_rnn_entries,
    roles_for,
    weight_at,
)
from bilstm_cli.model import CellSettings, Layer, Model, PlainLayer, Weight


def claims(probe: Probe, session: Session) -> bool:
    """An HDF5 file with a ``model_config`` attribute: a whole legacy model."""
    if probe.kind != "hdf5":
        return False
    with open_h5(probe.path, path_identity(probe.path), session) as f:
        return "model_config" in f.attrs


def read_model(path: str, session: Session) -> Model:
    """The layers of a legacy ``.h5`` model, from its configuration; no weight values."""
    with about(path), open_h5(path, path_identity(path), session) as f:
        return _layout(path, f)


def open_model(path: str, session: Session) -> Model:
    """:func:`read_model` with a reader of the weights bound over the same open file."""
    return hdf5.open_model(path, session, lambda f, _archive: _layout(path, f))


def _layout(path: str, f: h5py.File) -> Model:
    """The layers of a legacy model read from its open file."""
    version = h5safe.attr_string(f, "keras_version")
    raw = h5safe.attr(f, "model_config")
    if not isinstance(raw, bytes | str):
        raise InputError("the model_config attribute is not text")
    config = load_json(raw, "model_config")
    if not h5safe.has(f, "model_weights"):
        raise InputError("a model configuration but no model_weights group")
    layers = _legacy_layers_from_config(f, config)
    rnns = _legacy_rnns_from_config(f, config)
    optimizer = ["optimizer_weights"] if h5safe.has(f, "optimizer_weights") else []
    slots = dataset_shapes(f, "optimizer_weights") if optimizer else frozenset()
    return Model(
        path,
        "h5",
        version,
        layers,
        True,
        optimizer_groups=optimizer,
        optimizer_shapes=slots,
        plain_layers=rnns,
    )


def strip_suffix(name: str) -> str:
    """A weight name without TensorFlow's ``:0`` suffix."""
    return name[:-2] if name.endswith(":0") else name


def _legacy_layers_from_config(f: h5py.File, config: Any) -> list[Layer]:
    found: list[Layer] = []
    for entry in walk_layers(config):
        if entry.class_name != "Bidirectional":
            continue
        forward, backward, merge_mode = bidirectional_cells(entry)
        group_path = f"model_weights/{entry.h5_group}"
        if not h5safe.has(f, group_path):
            raise InputError(f"layer '{entry.display_name}': no weights group '{group_path}'")
        names = h5safe.attr_strings(h5safe.group(f, group_path), "weight_names")
        if entry.chain:
            # A nested model keeps all its weights in one group; pick this layer's by scope.
            names = [n for n in names if entry.scope in n.split("/")[:-2]]
        chunks = _split_by_cell(entry, forward.settings + backward.settings, names)
        weights = partial(_cell_weights, f, group_path, chunks, len(forward.settings))
        found += bidirectional_layers(entry, group_path, forward, backward, merge_mode, weights)
    return found


def _cell_weights(
    f: h5py.File,
    group_path: str,
    chunks: list[list[str]],
    size: int,
    k: int,
    direction: str,
    settings: CellSettings,
    layer: Layer,
) -> list[Weight]:
    """One direction's weights of cell ``k``: forward cells' names come first."""
    chunk = chunks[k if direction == "forward" else size + k]
    if settings.cell not in cells.layer_classes():
        return [
            weight_at(f, f"{group_path}/{n}", direction, f"weight_{i}") for i, n in enumerate(chunk)
        ]
    return _legacy_direction(f, group_path, chunk, direction, settings, layer)


def _split_by_cell(
    entry: LayerEntry, settings: tuple[CellSettings, ...], names: list[str]
) -> list[list[str]]:
    """The weight names of each cell, forward cells first, then backward ones: by count when
    every cell is known, else by the scope each name carries (one run of names per cell)."""
    where = f"layer '{entry.display_name}'"
    if all(s.cell in cells.layer_classes() for s in settings):
        counts = [len(roles_for(s)) for s in settings]
        if len(names) != sum(counts):
            what = "; ".join(
                f"{s.cell}, use_bias={s.use_bias}" for s in settings[: len(settings) // 2]
            )
            raise InputError(
                f"{where}: expected {sum(counts)} weights ({what}), the file lists {len(names)}"
            )
        out, at = [], 0
        for c in counts:
            out.append(names[at : at + c])
            at += c
        return out
    runs: list[list[str]] = []
    for n in names:
        scope = strip_suffix(n).rpartition("/")[0]
        if runs and strip_suffix(runs[-1][0]).rpartition("/")[0] == scope:
            runs[-1].append(n)
        else:
            runs.append([n])
    if len(runs) == len(settings):
        return runs
    if len(settings) == 2 and len(names) % 2 == 0:
        half = len(names) // 2
        return [names[:half], names[half:]]
    raise InputError(f"{where}: cannot tell which of its {len(names)} weights belong to which cell")


def _legacy_rnns_from_config(f: h5py.File, config: Any) -> list[PlainLayer]:
    found = []
    for entry, settings in plain_rnn_entries(config):
        group_path = f"model_weights/{entry.h5_group}"
        if not h5safe.has(f, group_path):
            continue
        names = h5safe.attr_strings(h5safe.group(f, group_path), "weight_names")
        if entry.chain:
            names = [n for n in names if entry.scope in n.split("/")[:-2]]
        if len(names) != len(roles_for(settings)):
            continue
        layer = PlainLayer(entry.display_name, group_path, settings)
        layer.weights = _legacy_direction(f, group_path, names, "forward", settings, layer)
        check_plain(layer)
        found.append(layer)
    return found


def _legacy_direction(
    f: h5py.File,
    group_path: str,
    names: list[str],
    direction: str,
    settings: CellSettings,
    layer: Layer | PlainLayer,
) -> list[Weight]:
    expected = roles_for(settings)
    named = [strip_suffix(n).rsplit("/", 1)[-1] for n in names]
    if sorted(named) == sorted(expected):
        roles = named
    else:
        roles = list(expected)
        layer.notes.append(f"{direction} weight names not recognised; roles taken by position")
    return [weight_at(f, f"{group_path}/{n}", direction, r) for n, r in zip(names, roles)]


FORMAT = Format("h5", claims, read_model, open_reader, keras_writer, open_model)
