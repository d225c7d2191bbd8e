"""Gate blocks of Keras RNN weights, for every registered cell family.

Keras stores every gate of a cell side by side along the LAST axis of each weight, in the order of
the family's ``gates`` (see the family modules for each layout). A family without gates
(SimpleRNN) is one block covering the whole last axis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bilstm_cli.cells.base import get, known
from bilstm_cli.errors import InputError, UsageError

ROLES: tuple[str, ...] = ("kernel", "recurrent_kernel", "bias")

# Views of the registry as plain tables. The package registers every family before any of its
# modules other than the family modules is imported, so these are complete.
CELL_GATES: dict[str, tuple[str, ...]] = {c.name: c.gates for c in map(get, known())}
# Human names used in messages and descriptions.
GATE_NAMES: dict[str, dict[str, str]] = {
    c.name: dict(zip(c.gates, c.gate_names)) for c in map(get, known())
}


def has_lstm_gates(cell: str) -> bool:
    """Whether ``cell`` gates like an LSTM (i, f, c, o): LSTM and the ConvLSTM layers, which
    share LSTM's bias strategies (unit_forget_bias, chrono)."""
    return CELL_GATES.get(cell) == CELL_GATES["LSTM"]


def check_cell(cell: str) -> str:
    """Return ``cell`` if it is a known cell class name, else raise :class:`InputError`."""
    return get(cell).name


def block_count(cell: str) -> int:
    """Number of blocks along the last axis (SimpleRNN counts as one block)."""
    return get(cell).blocks


def last_axis_width(cell: str, units: int) -> int:
    """Expected length of the last axis of every weight of ``cell`` with ``units`` units."""
    return block_count(cell) * int(units)


def gate_slices(cell: str, units: int) -> dict[str, slice]:
    """Slices along the last axis for each gate of ``cell``, in Keras order.

    SimpleRNN has no gates and gives an empty dict.
    """
    gates = get(cell).gates
    u = int(units)
    return {g: slice(k * u, (k + 1) * u) for k, g in enumerate(gates)}


def gate_blocks(cell: str, units: int) -> list[tuple[str | None, slice]]:
    """Every block along the last axis as ``(gate, slice)``.

    Unlike :func:`gate_slices`, SimpleRNN yields one block ``(None, slice(0, units))`` so code
    that walks blocks (per-block orthogonality, statistics) treats every cell alike.
    """
    slices = gate_slices(cell, units)
    if not slices:
        return [(None, slice(0, int(units)))]
    return list(slices.items())


def _check_width(array: np.ndarray, cell: str, units: int) -> None:
    width = last_axis_width(cell, units)
    if array.ndim == 0 or array.shape[-1] != width:
        raise InputError(
            f"weight of shape {tuple(array.shape)} does not fit {cell} with {units} units: "
            f"expected the last axis to be {width}"
        )


def gate_block(array: np.ndarray, cell: str, units: int, gate: str) -> np.ndarray:
    """The view of ``array`` holding one gate's block (last-axis columns)."""
    _check_width(array, cell, units)
    (gate,) = parse_gates(cell, [gate])
    return array[..., gate_slices(cell, units)[gate]]


def parse_gates(cell: str, gates: str | Iterable[str]) -> tuple[str, ...]:
    """Validate gate names for ``cell``; return them deduplicated in the cell's own order.

    ``gates`` may be a comma-separated string (``"i,f"``) or an iterable of names.
    Raises :class:`UsageError` naming the cell's gates on an unknown name, on an empty list,
    or when the cell has no gates at all.
    """
    cell_gates = get(cell).gates
    if isinstance(gates, str):
        names = [g.strip() for g in gates.split(",")]
    else:
        names = [str(g).strip() for g in gates]
    names = [g for g in names if g]
    if not cell_gates:
        raise UsageError(f"{cell} has no gates; drop the [..] gate list for its weights")
    listing = f"{cell} has gates {', '.join(cell_gates)}"
    if not names:
        raise UsageError(f"empty gate list; {listing}")
    unknown = [g for g in names if g not in cell_gates]
    if unknown:
        raise UsageError(f"unknown gate {unknown[0]!r}; {listing}")
    wanted = set(names)
    return tuple(g for g in cell_gates if g in wanted)


def gate_mask(cell: str, units: int, gates: Iterable[str] | str | None) -> np.ndarray:
    """Boolean mask over the last axis that is True on the columns of ``gates``.

    ``None`` selects every column (the whole weight), which is also the only valid selection
    for SimpleRNN.
    """
    width = last_axis_width(cell, units)
    if gates is None:
        return np.ones(width, dtype=bool)
    mask = np.zeros(width, dtype=bool)
    slices = gate_slices(cell, units)
    for g in parse_gates(cell, gates):
        mask[slices[g]] = True
    return mask


def gate_columns(cell: str, units: int, gates: Iterable[str] | str | None) -> np.ndarray:
    """Integer column indices along the last axis for ``gates`` (all columns for ``None``)."""
    return np.flatnonzero(gate_mask(cell, units, gates))


def selected_blocks(
    cell: str, units: int, columns: np.ndarray | None
) -> list[tuple[str | None, slice]]:
    """The blocks fully covered by a column mask (every block when ``columns`` is None)."""
    blocks = gate_blocks(cell, units)
    if columns is None:
        return blocks
    cols = np.asarray(columns, dtype=bool)
    return [(g, s) for g, s in blocks if bool(cols[s].all())]


def covered_gates(cell: str, units: int, columns: np.ndarray) -> tuple[str, ...]:
    """The names of the gates whose blocks a column mask covers in full."""
    return tuple(g for g, _ in selected_blocks(cell, units, columns) if g is not None)


@dataclass(frozen=True)
class Target:
    """Which part of a layer's weights an option applies to.

    ``role`` None means every weight; ``gates`` None means the whole weight (all columns).
    Gate names are checked against a cell only when the target meets a layer
    (:func:`bilstm_cli.cells.blocks.parse_gates`).
    """

    role: str | None
    gates: tuple[str, ...] | None

    def __str__(self) -> str:
        if self.role is None:
            return "all weights"
        return self.role + (f"[{','.join(self.gates)}]" if self.gates else "")


_TARGET_RE = re.compile(r"\s*(?P<role>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(?P<gates>[^\]]*)\])?\s*")


def parse_target(text: str) -> Target:
    """Parse ``ROLE`` or ``ROLE[g1,g2]`` (``kernel``, ``recurrent_kernel`` or ``bias``)."""
    m = _TARGET_RE.fullmatch(text)
    expected = "expected kernel, recurrent_kernel or bias, optionally with gates as in bias[f]"
    if not m:
        raise UsageError(f"bad target {text.strip()!r}; {expected}")
    role = m["role"].lower()
    if role not in ROLES:
        raise UsageError(f"unknown role {m['role']!r}; {expected}")
    gates: tuple[str, ...] | None = None
    if m["gates"] is not None:
        names = [g.strip().lower() for g in m["gates"].split(",")]
        if not any(names) or not all(names):
            raise UsageError(f"bad gate list in {text.strip()!r}; expected names as in {role}[i,f]")
        gates = tuple(dict.fromkeys(names))
    return Target(role=role, gates=gates)


__all__ = [
    "CELL_GATES",
    "GATE_NAMES",
    "ROLES",
    "Target",
    "block_count",
    "check_cell",
    "covered_gates",
    "gate_block",
    "gate_blocks",
    "gate_columns",
    "gate_mask",
    "gate_slices",
    "has_lstm_gates",
    "last_axis_width",
    "parse_gates",
    "parse_target",
    "selected_blocks",
]
