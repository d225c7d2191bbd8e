"""The cell registry: what the tool knows about each recurrent cell family, in one place.

A family (:class:`Cell`) is described once, in its own module (``lstm.py``, ``gru.py``,
``simple_rnn.py``): its gates, the shapes Keras gives its weights, the group name Keras 3 tracks
its cell under, and the arithmetic of one time step. Layer classes that store a family's weights
in another layout (CuDNNLSTM, CuDNNGRU) are :class:`StoredVariant` entries pointing at their
family. ``cells/__init__.py`` registers every family and variant; everything else asks the
registry through the functions below instead of keeping its own table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from bilstm_cli.errors import InputError
from bilstm_cli.model import CellSettings

Activation = Callable[[np.ndarray], np.ndarray]
#: The tensors a cell carries from one step to the next; the first is the step's output ``h``.
State = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class StepParams:
    """Everything one time step needs besides its input projection and the previous state."""

    recurrent_kernel: np.ndarray
    #: The second bias row of a two-row bias (GRU with reset_after), else None: the first row
    #: and a one-row bias are already added to the input projection.
    recurrent_bias: np.ndarray | None
    units: int
    reset_after: bool
    activation: Activation
    recurrent_activation: Activation


#: ``step(p, state, params)``: the next state from the biased input projection ``p`` of one
#: step (batch, blocks * units) and the previous state, in float64.
Step = Callable[[np.ndarray, State, StepParams], State]


@dataclass(frozen=True)
class Cell:
    """One recurrent cell family as Keras stores and runs it."""

    #: The Keras layer class name (``"LSTM"``).
    name: str
    #: Gate letters in the order of their blocks along the last axis of every weight.
    gates: tuple[str, ...]
    #: Human names of ``gates``, in the same order, for messages and descriptions.
    gate_names: tuple[str, ...]
    #: The weight group Keras 3 tracks the layer's cell under (``"lstm_cell"``).
    tracked_group: str
    #: The gate whose bias decides how long the state is kept (None: no such gate).
    forget_gate: str | None
    #: How many state tensors ``step`` carries (LSTM: h and c).
    states: int
    #: Whether the family has GRU's ``reset_after`` setting (two bias rows when it is True).
    has_reset_after: bool
    step: Step
    #: Spatial dimensions of a convolutional cell's kernels (ConvLSTM2D: 2); 0 for the others,
    #: whose kernels are matrices.
    spatial_dims: int = 0

    def __post_init__(self) -> None:
        if len(self.gate_names) != len(self.gates):
            raise ValueError(f"{self.name}: one human name per gate is needed")

    @property
    def blocks(self) -> int:
        """Number of blocks along the last axis of every weight (a gateless cell has one)."""
        return max(1, len(self.gates))

    @property
    def kernel_rank(self) -> int:
        """Number of axes of the kernel and recurrent kernel (2 for a matrix)."""
        return 2 + self.spatial_dims

    def shape(
        self,
        role: str,
        units: int,
        input_dim: int,
        reset_after: bool = False,
        kernel_size: tuple[int, ...] = (),
    ) -> tuple[int, ...]:
        """The shape Keras gives the weight ``role`` of this cell.

        ``reset_after`` only matters for a family that has the setting (GRU keeps a second bias
        row, for the recurrent projection, when it is True); ``kernel_size`` only for a
        convolutional one, whose kernels put it before the (input, width) axes.
        """
        width = self.blocks * int(units)
        window: tuple[int, ...] = ()
        if self.spatial_dims and role in ("kernel", "recurrent_kernel"):
            window = tuple(int(k) for k in kernel_size)
            if len(window) != self.spatial_dims:
                raise InputError(
                    f"a {self.name} needs a kernel_size of {self.spatial_dims} "
                    f"dimension(s), not {tuple(kernel_size)}"
                )
        if role == "kernel":
            return (*window, int(input_dim), width)
        if role == "recurrent_kernel":
            return (*window, int(units), width)
        if role == "bias":
            return (2, width) if self.has_reset_after and reset_after else (width,)
        raise InputError(f"a {self.name} has no weight called {role}")


#: ``convert(stored_class, role, values, units)``: one stored weight in its family's layout.
Converter = Callable[[str, str, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class StoredVariant:
    """A layer class that stores a family's weights in its own layout and is read as that
    family with fixed settings (CuDNNLSTM is an LSTM with tanh / sigmoid)."""

    name: str
    cell: Cell
    activation: str
    recurrent_activation: str
    use_bias: bool
    #: ``reset_after`` of the family layer it becomes (None for a family without the setting).
    reset_after: bool | None
    convert: Converter

    def shape(self, role: str, units: int, input_dim: int) -> tuple[int, ...]:
        """The stored shape of ``role``: the family's, except the bias, which holds the input
        and the recurrent biases one after the other."""
        if role == "bias":
            return (2 * self.cell.blocks * int(units),)
        return self.cell.shape(role, units, input_dim)

    def to_keras(self, role: str, values: np.ndarray, units: int) -> np.ndarray:
        """One stored weight in the layout of the family layer."""
        return self.convert(self.name, role, values, units)


# The registry, filled once by cells/__init__.py; registration order is the order of known()
# and of the cells listed in error messages.
_CELLS: dict[str, Cell] = {}
_VARIANTS: dict[str, StoredVariant] = {}


def register(cell: Cell) -> Cell:
    """Add a cell family to the registry (once per name) and return it."""
    if cell.name in _CELLS or cell.name in _VARIANTS:
        raise ValueError(f"cell {cell.name!r} is already registered")
    _CELLS[cell.name] = cell
    return cell


def register_variant(variant: StoredVariant) -> StoredVariant:
    """Add a stored variant of a registered family (once per name) and return it."""
    if variant.name in _CELLS or variant.name in _VARIANTS:
        raise ValueError(f"cell {variant.name!r} is already registered")
    if _CELLS.get(variant.cell.name) is not variant.cell:
        raise ValueError(f"{variant.name} stores {variant.cell.name}, which is not registered")
    _VARIANTS[variant.name] = variant
    return variant


def get(name: str) -> Cell:
    """The family called ``name``; :class:`InputError` naming the known ones otherwise."""
    cell = _CELLS.get(name)
    if cell is None:
        raise InputError(
            f"unsupported recurrent cell {name!r}; expected one of {', '.join(_CELLS)}"
        )
    return cell


def known() -> tuple[str, ...]:
    """The names of the cell families, in registration order: the cells the tool can write."""
    return tuple(_CELLS)


def variant(name: str) -> StoredVariant | None:
    """The stored variant called ``name``, or None when ``name`` is not one."""
    return _VARIANTS.get(name)


def layer_classes() -> tuple[str, ...]:
    """Every layer class whose weights the tool reads: the families, then the stored variants."""
    return (*_CELLS, *_VARIANTS)


def layer_block_count(class_name: str) -> int:
    """Blocks along the last axis of a layer class's weights, stored variants included."""
    stored = _VARIANTS.get(class_name)
    return (stored.cell if stored else get(class_name)).blocks


def layer_class_for_blocks(blocks: int, stored: bool = False) -> str | None:
    """The family (or, with ``stored``, the stored variant) whose weights hold ``blocks`` gate
    blocks along their last axis: what a weights-only file's shapes say the cell is."""
    if stored:
        return next((v.name for v in _VARIANTS.values() if v.cell.blocks == blocks), None)
    return next((c.name for c in _CELLS.values() if c.blocks == blocks), None)


def supported(*settings: CellSettings) -> bool:
    """Whether every one of ``settings`` is a cell family the tool can change."""
    return all(s.cell in _CELLS for s in settings)


def for_tracked_group(name: str) -> Cell | None:
    """The family whose cell Keras 3 tracks under the group ``name`` (None for any other).

    The ConvLSTM layers share one group name; the first of them stands for all (their rank
    comes from the weights' shapes, see :func:`conv_class_for_rank`)."""
    return next((c for c in _CELLS.values() if c.tracked_group == name), None)


def conv_class_for_rank(spatial_dims: int) -> str | None:
    """The convolutional family with ``spatial_dims`` spatial axes (None if none has)."""
    return next((c.name for c in _CELLS.values() if c.spatial_dims == spatial_dims > 0), None)


def kernel_rank(settings: CellSettings) -> int:
    """Axes of the kernels of a layer with ``settings`` (2 unless its cell convolves)."""
    stored = _VARIANTS.get(settings.cell)
    return (stored.cell if stored else get(settings.cell)).kernel_rank


def expected_shape(settings: CellSettings, role: str, input_dim: int) -> tuple[int, ...]:
    """The shape a layer with ``settings`` stores its weight ``role`` in (a stored variant's own
    layout for its class; ``reset_after=None`` counts as False)."""
    stored = _VARIANTS.get(settings.cell)
    if stored is not None:
        return stored.shape(role, settings.units, input_dim)
    window = settings.conv.kernel_size if settings.conv is not None else ()
    return get(settings.cell).shape(
        role, settings.units, input_dim, bool(settings.reset_after), window
    )


def keras_settings(settings: CellSettings) -> CellSettings:
    """The settings of the family layer a stored variant is read as (others unchanged)."""
    stored = _VARIANTS.get(settings.cell)
    if stored is None:
        return settings
    return replace(
        settings,
        cell=stored.cell.name,
        activation=stored.activation,
        recurrent_activation=stored.recurrent_activation,
        use_bias=stored.use_bias,
        reset_after=stored.reset_after,
    )


__all__ = [
    "Activation",
    "Cell",
    "Converter",
    "State",
    "Step",
    "StepParams",
    "StoredVariant",
    "conv_class_for_rank",
    "expected_shape",
    "for_tracked_group",
    "get",
    "keras_settings",
    "kernel_rank",
    "known",
    "layer_block_count",
    "layer_classes",
    "register",
    "register_variant",
    "variant",
]
