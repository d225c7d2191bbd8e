"""What ``export`` writes for each layer: the tensors as another framework names and lays them
out, and the settings that framework cannot express (refused by name).

``pytorch``: ``<module>.weight_ih_l<k>``, ``weight_hh_l<k>``, ``bias_ih_l<k>``, ``bias_hh_l<k>``
and the ``_reverse`` four: the state dict of ``nn.LSTM/GRU/RNN(..., bidirectional=True)`` held
as attribute ``<module>`` (the layer's own name, or ``--map LAYER=MODULE.lK``). ``keras``:
``<layer>/<direction>/<role>``. ``onnx``: ``<layer>.W``, ``<layer>.R``, ``<layer>.B`` as the
ONNX operator of a ``direction="bidirectional"`` node takes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.cells import convention
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.formats.foreign_layout import ForeignLayer
from bilstm_cli.model import CellSettings, Layer
from bilstm_cli.ops.select import find_layer

LAYOUTS = ("pytorch", "keras", "onnx")

# Keras activations ONNX's recurrent operators compute, by their ONNX name.
_ONNX_ACTIVATIONS = {
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "softsign": "Softsign",
    "softplus": "Softplus",
    "hard_sigmoid": "HardSigmoid",
}
_ONNX_OPS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
_COMPARED = ("cell", "units", "activation", "recurrent_activation", "use_bias", "reset_after")


@dataclass
class Placed:
    """One layer and where it goes: a module and index (``pytorch``) or its own name."""

    layer: Layer
    prefix: str
    index: int = 0
    #: The settings the target framework records for it (ONNX attributes, Keras settings).
    attributes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def refusals(layer: Layer, layout: str, keras_major: int) -> list[str]:
    """Why ``layer`` cannot be written in ``layout``, each naming the setting."""
    out = list(layer.refusals) if isinstance(layer, ForeignLayer) else []
    if layout == "keras":
        return out
    fwd, bwd = layer.forward, layer.backward
    for key in _COMPARED:
        a, b = getattr(fwd, key), getattr(bwd, key)
        if a != b:
            out.append(
                f"backward_layer: its {key} {b} differs from the forward layer's {a}; "
                f"{layout} has one setting for both directions"
            )
    if fwd.go_backwards or not bwd.go_backwards:
        out.append("go_backwards: the forward layer reads time backwards")
    if fwd.cell not in _ONNX_OPS:
        out.append(f"cell {fwd.cell}: {layout} has no such layer")
        return out
    if layout == "pytorch":
        out += _pytorch_refusals(fwd)
    else:
        out += _onnx_refusals(fwd, keras_major)
    return out


def _pytorch_refusals(s: CellSettings) -> list[str]:
    out = []
    why = convention.pytorch_refusal(s.cell, s.reset_after)
    if why:
        out.append(why)
    allowed = ("tanh", "relu") if s.cell == "SimpleRNN" else ("tanh",)
    if s.activation is not None and s.activation not in allowed:
        out.append(f"activation={s.activation}: PyTorch's {s.cell} uses {' or '.join(allowed)}")
    if s.cell != "SimpleRNN" and s.recurrent_activation not in (None, "sigmoid"):
        out.append(
            f"recurrent_activation={s.recurrent_activation}: PyTorch's gates use the sigmoid"
        )
    return out


def _onnx_refusals(s: CellSettings, keras_major: int) -> list[str]:
    out = []
    names = [("activation", s.activation)]
    if s.cell != "SimpleRNN":
        names.append(("recurrent_activation", s.recurrent_activation))
    for key, name in names:
        if name is not None and name not in _ONNX_ACTIVATIONS:
            out.append(f"{key}={name}: no ONNX recurrent activation computes it")
    return out


def onnx_attributes(layer: Layer, keras_major: int) -> dict[str, Any]:
    """The attributes of the ONNX node that computes ``layer`` with the exported W, R, B."""
    s = layer.forward
    act = s.activation or "tanh"
    ract = s.recurrent_activation or "sigmoid"
    if s.cell == "LSTM":
        own = [ract, act, act]
    elif s.cell == "GRU":
        own = [ract, act]
    else:
        own = [act]
    # Keras 2's hard_sigmoid is clip(0.2x + 0.5), Keras 3's clip(x/6 + 0.5): ONNX's
    # HardSigmoid takes the slope as alpha.
    slope = 0.2 if keras_major < 3 else 1.0 / 6.0
    attrs: dict[str, Any] = {
        "op_type": _ONNX_OPS[s.cell],
        "direction": "bidirectional",
        "hidden_size": s.units,
        "activations": [_ONNX_ACTIVATIONS[a] for a in own] * 2,
    }
    if "hard_sigmoid" in own:
        # One value per activation that takes one, in order (onnxruntime's reading).
        attrs["activation_alpha"] = [slope for a in own if a == "hard_sigmoid"] * 2
        attrs["activation_beta"] = [0.5 for a in own if a == "hard_sigmoid"] * 2
    if s.cell == "GRU":
        attrs["linear_before_reset"] = 1 if s.reset_after else 0
    return attrs


_MAP = re.compile(r"^(?P<module>.+)\.l(?P<k>\d+)$")


def place(layers: Sequence[Layer], maps: Sequence[str], layout: str) -> list[Placed]:
    """Where each layer's tensors go; ``maps`` (``LAYER=MODULE.lK``) stack layers into one
    multi-layer PyTorch module, which must then be loadable as one ``nn.LSTM/GRU/RNN``."""
    if maps and layout != "pytorch":
        raise UsageError("--map LAYER=MODULE.lK applies to --layout pytorch only")
    mapped: dict[int, tuple[str, int]] = {}
    for text in maps:
        left, eq, right = text.partition("=")
        m = _MAP.match(right.strip())
        if not eq or m is None or not left.strip():
            raise UsageError(f"--map '{text}': expected LAYER=MODULE.lK, e.g. enc_2=lstm.l1")
        layer = find_layer(layers, left.strip())
        if layer is None:
            names = ", ".join(x.name for x in layers) or "none"
            raise UsageError(f"--map '{text}': no selected layer '{left.strip()}' ({names})")
        if id(layer) in mapped:
            raise UsageError(f"--map '{text}': layer '{layer.name}' is mapped twice")
        mapped[id(layer)] = (m["module"], int(m["k"]))
    placed = [Placed(x, *mapped.get(id(x), (x.name, 0))) for x in layers]
    _check_modules(placed, maps)
    return placed


def _check_modules(placed: list[Placed], maps: Sequence[str]) -> None:
    modules: dict[str, list[Placed]] = {}
    for p in placed:
        modules.setdefault(p.prefix, []).append(p)
    for module, members in modules.items():
        members.sort(key=lambda p: p.index)
        indices = [p.index for p in members]
        if indices != list(range(len(members))):
            names = ", ".join(f"{p.layer.name}=l{p.index}" for p in members)
            raise UsageError(
                f"module '{module}' needs layers l0..l{len(members) - 1}, each once ({names})"
            )
        first = members[0].layer.forward
        for p in members[1:]:
            s = p.layer.forward
            if (s.cell, s.units, s.use_bias) != (first.cell, first.units, first.use_bias):
                raise InputError(
                    f"module '{module}': {p.layer.name} ({s.cell}, {s.units} units, use_bias="
                    f"{s.use_bias}) cannot stack on {members[0].layer.name} ({first.cell}, "
                    f"{first.units} units, use_bias={first.use_bias}) in one PyTorch module"
                )
            kernel = p.layer.weight("forward", "kernel")
            if kernel is not None and kernel.shape[0] != 2 * s.units:
                raise InputError(
                    f"module '{module}': {p.layer.name} takes {kernel.shape[0]} inputs; layer "
                    f"l{p.index} of a bidirectional module takes {2 * s.units}"
                )


def tensors(p: Placed, layout: str, arrays: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The named tensors of one placed layer; ``arrays`` its Keras weights by direction, role."""
    s = p.layer.forward
    cell, units = s.cell, s.units
    out: dict[str, np.ndarray] = {}
    if layout == "keras":
        for direction, roles in arrays.items():
            for role, values in roles.items():
                out[f"{p.prefix}/{direction}/{role}"] = values
        return out
    per: dict[str, dict[str, np.ndarray]] = {}
    for direction, roles in arrays.items():
        own = per.setdefault(direction, {})
        own["ih"] = convention.kernel_from_keras(layout, cell, roles["kernel"], units)
        own["hh"] = convention.kernel_from_keras(layout, cell, roles["recurrent_kernel"], units)
        if "bias" in roles:
            own["b_ih"], own["b_hh"] = convention.bias_from_keras(
                layout, cell, roles["bias"], units
            )
    if layout == "pytorch":
        for direction, own in per.items():
            sfx = f"_l{p.index}" + ("_reverse" if direction == "backward" else "")
            out[f"{p.prefix}.weight_ih{sfx}"] = own["ih"]
            out[f"{p.prefix}.weight_hh{sfx}"] = own["hh"]
            if "b_ih" in own:
                out[f"{p.prefix}.bias_ih{sfx}"] = own["b_ih"]
                out[f"{p.prefix}.bias_hh{sfx}"] = own["b_hh"]
        return out
    ways = [per["forward"], per["backward"]]
    out[f"{p.prefix}.W"] = np.stack([w["ih"] for w in ways])
    out[f"{p.prefix}.R"] = np.stack([w["hh"] for w in ways])
    if "b_ih" in ways[0]:
        out[f"{p.prefix}.B"] = np.stack([np.concatenate([w["b_ih"], w["b_hh"]]) for w in ways])
    return out


def recorded(p: Placed, layout: str, keras_major: int) -> dict[str, Any]:
    """What the file records about the layer beside its tensors (safetensors metadata)."""
    layer = p.layer
    if layout == "onnx":
        return onnx_attributes(layer, keras_major)
    doc: dict[str, Any] = {"cell": layer.cell, "units": layer.units}
    if layout == "pytorch":
        doc.update(module=p.prefix, index=p.index)
        return doc
    doc["merge_mode"] = layer.merge_mode
    for direction, s in layer.settings.items():
        doc[direction] = {
            "activation": s.activation,
            "recurrent_activation": s.recurrent_activation,
        }
    return doc
