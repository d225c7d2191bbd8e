"""The format-independent picture of a model file: :class:`Model`, :class:`Layer`,
:class:`Direction` and :class:`Weight`.

Format readers build this picture from a file's own configuration and layout, without reading
weight values; the operations work on it and never see how a format stores things. A weight's
values are read on demand through the reader its model was opened with::

    import bilstm_cli as bl

    with bl.open_model("fixtures/k2_seq_lstm.h5") as model:
        for layer in model.layers:
            for w in layer.weights:
                print(layer.name, w.direction, w.role, w.shape, w.read().mean())
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

DIRECTIONS = ("forward", "backward")


class WeightReader(Protocol):
    """What a format gives for reading values: one weight at a time, by its location."""

    def read(self, location: str) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConvSettings:
    """The convolution of a ConvLSTM layer, as its config describes it (``None`` where a
    weights-only file cannot say; the kernel size is always known from the weights' shapes)."""

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str | None = None
    dilation_rate: tuple[int, ...] | None = None
    data_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The convolution keys of a ConvLSTM layer's ``settings`` in ``inspect --json``."""
        return {
            "kernel_size": list(self.kernel_size),
            "strides": None if self.strides is None else list(self.strides),
            "padding": self.padding,
            "dilation_rate": None if self.dilation_rate is None else list(self.dilation_rate),
            "data_format": self.data_format,
        }


@dataclass(frozen=True)
class CellSettings:
    """One direction's wrapped RNN layer, as its config describes it.

    Fields are ``None`` when the file carries no config (weights-only files):
    the tool then knows only what the shapes and group names tell.

    >>> with bl.open_model("fixtures/k2_seq_lstm.h5") as model:
    ...     s = model.layers[0].settings["backward"]
    >>> (s.cell, s.units, s.activation, s.recurrent_activation, s.go_backwards)
    ('LSTM', 3, 'tanh', 'sigmoid', True)
    """

    cell: str
    units: int
    activation: str | None = "tanh"
    recurrent_activation: str | None = "sigmoid"
    use_bias: bool = True
    reset_after: bool | None = None
    go_backwards: bool = False
    name: str | None = None
    #: A ConvLSTM layer's convolution (``units`` are its filters); None for every other cell.
    conv: ConvSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``settings`` entry of ``inspect --json`` (a ConvLSTM adds its convolution)."""
        doc: dict[str, Any] = {
            "cell": self.cell,
            "units": self.units,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "reset_after": self.reset_after,
            "go_backwards": self.go_backwards,
        }
        if self.conv is not None:
            doc.update(self.conv.to_dict())
        return doc


@dataclass(frozen=True)
class Weight:
    """One weight of a layer: its direction, role (``kernel``, ``recurrent_kernel``,
    ``bias``), shape and dtype, and where the file keeps it (``location``).

    ``read()`` returns its values as stored, in the Keras convention, while the model it
    came from is open::

        with bl.open_model("fixtures/k2_seq_lstm.h5") as model:
            kernel = model.layers[0].weights[0].read()
    """

    direction: str
    role: str
    location: str
    shape: tuple[int, ...]
    dtype: str
    reader: WeightReader | None = field(default=None, compare=False, repr=False)

    def read(self) -> np.ndarray:
        """The weight's values (a new array); the model must still be open."""
        from bilstm_cli.errors import UsageError

        if self.reader is None:
            raise UsageError(
                f"weight '{self.location}' was not read through an open model "
                "(use bl.open_model(path) as a context manager)"
            )
        return self.reader.read(self.location)


@dataclass(frozen=True)
class Direction:
    """One direction of a Bidirectional layer: its cell settings and its weights.

    >>> with bl.open_model("fixtures/k2_seq_lstm.h5") as model:
    ...     forward, backward = model.layers[0].directions
    >>> backward.name, [w.role for w in backward.weights]
    ('backward', ['kernel', 'recurrent_kernel', 'bias'])
    """

    name: str
    settings: CellSettings
    weights: tuple[Weight, ...]


@dataclass(frozen=True)
class StackPlace:
    """Where a layer sits when it is one cell of a ``StackedRNNCells`` inside a Bidirectional:
    ``name`` is the whole Bidirectional's, the cell is number ``index`` of ``size``, and the
    cells run in that order within each time step (each one's output feeds the next)."""

    name: str
    index: int
    size: int


@dataclass
class Layer:
    """One Bidirectional layer and where its weights live.

    A Bidirectional around ``RNN(StackedRNNCells([...]))`` is listed as one layer per cell,
    ``bistack/0``, ``bistack/1``, …, each with its :class:`StackPlace` in ``stack``.

    ``settings`` maps ``"forward"`` and ``"backward"`` to each direction's
    :class:`CellSettings`; ``directions`` gives both as :class:`Direction` objects.

    >>> with bl.open_model("fixtures/k3_functional_mixed.keras") as model:
    ...     [(x.name, x.cell, x.units, x.merge_mode) for x in model.layers]
    [('bi_lstm_ave', 'LSTM', 3, 'ave'), ('bi_gru_mul', 'GRU', 3, 'mul'),
     ('my_bi', 'SimpleRNN', 3, None)]
    """

    name: str
    group: str
    merge_mode: str | None
    forward: CellSettings
    backward: CellSettings
    weights: list[Weight] = field(default_factory=list)
    config_known: bool = True
    notes: list[str] = field(default_factory=list)
    #: Whether both directions wrap a cell family the tool can change (the reader says).
    supported: bool = False
    #: Other names ``--layer`` and ``--map`` know the layer by: the wrappers around it
    #: (``td`` for ``td/bi``), the whole Bidirectional of a stacked cell (``bistack``).
    aliases: tuple[str, ...] = ()
    #: Set when the layer is one cell of a stack (see :class:`StackPlace`).
    stack: StackPlace | None = None

    @property
    def cell(self) -> str:
        return self.forward.cell

    @property
    def units(self) -> int:
        return self.forward.units

    @property
    def settings(self) -> dict[str, CellSettings]:
        return {"forward": self.forward, "backward": self.backward}

    @property
    def directions(self) -> tuple[Direction, Direction]:
        return (
            Direction("forward", self.forward, tuple(self.direction_weights("forward"))),
            Direction("backward", self.backward, tuple(self.direction_weights("backward"))),
        )

    def direction_weights(self, direction: str) -> list[Weight]:
        return [w for w in self.weights if w.direction == direction]

    def weight(self, direction: str, role: str) -> Weight | None:
        for w in self.weights:
            if w.direction == direction and w.role == role:
                return w
        return None


@dataclass
class PlainLayer:
    """A plain (not Bidirectional) recurrent layer: a possible donor for one direction.

    >>> with bl.open_model("fixtures/k3_plain_lstm_lm.keras") as model:
    ...     [(p.name, p.settings.cell, p.settings.units) for p in model.plain_layers]
    [('lm', 'LSTM', 3), ('lm_gru', 'GRU', 3)]
    """

    name: str
    group: str
    settings: CellSettings
    weights: list[Weight] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def weight(self, role: str) -> Weight | None:
        for w in self.weights:
            if w.role == role:
                return w
        return None


@dataclass
class Model:
    """A model file as the tool sees it: its layout and its Bidirectional layers.

    Returned by :func:`bilstm_cli.open_model`, a model is a read-only context manager: inside
    the ``with`` block every :meth:`Weight.read` reads from the file, which is closed on
    leaving it.

    >>> with bl.open_model("fixtures/k2_trained_adam.h5") as model:
    ...     (model.format, model.config_known, model.optimizer_groups, len(model.layers))
    ('h5', True, ['optimizer_weights'], 1)
    """

    path: str
    format: str  # "keras", "keras-dir", "h5", "weights.h5", "weights.json", …
    keras_version: str | None
    layers: list[Layer]
    config_known: bool
    weights_member: str | None = None  # the HDF5 member inside a .keras archive
    optimizer_groups: list[str] = field(default_factory=list)
    #: Shapes of the optimizer's saved slots: a changed weight of one of them has stale state.
    optimizer_shapes: frozenset[tuple[int, ...]] = frozenset()
    notes: list[str] = field(default_factory=list)
    plain_layers: list[PlainLayer] = field(default_factory=list)
    reader: WeightReader | None = field(default=None, compare=False, repr=False)

    def bind(self, reader: WeightReader) -> None:
        """Let every weight read its values through ``reader`` (an open file)."""
        self.reader = reader
        for layer in self.layers:
            layer.weights = [replace(w, reader=reader) for w in layer.weights]
        for plain in self.plain_layers:
            plain.weights = [replace(w, reader=reader) for w in plain.weights]

    def close(self) -> None:
        """Close the file; weights can no longer be read."""
        if self.reader is not None:
            reader, self.reader = self.reader, None
            reader.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
