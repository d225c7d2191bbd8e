"""Pairing donor and target layers for a transplant, and checking that each pair fits:
cells, units, shapes and settings, from the layouts alone."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bilstm_cli import cells
from bilstm_cli.cells import cudnn
from bilstm_cli.cells.blocks import ROLES, Target, covered_gates, gate_mask, parse_target
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.model import CellSettings, Layer, Model, PlainLayer, Weight, WeightReader
from bilstm_cli.ops.select import (
    bidirectional_layers_to_change,
    directions,
    find_layer,
    layer_matches,
    select_layers,
)

if TYPE_CHECKING:
    from bilstm_cli.formats.foreign_layout import RawCell

SETTINGS_COMPARED = ("activation", "recurrent_activation", "use_bias", "reset_after")
# Settings that change what a cell computes: another framework's donor must match them.
SEMANTIC_SETTINGS = ("activation", "recurrent_activation", "reset_after")


@dataclass
class Source:
    """One donor direction (or a plain donor layer), in the Keras layout after conversion."""

    label: str
    settings: CellSettings  # cell already mapped from CuDNN to its Keras equivalent
    refs: dict[str, Weight]
    stored_cell: str
    keras_major: int
    #: Another framework's donor: its tensors as stored (None for a Keras donor).
    raw: RawCell | None = None
    #: Its settings with no Keras equivalent, each naming the setting.
    refusals: list[str] = field(default_factory=list)


@dataclass
class Pair:
    source: Source
    target: Layer
    direction: str
    whole: tuple[Layer, Layer] | None = None  # donor and target Bidirectional, both ways
    roles: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)  # roles, with [gates] where only some move
    complete: bool = True
    differences: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.source.label} → {self.target.name}/{self.direction}"


def keras_major(model: Model) -> int:
    version = model.keras_version or "3"
    return 2 if version.startswith(("1.", "2.")) else 3


def _bi_source(model: Model, layer: Layer, direction: str) -> Source:
    settings = layer.settings[direction]
    refs = {w.role: w for w in layer.weights if w.direction == direction}
    return Source(
        f"{layer.name}/{direction}",
        cells.keras_settings(settings),
        refs,
        settings.cell,
        keras_major(model),
        *_foreign(layer, direction),
    )


def _foreign(layer: Layer | PlainLayer, direction: str) -> tuple[RawCell | None, list[str]]:
    """Another framework's layer: its stored tensors for ``direction`` and its refusals."""
    # Such layers come only from reading another framework's file, which loads their module;
    # a Keras-only run never needs to load it.
    foreign = sys.modules.get("bilstm_cli.formats.foreign_layout")
    if foreign is not None and isinstance(layer, (foreign.ForeignLayer, foreign.ForeignPlainLayer)):
        raw: RawCell | None = layer.raw.get(direction)
        return raw, [str(why) for why in layer.refusals]
    return None, []


def _plain_source(model: Model, layer: PlainLayer) -> Source:
    refs = {w.role: w for w in layer.weights}
    return Source(
        layer.name,
        cells.keras_settings(layer.settings),
        refs,
        layer.settings.cell,
        keras_major(model),
        *_foreign(layer, "forward"),
    )


def _split_direction(text: str) -> tuple[str, str | None]:
    for d in ("forward", "backward"):
        if text.endswith("/" + d):
            return text[: -len(d) - 1], d
    return text, None


def _names(layers: Sequence[Any]) -> str:
    return ", ".join(x.name for x in layers) or "none"


def _pairs_from_map(donor: Model, target: Model, text: str, wanted: tuple[str, ...]) -> list[Pair]:
    src_text, eq, dst_text = text.partition("=")
    if not eq or not src_text or not dst_text:
        raise UsageError(f"--map '{text}': expected SRC[/DIR]=DST[/DIR], e.g. enc=enc_new")
    src_name, src_dir = _split_direction(src_text.strip())
    dst_name, dst_dir = _split_direction(dst_text.strip())
    dst = find_layer(target.layers, dst_name)
    if dst is None:
        raise UsageError(
            f"--map '{text}': no Bidirectional layer '{dst_name}' in {target.path} "
            f"(available: {_names(target.layers)})"
        )
    src_bi = find_layer(donor.layers, src_name)
    if src_bi is not None:
        if (src_dir is None) != (dst_dir is None):
            raise UsageError(
                f"--map '{text}': give a direction on both sides (enc/forward=dec/backward) "
                "or on neither"
            )
        if src_dir is None:
            return [Pair(_bi_source(donor, src_bi, d), dst, d, whole=(src_bi, dst)) for d in wanted]
        assert dst_dir is not None  # both sides name a direction
        return [Pair(_bi_source(donor, src_bi, src_dir), dst, dst_dir)]
    plain = find_layer(donor.plain_layers, src_name)
    if plain is None:
        raise UsageError(
            f"--map '{text}': no layer '{src_name}' in {donor.path} (Bidirectional: "
            f"{_names(donor.layers)}; plain RNN: {_names(donor.plain_layers)})"
        )
    if src_dir is not None:
        raise UsageError(f"--map '{text}': '{src_name}' is not Bidirectional; drop '/{src_dir}'")
    if dst_dir is None:
        raise UsageError(
            f"--map '{text}': a plain {plain.settings.cell} fills one direction; "
            f"write {src_name}={dst_name}/forward or {src_name}={dst_name}/backward"
        )
    return [Pair(_plain_source(donor, plain), dst, dst_dir)]


def plan_pairs(
    donor: Model,
    target: Model,
    maps: Sequence[str],
    layer_globs: Sequence[str],
    direction: str,
    by: str,
) -> list[Pair]:
    wanted = directions(direction)
    bidirectional_layers_to_change(target, (), "transplant into")
    if not donor.layers and not donor.plain_layers:
        raise InputError(f"{donor.path}: no Bidirectional or recurrent layer to take weights from")
    if maps:
        pairs = [p for text in maps for p in _pairs_from_map(donor, target, text, wanted)]
        if layer_globs:
            select_layers(target.layers, layer_globs, target.path)
            pairs = [p for p in pairs if any(layer_matches(p.target, g) for g in layer_globs)]
    else:
        targets = select_layers(target.layers, layer_globs, target.path)
        matched: list[tuple[Layer, Layer]] = []
        if by == "order":
            matched = list(zip(donor.layers, targets))
        else:
            for t in targets:
                d = find_layer(donor.layers, t.name) or find_layer(
                    donor.layers, t.name.rsplit("/", 1)[-1]
                )
                if d is not None:
                    matched.append((d, t))
        pairs = [
            Pair(_bi_source(donor, d, way), t, way, whole=(d, t))
            for d, t in matched
            for way in wanted
        ]
    if not pairs:
        raise UsageError(
            f"no layer of {target.path} ({_names(target.layers)}) has a counterpart in "
            f"{donor.path} ({_names(donor.layers)}); use --by order or --map SRC=DST"
        )
    for p in pairs:
        if not p.target.supported:
            raise InputError(
                f"{target.path}: layer '{p.target.name}' wraps {p.target.cell}; "
                f"only {', '.join(cells.known())} layers can receive weights"
            )
    return pairs


def role_targets(role_texts: Sequence[str]) -> list[Target]:
    return [parse_target(t) for t in role_texts]


def check_pair(pair: Pair, roles: list[Target], donor_path: str) -> list[tuple[str, np.ndarray]]:
    """Shapes, cells and settings of one pair; returns (role, column mask) to transplant."""
    src, tgt = pair.source.settings, pair.target.settings[pair.direction]
    where = f"{pair.source.label} ({donor_path}) → {pair.target.name}/{pair.direction}"
    if pair.source.refusals:
        raise InputError(f"{where}: {pair.source.refusals[0]}")
    if pair.source.raw is not None:
        _same_semantics(pair, where)
    if src.cell != tgt.cell:
        extra = (
            f" (converted from {pair.source.stored_cell})"
            if cudnn.is_cudnn(pair.source.stored_cell)
            else ""
        )
        raise InputError(f"{where}: a {src.cell}{extra} cannot fill a {tgt.cell}")
    if src.units != tgt.units:
        donor_rk = pair.source.refs.get("recurrent_kernel")
        target_rk = pair.target.weight(pair.direction, "recurrent_kernel")
        raise InputError(
            f"{where}: recurrent_kernel shapes differ, donor "
            f"{donor_rk.shape if donor_rk else '?'} vs target "
            f"{target_rk.shape if target_rk else '?'} ({src.units} vs {tgt.units} units)"
        )
    _check_convolutions(where, src, tgt, pair)
    out = []
    target_refs = {w.role: w for w in pair.target.weights if w.direction == pair.direction}
    for role in ROLES:
        asked = [r for r in roles if r.role in (None, role)] if roles else [Target(None, None)]
        if not asked or role not in target_refs:
            continue
        if role not in pair.source.refs:
            if roles and any(r.role == role for r in roles):
                raise InputError(f"{where}: the donor has no {role} (use_bias=False)")
            pair.differences.append(f"the donor has no {role}; the target's was kept")
            pair.complete = False
            continue
        mask = np.zeros(target_refs[role].shape[-1], dtype=bool)
        for r in asked:
            mask |= gate_mask(tgt.cell, tgt.units, r.gates)
        donor_shape = _converted_shape(pair.source, role)
        if donor_shape != target_refs[role].shape:
            raise InputError(
                f"{where}: {role} shapes differ, donor {donor_shape} vs target "
                f"{target_refs[role].shape}"
            )
        if not mask.all():
            pair.complete = False
        out.append((role, mask))
    if len(out) < len(target_refs):
        pair.complete = False
    if not out:
        raise UsageError(f"{where}: --role selects none of the weights this pair has")
    pair.roles = [r for r, _ in out]
    pair.moves = [_with_gates(tgt, role, mask) for role, mask in out]
    for key in SETTINGS_COMPARED:
        a, b = getattr(src, key), getattr(tgt, key)
        if a is None or b is None:
            continue
        if a != b:
            pair.differences.append(f"{key} {a} (donor) vs {b} (target)")
    # Moving a backward cell onto a forward one flips go_backwards by design; within the same
    # direction a difference means an explicit backward layer that reads time the other way.
    same_direction = pair.source.label.endswith("/" + pair.direction)
    if same_direction and src.go_backwards != tgt.go_backwards and src.activation is not None:
        pair.differences.append(
            f"go_backwards {src.go_backwards} (donor) vs {tgt.go_backwards} (target)"
        )
    if src.activation is None or tgt.activation is None:
        pair.differences.append("cell settings unknown (weights-only file); not compared")
    return out


def _check_convolutions(where: str, src: CellSettings, tgt: CellSettings, pair: Pair) -> None:
    """ConvLSTM kernels fit only a window of the same size; other convolution settings that
    differ change the outputs (noted, as differing activations are)."""
    if src.conv is None or tgt.conv is None:
        return
    a, b = src.conv, tgt.conv
    if a.kernel_size != b.kernel_size:
        raise InputError(
            f"{where}: kernel_size {a.kernel_size} (donor) vs {b.kernel_size} (target); "
            f"a {tgt.cell} kernel fits only a window of its own size"
        )
    for key in ("padding", "strides", "dilation_rate", "data_format"):
        x, y = getattr(a, key), getattr(b, key)
        if x is not None and y is not None and x != y:
            pair.differences.append(f"{key} {x} (donor) vs {y} (target)")


def _same_semantics(pair: Pair, where: str) -> None:
    """Another framework's cell moves only into a Keras cell that computes the same thing:
    a setting that differs (``reset_after``, an activation, Keras 2's ``hard_sigmoid``) is
    refused by name, never approximated."""
    src, tgt = pair.source.settings, pair.target.settings[pair.direction]
    framework = pair.source.raw.framework if pair.source.raw else "another framework"
    for key in SEMANTIC_SETTINGS:
        a, b = getattr(src, key), getattr(tgt, key)
        if a is None or b is None or (key == "reset_after" and src.cell != "GRU"):
            continue
        if a != b:
            raise InputError(
                f"{where}: {key}={b} in the target, but the {framework} donor computes "
                f"{key}={a}; no conversion between them exists"
            )


def _with_gates(settings: CellSettings, role: str, mask: np.ndarray) -> str:
    """``role``, or ``role[gates]`` when only some gate blocks move."""
    if mask.all():
        return role
    return f"{role}[{','.join(covered_gates(settings.cell, settings.units, mask))}]"


def _converted_shape(source: Source, role: str) -> tuple[int, ...]:
    """The donor weight's shape once in the Keras layout (a CuDNN bias changes shape)."""
    if cudnn.is_cudnn(source.stored_cell) and role == "bias":
        return cells.expected_shape(source.settings, "bias", 0)
    return source.refs[role].shape


def donor_values(reader: WeightReader, source: Source, role: str) -> np.ndarray:
    values = reader.read(source.refs[role].location)
    if cudnn.is_cudnn(source.stored_cell):
        values = cudnn.to_keras(source.stored_cell, role, values, source.settings.units)
    return values
