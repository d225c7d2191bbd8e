"""The whole-layer forward check of a Bidirectional around ``RNN(StackedRNNCells(...))``.

Each cell of a stack is a layer of its own (``bistack/0``, ``bistack/1``, …) and each moved
cell is checked on its own, like any other; but the layer's output is the last cell's, after
the cells ran in sequence within every time step. When every cell of a stack moved, in both
directions, from a donor stack of the same cells, the two stacks run whole on one probe batch
(:mod:`bilstm_cli.cells.stacked`) and must agree; when only some moved, the whole-layer check
does not apply and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilstm_cli.cells import conv_forward as conv_reference
from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.stacked import StackCell, bidirectional_stacked_forward
from bilstm_cli.errors import InputError
from bilstm_cli.model import CellSettings, Layer, WeightReader
from bilstm_cli.ops.pairs import Pair, donor_values
from bilstm_cli.results import Check

NAME = "Bidirectional forward pass"


def cell_config(settings: CellSettings, major: int, go_backwards: bool) -> reference.CellConfig:
    """The reference's settings for one cell of ``settings``."""
    if settings.conv is not None:
        return conv_reference.config_for(settings, major, go_backwards)
    return reference.CellConfig(
        cell=settings.cell,
        units=settings.units,
        activation=settings.activation,
        recurrent_activation=settings.recurrent_activation,
        use_bias=settings.use_bias,
        reset_after=bool(settings.reset_after),
        go_backwards=go_backwards,
        keras_major=major,
    )


def stack_name(layer: Layer) -> str:
    return layer.stack.name if layer.stack is not None else layer.name


@dataclass
class StackProbe:
    """A donor stack and the written one, run whole on the same probe batch."""

    label: str
    pair: Pair  # the whole move: complete, and its differences, say whether outputs must agree
    moved: list[Pair]  # every cell, both directions
    targets: list[Layer]  # the written stack's cells, in order
    merge_mode: str | None
    major: int
    name: str = NAME

    def outputs(self, donor: WeightReader, written: WeightReader) -> tuple[Any, Any]:
        """The donor's and the written layer's outputs on the probe batch."""
        first = self.targets[0].weight("forward", "kernel")
        assert first is not None
        x = reference.probe_batch(first.shape[0], seed=2)
        donor_cells: dict[str, list[StackCell]] = {"forward": [], "backward": []}
        written_cells: dict[str, list[StackCell]] = {"forward": [], "backward": []}
        for direction in ("forward", "backward"):
            for layer in self.targets:
                p = next(q for q in self.moved if q.target is layer and q.direction == direction)
                src = p.source.settings
                values = [
                    donor_values(donor, p.source, r) if r in p.source.refs else None
                    for r in ("kernel", "recurrent_kernel", "bias")
                ]
                donor_cells[direction].append(
                    (_weights(values), cell_config(src, p.source.keras_major, src.go_backwards))
                )
                tgt = layer.settings[direction]
                refs = {w.role: w for w in layer.direction_weights(direction)}
                values = [
                    written.read(refs[r].location) if r in refs else None
                    for r in ("kernel", "recurrent_kernel", "bias")
                ]
                written_cells[direction].append(
                    (_weights(values), cell_config(tgt, self.major, tgt.go_backwards))
                )
        return tuple(
            bidirectional_stacked_forward(x, cells["forward"], cells["backward"], self.merge_mode)
            for cells in (donor_cells, written_cells)
        )  # type: ignore[return-value]


def _weights(values: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    kernel, rk, bias = values
    if kernel is None or rk is None:
        raise InputError("a stacked cell lacks its kernel or recurrent kernel")
    return kernel, rk, bias


def _unknown_activation(settings: Sequence[CellSettings], major: int) -> str | None:
    for s in settings:
        for name in (s.activation, s.recurrent_activation):
            if name is None:
                continue
            try:
                reference.get_activation(name, major)
            except InputError:
                return f"activation '{name}' of {s.name or s.cell} is not one the reference knows"
    return None


def stack_probes(pairs: list[Pair], major: int) -> list[StackProbe | Check]:
    """One whole-layer check (or the reason it does not apply) per target stack moved into."""
    groups: dict[tuple[str, str], list[Pair]] = {}
    for p in pairs:
        if p.target.stack is not None:
            donor = p.whole[0] if p.whole else None
            key = (stack_name(donor) if donor else p.source.label, stack_name(p.target))
            groups.setdefault(key, []).append(p)
    out: list[StackProbe | Check] = []
    for (d_name, t_name), moved in groups.items():
        label = f"{d_name} → {t_name}"
        why = _why_not(moved)
        if why is None:
            settings = [p.source.settings for p in moved] + [
                p.target.settings[p.direction] for p in moved
            ]
            unknown = _unknown_activation(settings, major)
            if unknown:
                out.append(Check.skipped(label, NAME, unknown))
                continue
            size = moved[0].target.stack.size  # type: ignore[union-attr]
            targets = sorted({id(p.target): p.target for p in moved}.values(), key=_index)
            whole = Pair(moved[0].source, targets[0], "both")
            whole.complete = all(p.complete for p in moved) and len(targets) == size
            whole.differences = [d for p in moved for d in p.differences]
            merge = moved[0].whole[1].merge_mode  # type: ignore[index]
            out.append(StackProbe(label, whole, moved, targets, merge, major))
        else:
            out.append(Check.skipped(label, NAME, why, applies=False))
    return out


def _index(layer: Layer) -> int:
    return layer.stack.index if layer.stack is not None else 0


def _why_not(moved: list[Pair]) -> str | None:
    """Why a stack's whole-layer check does not apply to these moves (None: it does)."""
    target = moved[0].target.stack
    assert target is not None
    if any(p.whole is None for p in moved):
        return "cells moved one direction at a time; each moved cell was run on its own"
    donors = [p.whole[0] if p.whole else None for p in moved]
    if any(d is None or d.stack is None for d in donors):
        return "the donor is not a stack of cells; each moved cell was run on its own"
    if any(d.stack.size != target.size for d in donors if d and d.stack):
        return "the donor stack has another number of cells; each moved cell was run on its own"
    if any(d.stack.index != p.target.stack.index for d, p in zip(donors, moved) if d and d.stack):  # type: ignore[union-attr]
        return "cells move to other places in the stack; each moved cell was run on its own"
    if any(p.source.settings.activation is None for p in moved) or any(
        p.target.settings[p.direction].activation is None for p in moved
    ):
        return "a weights-only file holds no cell settings (activations) to run the stack with"
    done = {(p.target.stack.index, p.direction) for p in moved}  # type: ignore[union-attr]
    if len(done) != 2 * target.size:
        cells = sorted({k for k, _ in done})
        return (
            f"only cell(s) {', '.join(map(str, cells))} of {target.size} moved, or one "
            "direction; each moved cell was run on its own"
        )
    merges = {p.whole[0].merge_mode for p in moved if p.whole} | {
        p.target.merge_mode for p in moved
    }
    if len(merges) != 1:
        return "the donor and target merge the directions differently"
    return None
