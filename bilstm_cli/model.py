"""What the format layer finds in a model file: plain data, no file handles."""

from __future__ import annotations

from dataclasses import dataclass, field

SUPPORTED_CELLS = ("LSTM", "GRU", "SimpleRNN")


@dataclass(frozen=True)
class CellSettings:
    """One direction's wrapped RNN layer, as its config describes it.

    Fields are ``None`` when the file carries no config (weights-only files):
    the tool then knows only what the shapes and group names tell.
    """

    cell: str
    units: int
    activation: str | None = "tanh"
    recurrent_activation: str | None = "sigmoid"
    use_bias: bool = True
    reset_after: bool | None = None
    go_backwards: bool = False
    name: str | None = None


@dataclass(frozen=True)
class WeightRef:
    """One weight dataset of a Bidirectional layer."""

    direction: str
    role: str
    dataset: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class BiLayer:
    """One Bidirectional layer and where its weights live."""

    name: str
    group: str
    merge_mode: str | None
    forward: CellSettings
    backward: CellSettings
    weights: list[WeightRef] = field(default_factory=list)
    config_known: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def cell(self) -> str:
        return self.forward.cell

    @property
    def units(self) -> int:
        return self.forward.units

    @property
    def supported(self) -> bool:
        return self.forward.cell in SUPPORTED_CELLS and self.backward.cell in SUPPORTED_CELLS

    def settings(self, direction: str) -> CellSettings:
        return self.forward if direction == "forward" else self.backward

    def weight(self, direction: str, role: str) -> WeightRef | None:
        for w in self.weights:
            if w.direction == direction and w.role == role:
                return w
        return None


@dataclass
class RnnLayer:
    """A plain (not Bidirectional) recurrent layer: a possible donor for one direction."""

    name: str
    group: str
    settings: CellSettings
    weights: list[WeightRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def weight(self, role: str) -> WeightRef | None:
        for w in self.weights:
            if w.role == role:
                return w
        return None


@dataclass
class ModelFile:
    """A model file as the tool sees it: its layout and its Bidirectional layers."""

    path: str
    format: str  # "keras", "h5", "weights.h5"
    keras_version: str | None
    layers: list[BiLayer]
    has_config: bool
    weights_member: str | None = None  # the HDF5 member inside a .keras archive
    optimizer_groups: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rnn_layers: list[RnnLayer] = field(default_factory=list)
