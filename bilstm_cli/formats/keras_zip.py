"""Keras 3 ``.keras`` archives: ``config.json`` names the layers, ``model.weights.h5`` keeps
their weights in groups named by Keras' object tracking
(``layers/bidirectional_2/forward_layer/cell/vars/0``)."""

from __future__ import annotations

from functools import partial
from typing import Any

import h5py

from bilstm_cli import cells
from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe, hdf5
from bilstm_cli.formats.archive import CONFIG, METADATA, KerasArchive
from bilstm_cli.formats.base import Format, Probe, Session
from bilstm_cli.formats.hdf5 import about, keras_writer, open_h5, open_reader
from bilstm_cli.formats.keras_config import (
    MAX_CONFIG_BYTES,
    LayerEntry,
    bidirectional_cells,
    load_json,
    tracked_cell_names,
    walk_layers,
)
from bilstm_cli.formats.keras_layout import (
    bidirectional_layers,
    check_plain,
    dataset_shapes,
    numbered,
    plain_rnn_entries,
    roles_for,
    vars_name,
    weight_at,
)
from bilstm_cli.model import CellSettings, Layer, Model, PlainLayer, Weight


def claims(probe: Probe, session: Session) -> bool:
    """A zip archive; :func:`read_model` says whether it is a Keras one."""
    return probe.kind == "zip"


def read_model(path: str, session: Session) -> Model:
    """The layers of a ``.keras`` archive, from its configuration; no weight values."""
    with about(path), KerasArchive(path, session) as archive:
        config, meta = _settings(archive)
        with open_h5(archive.weights_file(), archive.weights_key, session) as f:
            return tracked_model(path, "keras", config, meta, f)


def open_model(path: str, session: Session) -> Model:
    """:func:`read_model` with a reader of the weights bound over the same open archive."""

    def layout(f: h5py.File, archive: KerasArchive | None) -> Model:
        assert archive is not None
        return tracked_model(path, "keras", *_settings(archive), f)

    return hdf5.open_model(path, session, layout)


def _settings(archive: KerasArchive) -> tuple[Any, Any]:
    """The archive's configuration and its metadata (None when it has none)."""
    config = load_json(archive.read_member(CONFIG, MAX_CONFIG_BYTES), CONFIG)
    meta = None
    if METADATA in archive.names:
        meta = load_json(archive.read_member(METADATA, 1 << 20), METADATA)
    return config, meta


def tracked_model(path: str, fmt: str, config: Any, meta: Any, f: h5py.File) -> Model:
    """A Keras 3 model (archive or folder) from its config, its metadata (or None) and its
    open object-tracking weights file."""
    version = None
    if isinstance(meta, dict) and isinstance(meta.get("keras_version"), str):
        version = meta["keras_version"]
    optimizer = ["optimizer"] if h5safe.has(f, "optimizer") else []
    return Model(
        path=path,
        format=fmt,
        keras_version=version,
        layers=_tracked_layers_from_config(f, config),
        config_known=True,
        weights_member="model.weights.h5",
        optimizer_groups=optimizer,
        optimizer_shapes=dataset_shapes(f, "optimizer") if optimizer else frozenset(),
        plain_layers=_tracked_rnns_from_config(f, config),
    )


def _layers_root(f: h5py.File) -> str:
    # tf-keras 2.13 named the layer list after its checkpoint dependency attribute.
    if not h5safe.has(f, "layers") and h5safe.has(f, "_layer_checkpoint_dependencies"):
        return "_layer_checkpoint_dependencies"
    return "layers"


def _tracked_layers_from_config(f: h5py.File, config: Any) -> list[Layer]:
    root_name = _layers_root(f)
    found: list[Layer] = []
    for entry in walk_layers(config):
        if entry.class_name != "Bidirectional":
            continue
        forward, backward, merge_mode = bidirectional_cells(entry)
        base = entry.keras_path
        if root_name != "layers":
            base = base.replace("layers/", f"{root_name}/")
        base, notes = _locate_tracked(f, base, entry)
        # A stack's cells sit under the stacked cell's ``cells`` list, named by class.
        cell_paths = {
            "forward": tracked_cell_names(forward.classes) if forward.stacked else None,
            "backward": tracked_cell_names(backward.classes) if backward.stacked else None,
        }

        weights = partial(_cell_weights, f, base, cell_paths)
        found += bidirectional_layers(entry, base, forward, backward, merge_mode, weights, notes)
    return found


def _cell_weights(
    f: h5py.File,
    base: str,
    cell_paths: dict[str, list[str] | None],
    k: int,
    direction: str,
    settings: CellSettings,
    layer: Layer,
) -> list[Weight]:
    """One direction's weights of cell ``k`` (a stack's cells sit under ``cell/cells``)."""
    sub = f"{base}/{direction}_layer"
    names = cell_paths[direction]
    cell = f"{sub}/cell/cells/{names[k]}" if names else f"{sub}/cell"
    return _tracked_direction(f, sub, direction, settings, layer, cell)


def _tracked_rnns_from_config(f: h5py.File, config: Any) -> list[PlainLayer]:
    found = []
    for entry, settings in plain_rnn_entries(config):
        base = entry.keras_path
        if _layers_root(f) != "layers":
            base = base.replace("layers/", f"{_layers_root(f)}/")
        if not h5safe.has(f, base):
            continue  # never built, so it has no weights
        layer = PlainLayer(entry.display_name, base, settings)
        layer.weights = _tracked_direction(f, base, "forward", settings, layer)
        check_plain(layer)
        found.append(layer)
    return found


def _locate_tracked(f: h5py.File, base: str, entry: LayerEntry) -> tuple[str, list[str]]:
    """The group holding a Bidirectional's weights, cross-checked against the ``name``
    attribute recent Keras versions write (older files have none, so it cannot lead)."""
    if h5safe.has(f, base):
        recorded = vars_name(f, base)
        if recorded is None or recorded == entry.name:
            return base, []
    # The walk and the file disagree: look for the layer's recorded name among its siblings.
    parent = base.rpartition("/")[0]
    if h5safe.has(f, parent):
        for child in h5safe.group(f, parent):
            candidate = f"{parent}/{child}"
            if (
                h5safe.has(f, f"{candidate}/forward_layer")
                and vars_name(f, candidate) == entry.name
            ):
                return candidate, [f"weights found by recorded name at '{candidate}'"]
    raise InputError(
        f"layer '{entry.display_name}': no weights where the configuration places them ('{base}')"
    )


def _tracked_direction(
    f: h5py.File,
    sub: str,
    direction: str,
    settings: CellSettings,
    layer: Layer | PlainLayer,
    cell: str | None = None,
) -> list[Weight]:
    vars_path = f"{cell or sub + '/cell'}/vars"
    if not h5safe.has(f, vars_path):
        # Layers that are not cell-based RNNs keep their variables on the layer itself.
        if settings.cell not in cells.layer_classes() and h5safe.has(f, f"{sub}/vars"):
            vars_path = f"{sub}/vars"
        else:
            raise InputError(f"layer '{layer.name}': {direction} weights missing ('{vars_path}')")
    keys = numbered(h5safe.group(f, vars_path))
    if settings.cell not in cells.layer_classes():
        return [weight_at(f, f"{vars_path}/{k}", direction, f"weight_{k}") for k in keys]
    roles = roles_for(settings)
    if len(keys) != len(roles):
        raise InputError(
            f"layer '{layer.name}': {direction} {settings.cell} should have {len(roles)} weights "
            f"({', '.join(roles)}), the file has {len(keys)} at '{vars_path}'"
        )
    return [weight_at(f, f"{vars_path}/{k}", direction, role) for k, role in zip(keys, roles)]


FORMAT = Format("keras", claims, read_model, open_reader, keras_writer, open_model)
