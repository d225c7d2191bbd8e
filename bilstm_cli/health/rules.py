"""The checks of one direction of one layer, on its arrays (Keras convention, gate blocks
along the last axis).

:class:`Judge` collects findings, skips and per-block figures for one file; each ``check_*``
function looks at one thing and reports through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.cells import get as get_cell
from bilstm_cli.cells.blocks import gate_blocks
from bilstm_cli.findings import Finding, Settings, Skipped
from bilstm_cli.health.linalg import spectral_radius, top_singular

#: Activations whose saturation and time scales the checks understand.
SIGMOIDS = ("sigmoid", "hard_sigmoid")
SQUASHING = (*SIGMOIDS, "tanh")


@dataclass
class Judge:
    """Where findings, skips and figures of one file go."""

    settings: Settings
    keras_major: int = 3
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def find(
        self,
        code: str,
        place: tuple[str, str | None, str | None, str | None],
        value: float | None,
        threshold: float | None,
        detail: str,
    ) -> None:
        if self.settings.on(code):
            severity = self.settings.severity[code]
            self.findings.append(Finding(code, severity, *place, value, threshold, detail))

    def skip(
        self, layer: str, direction: str | None, role: str | None, check: str, why: str
    ) -> None:
        self.skipped.append(Skipped(layer, direction, role, check, why))


@dataclass
class Side:
    """One direction's weights as stored (``raw``; the Keras layout) and, for the recurrent
    kernel and the bias, in float64 (``arrays``), with its settings. Kernels, the largest
    weights, are only ever summed or compared, so they are not copied."""

    layer: str
    direction: str
    cell: str
    units: int
    activation: str | None
    recurrent_activation: str | None
    arrays: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    #: Roles whose values hold NaN or Inf (those checks that need finite values skip them).
    nonfinite: set[str] = field(default_factory=set)
    assumed_sigmoid: bool = False

    def place(
        self, role: str | None, gate: str | None = None
    ) -> tuple[str, str | None, str | None, str | None]:
        return (self.layer, self.direction, role, gate)

    def bias_row(self) -> np.ndarray | None:
        """The bias a gate sees, one value per column: a two-row GRU bias summed."""
        b = self.arrays.get("bias")
        if b is None:
            return None
        return b.sum(axis=0) if b.ndim == 2 else b


def _frac(n: int, total: int) -> float:
    return n / total if total else 0.0


def check_nonfinite(j: Judge, side: Side) -> None:
    for role, a in side.raw.items():
        bad = ~np.isfinite(a)
        if not bad.any():
            continue
        side.nonfinite.add(role)
        for gate, sl in gate_blocks(side.cell, side.units):
            count = int(np.count_nonzero(bad[..., sl]))
            if count < j.settings.get("nonfinite", "count"):
                continue
            first = np.argwhere(bad[..., sl])[0]
            first[-1] += sl.start
            nans = int(np.count_nonzero(np.isnan(a[..., sl])))
            j.find(
                "nonfinite",
                side.place(role, gate),
                count,
                j.settings.get("nonfinite", "count"),
                f"{count} non-finite value(s) ({nans} NaN), first at index "
                f"{tuple(int(i) for i in first)}",
            )


def check_recurrent(j: Judge, side: Side) -> None:
    """Per gate block of the recurrent kernel: σ_max, spectral radius, ‖QᵀQ − I‖_F."""
    r = side.arrays.get("recurrent_kernel")
    if r is None:
        return
    if r.ndim != 2:
        j.skip(
            side.layer,
            side.direction,
            "recurrent_kernel",
            "spectrum",
            f"a {r.ndim}-D convolution kernel is not a matrix: no singular values",
        )
        return
    if "recurrent_kernel" in side.nonfinite:
        j.skip(side.layer, side.direction, "recurrent_kernel", "spectrum", "holds NaN or Inf")
        return
    s = j.settings
    for gate, sl in gate_blocks(side.cell, side.units):
        block = r[:, sl]
        sigma = top_singular(block)
        radius = spectral_radius(block) if block.shape[0] == block.shape[1] else None
        gram = block.T @ block
        gram[np.diag_indices_from(gram)] -= 1.0
        where = side.place("recurrent_kernel", gate)
        j.blocks.append(
            {
                "layer": side.layer,
                "direction": side.direction,
                "role": "recurrent_kernel",
                "gate": gate,
                "max_singular": sigma,
                "spectral_radius": radius,
                "orth_error": float(np.linalg.norm(gram)),
            }
        )
        limit = s.get("recurrent.exploding", "max_singular")
        if sigma > limit:
            j.find(
                "recurrent.exploding", where, sigma, limit, f"largest singular value {sigma:.4g}"
            )
        limit = s.get("recurrent.radius", "max_radius")
        if radius is not None and radius > limit:
            j.find("recurrent.radius", where, radius, limit, f"spectral radius ≈ {radius:.4g}")
        limit = s.get("recurrent.vanishing", "min_singular")
        if sigma < limit:
            j.find(
                "recurrent.vanishing", where, sigma, limit, f"largest singular value {sigma:.4g}"
            )


def gate_probability(x: np.ndarray, activation: str, keras_major: int) -> np.ndarray:
    """The recurrent activation applied to pre-activations ``x`` (float64)."""
    if activation == "hard_sigmoid":
        if keras_major < 3:
            return np.clip(0.2 * x + 0.5, 0.0, 1.0)
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def timescales(b: np.ndarray, activation: str, keras_major: int) -> np.ndarray:
    """1 / (1 − a(b)): how many steps a unit keeps its state, from its forget (LSTM) or
    update (GRU) bias; a gate saturated at 1 is capped at 1e12 steps."""
    keep = gate_probability(b, activation, keras_major)
    out: np.ndarray = 1.0 / np.maximum(1.0 - keep, 1e-12)
    return out


def check_timescales(j: Judge, side: Side) -> None:
    gate = get_cell(side.cell).forget_gate
    if gate is None:
        return
    activation = side.recurrent_activation
    if activation not in SIGMOIDS:
        j.skip(
            side.layer,
            side.direction,
            "bias",
            "timescale",
            f"recurrent activation {activation!r}: time scales are defined for sigmoid gates",
        )
        return
    b = side.bias_row()
    if b is None:
        j.skip(side.layer, side.direction, "bias", "timescale", "no bias (use_bias=False)")
        return
    if "bias" in side.nonfinite:
        j.skip(side.layer, side.direction, "bias", "timescale", "holds NaN or Inf")
        return
    sl = dict(gate_blocks(side.cell, side.units))[gate]
    tau = timescales(b[sl], activation, j.keras_major)
    q = np.quantile(tau, [0.0, 0.5, 1.0])
    j.blocks.append(
        {
            "layer": side.layer,
            "direction": side.direction,
            "role": "bias",
            "gate": gate,
            "timescale_min": float(q[0]),
            "timescale_median": float(q[1]),
            "timescale_max": float(q[2]),
        }
    )
    s, where, n = j.settings, side.place("bias", gate), tau.size
    lo, share = s.get("timescale.short", "min_steps"), s.get("timescale.short", "fraction")
    short = int(np.count_nonzero(tau < lo))
    if short and _frac(short, n) >= share:
        j.find(
            "timescale.short",
            where,
            _frac(short, n),
            share,
            f"{short} of {n} units keep their state under {lo:g} steps (median "
            f"{q[1]:.4g}, from the bias alone)",
        )
    hi, share = s.get("timescale.long", "max_steps"), s.get("timescale.long", "fraction")
    long = int(np.count_nonzero(tau > hi))
    if long and _frac(long, n) >= share:
        j.find(
            "timescale.long",
            where,
            _frac(long, n),
            share,
            f"{long} of {n} units keep their state over {hi:g} steps (median {q[1]:.4g})",
        )


def _column_abs_sums(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(-1, a.shape[-1])
    out: np.ndarray = np.abs(flat).sum(axis=0, dtype=np.float64)
    return out


def check_saturation(j: Judge, side: Side) -> None:
    """Units whose bias outweighs the largest push inputs in [-1, 1] and the state can give."""
    b = side.bias_row()
    if b is None or side.nonfinite:
        return
    push = np.zeros_like(b)
    for role in ("kernel", "recurrent_kernel"):
        if role in side.raw:
            push = push + _column_abs_sums(side.raw[role])
    margin = np.abs(b) - push
    s = j.settings
    need, share = s.get("units.saturated", "margin"), s.get("units.saturated", "fraction")
    for gate, sl in gate_blocks(side.cell, side.units):
        if _gate_activation(side, gate) not in SQUASHING:
            continue
        stuck = int(np.count_nonzero(margin[sl] > need))
        if stuck and _frac(stuck, side.units) >= share:
            j.find(
                "units.saturated",
                side.place("bias", gate),
                _frac(stuck, side.units),
                share,
                f"{stuck} of {side.units} units: |bias| exceeds the largest input and state "
                f"push by more than {need:g}",
            )


def _gate_activation(side: Side, gate: str | None) -> str | None:
    """The activation a gate block goes through: the candidate (LSTM c, GRU h) and a
    gateless cell use ``activation``, the others ``recurrent_activation``."""
    if gate is None or gate in ("c", "h"):
        return side.activation
    return side.recurrent_activation


def check_units(j: Judge, side: Side) -> None:
    """Dead units (every incoming column zero) and unused ones (recurrent row zero)."""
    blocks = get_cell(side.cell).blocks
    alive = np.zeros(side.units, dtype=bool)
    for role in ("kernel", "recurrent_kernel"):
        a = side.raw.get(role)
        if a is None:
            continue
        cols = np.any(a.reshape(-1, a.shape[-1]) != 0, axis=0)
        alive |= cols.reshape(blocks, side.units).any(axis=0)
    dead = np.flatnonzero(~alive)
    limit = j.settings.get("units.dead", "count")
    if dead.size and dead.size >= limit:
        j.find(
            "units.dead",
            side.place(None),
            float(dead.size),
            limit,
            f"{dead.size} of {side.units} units with all-zero incoming weights: {_units(dead)}",
        )
    r = side.raw.get("recurrent_kernel")
    if r is None or r.ndim != 2:
        return
    rows = np.flatnonzero(~np.any(r != 0, axis=1))
    unused = np.setdiff1d(rows, dead)
    limit = j.settings.get("units.unused", "count")
    if unused.size and unused.size >= limit:
        j.find(
            "units.unused",
            side.place("recurrent_kernel"),
            float(unused.size),
            limit,
            f"{unused.size} of {side.units} units with an all-zero recurrent row: {_units(unused)}",
        )


def _units(indices: np.ndarray, shown: int = 8) -> str:
    head = ", ".join(str(int(i)) for i in indices[:shown])
    return f"unit {head}" + (f" and {indices.size - shown} more" if indices.size > shown else "")


def check_fresh(j: Judge, side: Side) -> None:
    """Orthogonal recurrent kernel (whole, or every gate block) and pristine biases."""
    r = side.arrays.get("recurrent_kernel")
    if r is None or r.ndim != 2 or side.nonfinite:
        return
    b = side.raw.get("bias")
    cell = get_cell(side.cell)
    if b is not None:
        pristine = np.zeros(b.shape[-1])
        if cell.name == "LSTM" and np.any(b != 0):
            pristine[dict(gate_blocks(side.cell, side.units))["f"]] = 1.0
        if not np.array_equal(np.broadcast_to(pristine, b.shape), b):
            return
    # A matrix orthogonal in float64 and rounded to the stored dtype is off by about
    # eps·√n in each Gram entry; Keras' own float32 initializer gives 1.8e-6 at 512 units.
    raw = side.raw["recurrent_kernel"]
    eps = float(np.finfo(raw.dtype).eps) if raw.dtype.kind == "f" else 0.0
    tol = max(j.settings.get("init.fresh", "orth_tol"), 8 * eps * math.sqrt(max(r.shape)))
    whole = _gram_max(r)
    per_gate = max(_gram_max(r[:, sl]) for _, sl in gate_blocks(side.cell, side.units))
    error = min(whole, per_gate)
    if error <= tol:
        how = "as a whole" if whole <= per_gate else "per gate"
        bias = "no bias" if b is None else "biases exactly zeros / unit-forget"
        j.find(
            "init.fresh",
            side.place("recurrent_kernel"),
            error,
            tol,
            f"recurrent kernel orthogonal {how} (max |QᵀQ − I| {error:.2g}), {bias}",
        )


def _gram_max(m: np.ndarray) -> float:
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    gram[np.diag_indices_from(gram)] -= 1.0
    return float(np.max(np.abs(gram))) if gram.size else math.inf


__all__ = [
    "Judge",
    "Side",
    "check_fresh",
    "check_nonfinite",
    "check_recurrent",
    "check_saturation",
    "check_timescales",
    "check_units",
    "gate_probability",
    "timescales",
]
