"""What the Keras layouts share: the weights each cell has, the shapes they must have, and a
weight entry for a dataset, checked against the layer's configuration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h5py

from bilstm_cli import cells
from bilstm_cli.cells import conv_lstm
from bilstm_cli.cells.blocks import ROLES
from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe
from bilstm_cli.formats.keras_config import LayerEntry, cell_settings, walk_layers
from bilstm_cli.model import CellSettings, Layer, PlainLayer, Weight


def plain_rnn_entries(config: Any) -> Iterator[tuple[LayerEntry, CellSettings]]:
    for entry in walk_layers(config):
        if entry.class_name in cells.layer_classes():
            settings = cell_settings(
                {"class_name": entry.class_name, "config": entry.config},
                f"layer '{entry.display_name}'",
            )
            yield entry, settings


def check_plain(layer: PlainLayer) -> None:
    kernel = layer.weight("kernel")
    if kernel is None or len(kernel.shape) != cells.kernel_rank(layer.settings):
        raise InputError(
            f"layer '{layer.name}': kernel is missing or {_not_kernel(layer.settings)}"
        )
    for w in layer.weights:
        want = cells.expected_shape(layer.settings, w.role, kernel.shape[-2])
        if w.shape != want:
            raise InputError(
                f"layer '{layer.name}': {w.role} has shape {shape_text(w.shape)}, but a "
                f"{layer.settings.cell} of {layer.settings.units} units needs {shape_text(want)}"
            )


def vars_name(f: h5py.File, group_path: str) -> str | None:
    if not h5safe.has(f, f"{group_path}/vars"):
        return None
    return h5safe.attr_string(h5safe.group(f, f"{group_path}/vars"), "name")


def numbered(g: h5py.Group) -> list[str]:
    keys = [k for k in g.keys() if k.isdigit()]
    return sorted(keys, key=int)


def roles_for(settings: CellSettings) -> tuple[str, ...]:
    return ROLES if settings.use_bias else ROLES[:2]


def weight_at(f: h5py.File, path: str, direction: str, role: str) -> Weight:
    try:
        ds = h5safe.dataset(f, path)
    except KeyError:
        raise InputError(f"{direction} {role} weight '{path}' is missing from the file") from None
    return Weight(
        direction=direction,
        role=role,
        location=path,
        shape=tuple(int(d) for d in ds.shape),
        dtype=h5safe.dtype_name(ds),
    )


def check_directions(layer: Layer) -> None:
    """Every weight's shape must fit the cell the configuration declares."""
    inputs = {}
    for direction in ("forward", "backward"):
        settings = layer.settings[direction]
        if settings.cell not in cells.layer_classes():
            continue
        kernel = layer.weight(direction, "kernel")
        if kernel is None or len(kernel.shape) != cells.kernel_rank(settings):
            raise InputError(
                f"layer '{layer.name}': {direction} kernel is missing or {_not_kernel(settings)}"
            )
        inputs[direction] = kernel.shape[-2]
        for w in layer.weights:
            if w.direction != direction:
                continue
            want = cells.expected_shape(settings, w.role, kernel.shape[-2])
            if w.shape != want:
                raise InputError(
                    f"layer '{layer.name}': {direction} {w.role} has shape {shape_text(w.shape)}, "
                    f"but a {settings.cell} of {settings.units} units needs {shape_text(want)}"
                )
    if len(set(inputs.values())) > 1:
        raise InputError(
            f"layer '{layer.name}': the forward kernel takes {inputs['forward']} inputs, the "
            f"backward kernel {inputs['backward']}; both directions read the same input"
        )
    # A convolutional cell's settings are told in a note, the layer's title showing units only.
    if layer.forward.conv is not None:
        layer.notes.append(conv_lstm.describe(layer.forward.cell, layer.forward.conv))


def _not_kernel(settings: CellSettings) -> str:
    rank = cells.kernel_rank(settings)
    return "not a matrix" if rank == 2 else f"not of rank {rank} (kernel_size + (input, width))"


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# More objects than any optimizer keeps for a model: the walk stops there.
MAX_OPTIMIZER_OBJECTS = 100_000


def dataset_shapes(f: h5py.File, root: str) -> frozenset[tuple[int, ...]]:
    """The shapes of the datasets below ``root`` (reached through hard links only): what an
    optimizer's slots look like, to tell which weights it keeps state for."""
    shapes: set[tuple[int, ...]] = set()
    stack, visited = [root], 0
    while stack:
        path = stack.pop()
        g = h5safe.group(f, path)
        for name in g.keys():
            visited += 1
            if visited > MAX_OPTIMIZER_OBJECTS:
                return frozenset(shapes)
            if not isinstance(g.get(name, getlink=True), h5py.HardLink):
                continue
            child = g.get(name)
            if isinstance(child, h5py.Group):
                stack.append(f"{path}/{name}")
            elif isinstance(child, h5py.Dataset):
                shapes.add(tuple(int(d) for d in child.shape))
    return frozenset(shapes)
