"""Reading a model's JSON configuration: which layers are Bidirectional, what they wrap,
and where Keras put their weights.

The configuration is data only. Class names and modules are read as strings and never
resolved, imported or called, so a file naming a custom layer or a ``Lambda`` (whose config
may carry marshalled bytecode) is as safe to read as any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from bilstm_cli import cells
from bilstm_cli.errors import InputError, first_line
from bilstm_cli.model import CellSettings

# A configuration larger than this is not a model anyone saved; refuse rather than parse it.
MAX_CONFIG_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LayerEntry:
    """A layer found in the configuration, with both ways Keras may address its weights.

    ``keras_path`` is the group in a ``.keras``/``.weights.h5`` weights file (object-tracking
    names such as ``layers/bidirectional_2``); ``h5_group`` is the top-level layer's group in
    a legacy ``.h5`` file, and ``chain`` the names of the models it sits in, outermost first.
    """

    name: str
    class_name: str
    config: dict[str, Any]
    keras_path: str
    h5_group: str
    chain: tuple[str, ...]
    #: The wrapper layers around this one (``TimeDistributed``), outermost first.
    wrappers: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        return "/".join((*self.chain, *self.wrappers, self.name))

    @property
    def scope(self) -> str:
        """The name a legacy ``.h5`` file scopes this layer's weight names with (a wrapped
        layer's weights are named after its outermost wrapper)."""
        return self.wrappers[0] if self.wrappers else self.name

    @property
    def aliases(self) -> tuple[str, ...]:
        """The other names a wrapped layer answers to: each wrapper's, short and full."""
        out: list[str] = []
        for k, wrapper in enumerate(self.wrappers):
            out += [wrapper, "/".join((*self.chain, *self.wrappers[: k + 1]))]
        if self.wrappers:
            out.append(self.name)
        return tuple(dict.fromkeys(n for n in out if n != self.display_name))


#: Layers that wrap one other layer and keep its weights under ``<wrapper>/layer``.
WRAPPER_CLASSES = ("TimeDistributed",)


def load_json(raw: bytes | str, what: str) -> Any:
    """Parse JSON from an untrusted file, turning every failure into one clear error."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError(f"{what} is {len(raw)} bytes, larger than any model configuration")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{what} is not valid JSON ({first_line(exc, 120)})") from None


def to_snake_case(name: str) -> str:
    """The group name Keras derives from a class name (``SimpleRNN`` -> ``simple_rnn``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _is_operation(entry: dict[str, Any]) -> bool:
    """Keras 3 functional graphs list ``keras.ops`` calls as layers; they own no weights."""
    module = entry.get("module")
    return isinstance(module, str) and (
        module.startswith("keras.src.ops") or module.startswith("keras.ops")
    )


def _layer_list(model: dict[str, Any]) -> list[dict[str, Any]]:
    conf = model.get("config")
    # Keras 2.0-2.2 wrote a Sequential's config as the bare list of its layers.
    if isinstance(conf, list):
        return [e for e in conf if isinstance(e, dict)]
    if isinstance(conf, dict) and isinstance(conf.get("layers"), list):
        return [e for e in conf["layers"] if isinstance(e, dict)]
    return []


def _is_model(entry: dict[str, Any]) -> bool:
    conf = entry.get("config")
    if isinstance(conf, list):
        return True
    return isinstance(conf, dict) and isinstance(conf.get("layers"), list)


def _entry_name(entry: dict[str, Any]) -> str:
    conf = entry.get("config")
    for holder in (conf, entry):
        if isinstance(holder, dict) and isinstance(holder.get("name"), str):
            return str(holder["name"])
    return "?"


# Far beyond any real model; each Bidirectional costs work per weight in every command.
MAX_BIDIRECTIONAL = 1024
MAX_LAYER_ENTRIES = 100_000


def walk_layers(model: dict[str, Any]) -> Iterator[LayerEntry]:
    """Every layer of a model configuration, nested models included, in file order."""
    if not isinstance(model, dict) or not _is_model(model):
        raise InputError("the model configuration lists no layers")
    count = bidirectional = 0
    for entry in _walk(model, "", None, (), depth=0):
        count += 1
        bidirectional += entry.class_name == "Bidirectional"
        if count > MAX_LAYER_ENTRIES or bidirectional > MAX_BIDIRECTIONAL:
            what = "layers" if count > MAX_LAYER_ENTRIES else "Bidirectional layers"
            limit = MAX_LAYER_ENTRIES if count > MAX_LAYER_ENTRIES else MAX_BIDIRECTIONAL
            raise InputError(
                f"the model configuration lists more than {limit} {what}; refused as implausible"
            )
        yield entry


def _walk(
    model: dict[str, Any], prefix: str, h5_group: str | None, chain: tuple[str, ...], depth: int
) -> Iterator[LayerEntry]:
    if depth > 32:
        raise InputError("the model configuration nests models more than 32 deep")
    sequential = model.get("class_name") == "Sequential"
    used: dict[str, int] = {}
    for entry in _layer_list(model):
        class_name = entry.get("class_name")
        if not isinstance(class_name, str) or _is_operation(entry):
            continue
        # A Sequential model's input layer is not one of its tracked layers, so it gets no group.
        if sequential and class_name == "InputLayer":
            continue
        segment = to_snake_case(class_name)
        if segment in used:
            used[segment] += 1
            segment = f"{segment}_{used[segment]}"
        else:
            used[segment] = 0
        name = _entry_name(entry)
        keras_path = f"{prefix}layers/{segment}"
        group = h5_group if h5_group is not None else name
        conf = entry.get("config")
        found = LayerEntry(
            name=name,
            class_name=class_name,
            config=conf if isinstance(conf, dict) else {},
            keras_path=keras_path,
            h5_group=group,
            chain=chain,
        )
        yield found
        yield from _unwrap(found)
        if _is_model(entry):
            yield from _walk(entry, keras_path + "/", group, (*chain, name), depth + 1)


def _unwrap(entry: LayerEntry, depth: int = 0) -> Iterator[LayerEntry]:
    """The layer a wrapper (``TimeDistributed``) holds, as an entry of its own: Keras tracks
    its weights under the wrapper's ``layer`` attribute."""
    inner = entry.config.get("layer")
    if entry.class_name not in WRAPPER_CLASSES or not isinstance(inner, dict) or depth > 32:
        return
    class_name = inner.get("class_name")
    conf = inner.get("config")
    if not isinstance(class_name, str):
        return
    found = LayerEntry(
        name=_entry_name(inner),
        class_name=class_name,
        config=conf if isinstance(conf, dict) else {},
        keras_path=f"{entry.keras_path}/layer",
        h5_group=entry.h5_group,
        chain=entry.chain,
        wrappers=(*entry.wrappers, entry.name),
    )
    yield found
    yield from _unwrap(found, depth + 1)


def _activation_name(value: Any) -> str | None:
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        # Serialized functions: {"module": ..., "class_name": "function", "config": "tanh"}.
        conf = value.get("config")
        if isinstance(conf, str):
            return conf
        if isinstance(value.get("class_name"), str):
            return str(value["class_name"])
    return None


def cell_settings(layer: Any, where: str) -> CellSettings:
    """A wrapped RNN layer's settings from its config dict (``{"class_name", "config"}``)."""
    if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str):
        raise InputError(f"{where}: the wrapped layer has no class name in the configuration")
    class_name = layer["class_name"]
    raw = layer.get("config")
    conf: dict[str, Any] = raw if isinstance(raw, dict) else {}
    conv = cells.conv_settings(class_name, conf, where)  # a ConvLSTM's units are its filters
    units = conf.get("units" if conv is None else "filters")
    valid_units = isinstance(units, int) and not isinstance(units, bool) and units > 0
    if class_name in cells.layer_classes() and not valid_units:
        key = "units" if conv is None else "filters"
        raise InputError(f"{where}: {class_name} has no valid '{key}' in the configuration")
    reset_after = None
    if class_name == "GRU":
        # Absent in Keras 2.0-2.2 configs, where reset_after did not exist yet (i.e. False).
        reset_after = bool(conf.get("reset_after", False))
    elif class_name == "CuDNNGRU":
        reset_after = True
    return CellSettings(
        cell=class_name,
        units=units if isinstance(units, int) else 0,
        activation=_activation_name(conf.get("activation", "tanh")),
        recurrent_activation=(
            _activation_name(conf.get("recurrent_activation", "sigmoid"))
            if class_name in cells.layer_classes() and cells.layer_block_count(class_name) > 1
            else None
        ),
        use_bias=bool(conf.get("use_bias", True)),
        reset_after=reset_after,
        go_backwards=bool(conf.get("go_backwards", False)),
        name=conf.get("name") if isinstance(conf.get("name"), str) else None,
        conv=conv,
    )


#: Keras cell classes run by the generic ``RNN`` layer, and the layer class each one is the
#: cell of: ``RNN(LSTMCell(u))`` holds exactly the weights of ``LSTM(u)`` and computes the same.
CELL_CLASSES = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
#: The generic recurrent layer around a cell, and the cell that runs several cells in turn.
RNN_CLASS = "RNN"
STACK_CLASS = "StackedRNNCells"


@dataclass(frozen=True)
class RnnCells:
    """What one direction of a Bidirectional runs: one cell, or the cells of a stack in order.

    ``classes`` are the cells' own class names (``LSTMCell``; the layer's class for a layer
    such as ``LSTM``): Keras tracks a stack's cells under names derived from them.
    """

    settings: tuple[CellSettings, ...]
    classes: tuple[str, ...]
    stacked: bool = False


def _cell_of_rnn(cell: Any, rnn: dict[str, Any], where: str) -> tuple[CellSettings, str]:
    """One cell inside an ``RNN`` layer as the layer form it equals (``LSTMCell`` → ``LSTM``);
    ``go_backwards`` comes from the ``RNN`` layer. An unknown cell keeps its class name."""
    if not isinstance(cell, dict) or not isinstance(cell.get("class_name"), str):
        raise InputError(f"{where}: an RNN layer without a cell class in the configuration")
    class_name = cell["class_name"]
    family = CELL_CLASSES.get(class_name, class_name)
    settings = cell_settings({"class_name": family, "config": cell.get("config")}, where)
    return (
        replace(
            settings,
            go_backwards=bool(rnn.get("go_backwards", False)),
            name=rnn.get("name") if isinstance(rnn.get("name"), str) else None,
        ),
        class_name,
    )


def rnn_cells(layer: Any, where: str) -> RnnCells:
    """The cells a wrapped recurrent layer runs: a layer such as ``LSTM``, an ``RNN`` around
    one cell, or an ``RNN`` around ``StackedRNNCells`` (one entry per cell, in order)."""
    if not isinstance(layer, dict) or layer.get("class_name") != RNN_CLASS:
        settings = cell_settings(layer, where)
        return RnnCells((settings,), (settings.cell,))
    raw = layer.get("config")
    rnn: dict[str, Any] = raw if isinstance(raw, dict) else {}
    cell = rnn.get("cell")
    if isinstance(cell, dict) and cell.get("class_name") == STACK_CLASS:
        conf = cell.get("config")
        inner = conf.get("cells") if isinstance(conf, dict) else None
        if not isinstance(inner, list) or not inner:
            raise InputError(f"{where}: a StackedRNNCells without cells in the configuration")
        pairs = [_cell_of_rnn(c, rnn, where) for c in inner]
        return RnnCells(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), stacked=True)
    settings, class_name = _cell_of_rnn(cell, rnn, where)
    return RnnCells((settings,), (class_name,))


def tracked_cell_names(classes: tuple[str, ...]) -> list[str]:
    """The groups Keras tracks a stack's cells under (``cells/lstm_cell``, ``cells/gru_cell``,
    ``cells/lstm_cell_1``): each class name in snake case, one counter per name."""
    used: dict[str, int] = {}
    out = []
    for class_name in classes:
        segment = to_snake_case(class_name)
        used[segment] = used.get(segment, -1) + 1
        out.append(f"{segment}_{used[segment]}" if used[segment] else segment)
    return out


def bidirectional_cells(entry: LayerEntry) -> tuple[RnnCells, RnnCells, str | None]:
    """The forward and backward cells and the merge mode of a Bidirectional entry."""
    where = f"layer '{entry.display_name}'"
    conf = entry.config
    forward = rnn_cells(conf.get("layer"), where)
    if conf.get("backward_layer") is not None:
        backward = rnn_cells(conf["backward_layer"], where)
        if backward.settings[0].go_backwards == forward.settings[0].go_backwards:
            # Keras refuses to build such a layer; its backward pass would run forwards.
            raise InputError(
                f"{where}: the forward and backward layers both have "
                f"go_backwards={forward.settings[0].go_backwards}; Keras requires them to differ"
            )
        if len(backward.settings) != len(forward.settings) or backward.stacked != forward.stacked:
            raise InputError(
                f"{where}: the forward layer runs {len(forward.settings)} cells, the backward "
                f"layer {len(backward.settings)}"
            )
    else:
        backward = replace(
            forward,
            settings=tuple(
                replace(s, go_backwards=not s.go_backwards, name=None) for s in forward.settings
            ),
        )
    merge_mode = conf.get("merge_mode", "concat")
    if merge_mode is not None and not isinstance(merge_mode, str):
        raise InputError(f"{where}: merge_mode is not a string")
    return forward, backward, merge_mode
