"""The report's figures, drawn with matplotlib (no pyplot: no global figure state) as SVG text."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bilstm_cli.cells.blocks import gate_blocks
from bilstm_cli.health.rules import Side, timescales

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"forward": "#1f77b4", "backward": "#d62728"}
ROLES = ("kernel", "recurrent_kernel", "bias")


def _svg(fig: Figure, salt: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    # Per-figure salt: the ids of clip paths differ between the figures of one page.
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def weight_histograms(sides: Sequence[Side], salt: str) -> str:
    """One panel per role (rows) and gate block (columns), both directions overlaid."""
    first = sides[0]
    blocks = gate_blocks(first.cell, first.units)
    roles = [r for r in ROLES if any(r in s.raw for s in sides)]
    fig = _figure(2.1 * len(blocks) + 0.6, 1.7 * len(roles) + 0.4)
    axes = fig.subplots(len(roles), len(blocks), squeeze=False)
    for i, role in enumerate(roles):
        for k, (gate, sl) in enumerate(blocks):
            ax = axes[i][k]
            for side in sides:
                a = side.raw.get(role)
                if a is None:
                    continue
                values = a[..., sl].astype(np.float64).ravel()
                values = values[np.isfinite(values)]
                if values.size:
                    ax.hist(
                        values,
                        bins=40,
                        histtype="step",
                        color=COLORS[side.direction],
                        label=side.direction,
                    )
            ax.set_title(f"{role} [{gate}]" if gate else role, fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    return _svg(fig, salt)


def spectra(sides: Sequence[Side], salt: str) -> str | None:
    """Singular values (descending) of each recurrent gate block, both directions."""
    usable = [
        s
        for s in sides
        if "recurrent_kernel" in s.arrays
        and s.arrays["recurrent_kernel"].ndim == 2
        and np.isfinite(s.arrays["recurrent_kernel"]).all()
    ]
    if not usable:
        return None
    blocks = gate_blocks(usable[0].cell, usable[0].units)
    fig = _figure(2.1 * len(blocks) + 0.6, 2.0)
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for k, (gate, sl) in enumerate(blocks):
        ax = axes[k]
        for side in usable:
            sv = np.linalg.svd(side.arrays["recurrent_kernel"][:, sl], compute_uv=False)
            ax.plot(
                np.arange(1, sv.size + 1),
                sv,
                marker=".",
                markersize=3,
                color=COLORS[side.direction],
                label=side.direction,
            )
        ax.axhline(1.0, color="#888888", linewidth=0.6, linestyle="--")
        ax.set_title(f"σ of recurrent [{gate}]" if gate else "σ of recurrent", fontsize=8)
        ax.set_xlabel("index", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    return _svg(fig, salt)


def timescale_plot(sides: Sequence[Side], gate: str, keras_major: int, salt: str) -> str | None:
    """Distribution of log10 time scales 1/(1 − σ(b)) of the forget (update) gate."""
    fig = _figure(4.2, 2.0)
    ax = fig.subplots()
    drawn = False
    for side in sides:
        b = side.bias_row()
        act = side.recurrent_activation
        if b is None or act not in ("sigmoid", "hard_sigmoid") or not np.isfinite(b).all():
            continue
        sl = dict(gate_blocks(side.cell, side.units))[gate]
        tau = timescales(b[sl], str(act), keras_major)
        ax.hist(
            np.log10(tau),
            bins=30,
            histtype="step",
            color=COLORS[side.direction],
            label=side.direction,
        )
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel(f"log10 steps kept, 1/(1 − σ(b_{gate}))", fontsize=7)
    ax.set_ylabel("units", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    return _svg(fig, salt)
