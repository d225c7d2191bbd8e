"""Per-gate-block histograms of weight values, for ``--hist`` and the HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bilstm_cli import cells, formats
from bilstm_cli.cells.blocks import gate_blocks

BINS = 24


@dataclass(frozen=True)
class Histogram:
    """Counts of one gate block's finite values in ``len(counts)`` equal bins over
    [``lo``, ``hi``]; ``nonfinite`` counts the values left out."""

    layer: str
    direction: str
    role: str
    gate: str | None
    counts: tuple[int, ...]
    lo: float
    hi: float
    nonfinite: int

    def to_dict(self) -> dict[str, object]:
        return {
            "layer": self.layer,
            "direction": self.direction,
            "role": self.role,
            "gate": self.gate,
            "counts": list(self.counts),
            "min": self.lo,
            "max": self.hi,
            "nonfinite": self.nonfinite,
        }


def block_histogram(
    values: np.ndarray, bins: int = BINS
) -> tuple[tuple[int, ...], float, float, int]:
    """(counts, lo, hi, non-finite count) of an array's finite values."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(flat)
    finite = flat[ok]
    if finite.size == 0:
        return (0,) * bins, 0.0, 0.0, int(flat.size)
    lo, hi = float(finite.min()), float(finite.max())
    span = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    counts, _ = np.histogram(finite, bins=bins, range=span)
    return tuple(int(c) for c in counts), lo, hi, int(flat.size - finite.size)


def histograms(path: str, names: Sequence[str], bins: int = BINS) -> list[Histogram]:
    """One histogram per direction, role and gate block of the layers called ``names`` in
    the file at ``path``."""
    out: list[Histogram] = []
    with formats.open_model(path) as model:
        chosen = [layer for layer in model.layers if layer.name in set(names)]
        for layer in chosen:
            for w in layer.weights:
                settings = cells.keras_settings(layer.settings[w.direction])
                values = np.asarray(w.read())
                stored = cells.variant(layer.settings[w.direction].cell)
                if stored is not None:
                    values = stored.to_keras(w.role, values, settings.units)
                if values.dtype.kind not in "fiu" or settings.cell not in cells.known():
                    continue
                blocks = gate_blocks(settings.cell, settings.units)
                if values.ndim == 0 or values.shape[-1] != blocks[-1][1].stop:
                    blocks = [(None, slice(0, values.shape[-1] if values.ndim else 1))]
                for gate, sl in blocks:
                    counts, lo, hi, bad = block_histogram(values[..., sl], bins)
                    out.append(
                        Histogram(layer.name, w.direction, w.role, gate, counts, lo, hi, bad)
                    )
    return out


__all__ = ["BINS", "Histogram", "block_histogram", "histograms"]
