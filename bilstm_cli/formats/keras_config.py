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
from dataclasses import dataclass
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

    @property
    def display_name(self) -> str:
        return "/".join((*self.chain, self.name))


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
        yield LayerEntry(
            name=name,
            class_name=class_name,
            config=conf if isinstance(conf, dict) else {},
            keras_path=keras_path,
            h5_group=group,
            chain=chain,
        )
        if _is_model(entry):
            yield from _walk(entry, keras_path + "/", group, (*chain, name), depth + 1)


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
    units = conf.get("units")
    valid_units = isinstance(units, int) and not isinstance(units, bool) and units > 0
    if class_name in cells.layer_classes() and not valid_units:
        raise InputError(f"{where}: {class_name} has no valid 'units' in the configuration")
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
    )


def bidirectional_settings(entry: LayerEntry) -> tuple[CellSettings, CellSettings, str | None]:
    """Forward and backward settings and the merge mode of a Bidirectional entry."""
    where = f"layer '{entry.display_name}'"
    conf = entry.config
    forward = cell_settings(conf.get("layer"), where)
    if conf.get("backward_layer") is not None:
        backward = cell_settings(conf["backward_layer"], where)
        if backward.go_backwards == forward.go_backwards:
            # Keras refuses to build such a layer; its backward pass would run forwards.
            raise InputError(
                f"{where}: the forward and backward layers both have "
                f"go_backwards={forward.go_backwards}; Keras requires them to differ"
            )
    else:
        backward = CellSettings(
            **{**forward.__dict__, "go_backwards": not forward.go_backwards, "name": None}
        )
    merge_mode = conf.get("merge_mode", "concat")
    if merge_mode is not None and not isinstance(merge_mode, str):
        raise InputError(f"{where}: merge_mode is not a string")
    return forward, backward, merge_mode
