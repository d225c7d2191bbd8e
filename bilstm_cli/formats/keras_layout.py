"""What the Keras layouts share: the weights each cell has, the shapes they must have, and a
weight entry for a dataset, checked against the layer's configuration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import h5py

from bilstm_cli import cells
from bilstm_cli.cells import conv_lstm
from bilstm_cli.cells.blocks import ROLES
from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe
from bilstm_cli.formats.keras_config import (
    RNN_CLASS,
    LayerEntry,
    RnnCells,
    rnn_cells,
    walk_layers,
)
from bilstm_cli.model import CellSettings, Layer, PlainLayer, StackPlace, Weight


def plain_rnn_entries(config: Any) -> Iterator[tuple[LayerEntry, CellSettings]]:
    """Plain recurrent layers (possible donors): layer forms and ``RNN`` around one cell."""
    for entry in walk_layers(config):
        if entry.class_name in cells.layer_classes() or entry.class_name == RNN_CLASS:
            found = rnn_cells(
                {"class_name": entry.class_name, "config": entry.config},
                f"layer '{entry.display_name}'",
            )
            if not found.stacked and found.settings[0].cell in cells.layer_classes():
                yield entry, found.settings[0]


def add_note(layer: Layer | PlainLayer, note: str) -> None:
    """A note, once: what holds for both directions is said once."""
    if note not in layer.notes:
        layer.notes.append(note)


def unknown_cell_note(cell: str) -> str:
    return f"{cell} is an unknown cell; weights listed by position, roles unknown"


#: ``weights(index, direction, settings, layer)``: one direction's weights of cell ``index``.
DirectionWeights = Callable[[int, str, CellSettings, Layer], list[Weight]]


def bidirectional_layers(
    entry: LayerEntry,
    group: str,
    forward: RnnCells,
    backward: RnnCells,
    merge_mode: str | None,
    weights: DirectionWeights,
    notes: list[str] | None = None,
) -> list[Layer]:
    """The layers of one Bidirectional entry: itself, or one per cell of a stack
    (``bistack/0``, ``bistack/1``, …), each with its weights checked against its cell."""
    name = entry.display_name
    size = len(forward.settings)
    found: list[Layer] = []
    for k, (fs, bs) in enumerate(zip(forward.settings, backward.settings)):
        layer = Layer(
            name=f"{name}/{k}" if forward.stacked else name,
            group=group,
            merge_mode=merge_mode,
            forward=fs,
            backward=bs,
            notes=list(notes or []),
            supported=cells.supported(fs, bs),
            aliases=(
                tuple(dict.fromkeys((*entry.aliases, name, entry.name)))
                if forward.stacked
                else entry.aliases
            ),
            stack=StackPlace(name, k, size) if forward.stacked else None,
        )
        if forward.stacked:
            add_note(layer, f"cell {k + 1} of {size} of a StackedRNNCells in '{name}'")
        for direction, settings in (("forward", fs), ("backward", bs)):
            if settings.cell not in cells.layer_classes():
                add_note(layer, unknown_cell_note(settings.cell))
            layer.weights.extend(weights(k, direction, settings, layer))
        check_directions(layer)
        found.append(layer)
    check_stack(found)
    return found


def check_stack(layers: list[Layer]) -> None:
    """Each cell of a stack reads what the cell before it outputs (its units)."""
    for before, layer in zip(layers, layers[1:]):
        kernel = layer.weight("forward", "kernel")
        if not (before.supported and layer.supported) or kernel is None:
            continue
        if kernel.shape[0] != before.units:
            raise InputError(
                f"layer '{layer.name}': its kernel takes {kernel.shape[0]} inputs, but the cell "
                f"before it ('{before.name}') gives {before.units}"
            )


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
