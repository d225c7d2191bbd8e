"""Choosing layers and directions: the selectors every command shares."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TypeVar

from bilstm_cli import cells, formats
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.model import Layer, Model, PlainLayer


def _other_names(layer: Layer | PlainLayer) -> tuple[str, ...]:
    """A layer's own last name part and the names of what wraps it (``td`` of ``td/bi``, the
    whole ``bistack`` of its cell ``bistack/0``)."""
    return (layer.name.rsplit("/", 1)[-1], *getattr(layer, "aliases", ()))


def layer_matches(layer: Layer, pattern: str) -> bool:
    """A glob matches a layer's full name (``outer/inner``), its own last part, or the name of
    a wrapper around it (``td`` for ``td/bi``; ``bistack`` for each of its stacked cells)."""
    return fnmatchcase(layer.name, pattern) or any(
        fnmatchcase(n, pattern) for n in _other_names(layer)
    )


L = TypeVar("L", Layer, PlainLayer)


def find_layer(layers: Sequence[L], name: str) -> L | None:
    """The layer called ``name`` (its full ``outer/inner`` name), else the one layer whose own
    last part, or a wrapper's name, is ``name``; None when there is none, or more than one."""
    exact = [x for x in layers if x.name == name]
    if exact:
        return exact[0]
    by_own = [x for x in layers if name in _other_names(x)]
    return by_own[0] if len(by_own) == 1 else None


def select_layers(layers: Sequence[Layer], globs: Sequence[str], file: str) -> list[Layer]:
    """The layers any glob matches (all when none is given); a glob matching nothing is an error."""
    if not globs:
        return list(layers)
    for pattern in globs:
        if not any(layer_matches(layer, pattern) for layer in layers):
            available = ", ".join(layer.name for layer in layers) or "none"
            raise UsageError(
                f"--layer '{pattern}' matches no Bidirectional layer in {file} "
                f"(available: {available})"
            )
    return layers_matching(layers, globs)


def layers_matching(layers: Sequence[Layer], globs: Sequence[str]) -> list[Layer]:
    """The layers any glob matches, in file order (none when no glob is given)."""
    return [layer for layer in layers if any(layer_matches(layer, p) for p in globs)]


def directions(choice: str) -> tuple[str, ...]:
    if choice == "both":
        return ("forward", "backward")
    if choice in ("forward", "backward"):
        return (choice,)
    raise UsageError(f"--direction must be forward, backward or both, not '{choice}'")


def bidirectional_layers_to_change(
    model: Model, layer_globs: Sequence[str], verb: str
) -> list[Layer]:
    """The selected layers, refusing files or selections the command cannot work on."""
    formats.check_writable(model)
    if not model.layers:
        raise InputError(f"{model.path}: no Bidirectional layer to {verb}")
    layers = select_layers(model.layers, layer_globs, model.path)
    unsupported = [layer for layer in layers if not layer.supported]
    if unsupported:
        layer = unsupported[0]
        raise InputError(
            f"{model.path}: layer '{layer.name}' wraps {layer.cell}; only "
            f"{_cell_list()} weights can be changed (select other layers with --layer)"
        )
    return layers


def _cell_list() -> str:
    names = cells.known()
    return ", ".join(names[:-1]) + " and " + names[-1]
