"""``inspect``: every Bidirectional layer of a file, each weight's role, shape and statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bilstm_cli.cells import blocks as gate_layout
from bilstm_cli.formats.reader import open_weights, read_model, read_weight
from bilstm_cli.model import Layer, Model, Weight
from bilstm_cli.ops.select import select_layers
from bilstm_cli.stats import gate_stats, weight_stats


@dataclass
class WeightReport:
    ref: Weight
    stats: dict[str, Any]
    gates: list[dict[str, Any]] | None = None


@dataclass
class LayerReport:
    layer: Layer
    weights: list[WeightReport] = field(default_factory=list)

    @property
    def gate_names(self) -> tuple[str, ...]:
        return gate_layout.CELL_GATES.get(self.layer.cell, ())


@dataclass
class InspectResult:
    model: Model
    layers: list[LayerReport]


def inspect(path: str, layer_globs: Sequence[str] = (), with_gates: bool = False) -> InspectResult:
    """Read a model file and compute statistics for the selected layers' weights."""
    model = read_model(path)
    layers = select_layers(model.layers, layer_globs, path)
    reports = [LayerReport(layer) for layer in layers]
    if reports:
        with open_weights(path) as f:
            for report in reports:
                layer = report.layer
                for ref in layer.weights:
                    values = read_weight(f, ref, path)
                    gates = None
                    if with_gates and layer.supported:
                        gates = gate_stats(values, layer.cell, ref.role, layer.units)
                    report.weights.append(WeightReport(ref, weight_stats(values), gates))
                    del values  # one dataset in memory at a time
    return InspectResult(model, reports)
