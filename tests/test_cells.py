"""The cell registry, and its queries against the tables the format and ops layers keep today."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bilstm_cli import cells
from bilstm_cli.cells import cudnn
from bilstm_cli.cells.base import Cell, StoredVariant
from bilstm_cli.cells.blocks import CELL_GATES, GATE_NAMES, ROLES, check_cell
from bilstm_cli.errors import InputError
from bilstm_cli.model import CellSettings

# What the readers knew before the registry existed, written out: the registry must say the same.
CONV_CLASSES = ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
MATRIX_CLASSES = ("LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU")
RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN", *CONV_CLASSES, "CuDNNLSTM", "CuDNNGRU")
GATE_COUNT = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "CuDNNLSTM": 4, "CuDNNGRU": 3}
GATE_COUNT.update(dict.fromkeys(CONV_CLASSES, 4))
# The three ConvLSTM layers share one cell group; the first of them stands for all.
CELL_GROUP_NAMES = {
    "lstm_cell": "LSTM",
    "gru_cell": "GRU",
    "simple_rnn_cell": "SimpleRNN",
    "conv_lstm_cell": "ConvLSTM1D",
}


def reader_expected_shape(settings: CellSettings, role: str, input_dim: int) -> tuple[int, ...]:
    u, k = settings.units, GATE_COUNT[settings.cell]
    if role == "kernel":
        return (input_dim, k * u)
    if role == "recurrent_kernel":
        return (u, k * u)
    if settings.cell in ("CuDNNLSTM", "CuDNNGRU"):
        return (2 * k * u,)
    if settings.cell == "GRU" and settings.reset_after:
        return (2, k * u)
    return (k * u,)


def _keras_settings(s: CellSettings) -> CellSettings:
    if s.cell not in ("CuDNNLSTM", "CuDNNGRU"):
        return s
    return CellSettings(
        cell=s.cell[len("CuDNN") :],
        units=s.units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        reset_after=True if s.cell == "CuDNNGRU" else None,
        go_backwards=s.go_backwards,
        name=s.name,
    )


def test_families_in_registration_order() -> None:
    assert cells.known() == ("LSTM", "GRU", "SimpleRNN", *CONV_CLASSES)
    assert cells.supported(CellSettings("GRU", 2), CellSettings("SimpleRNN", 2))
    assert not cells.supported(CellSettings("LSTM", 2), CellSettings("CuDNNLSTM", 2))


def test_layer_class_for_blocks() -> None:
    # Matrices only: a ConvLSTM's rank, not its block count, tells it apart.
    families = [cells.layer_class_for_blocks(k) for k in (4, 3, 1, 2)]
    assert families == ["LSTM", "GRU", "SimpleRNN", None]
    assert [cells.layer_class_for_blocks(k, stored=True) for k in (4, 3, 1)] == [
        "CuDNNLSTM",
        "CuDNNGRU",
        None,
    ]


def test_layer_classes_match_the_readable_classes() -> None:
    assert cells.layer_classes() == RNN_CLASSES
    assert set(cells.layer_classes()) == set(GATE_COUNT)


@pytest.mark.parametrize("class_name", RNN_CLASSES)
def test_layer_block_count(class_name: str) -> None:
    assert cells.layer_block_count(class_name) == GATE_COUNT[class_name]


def test_layer_block_count_of_an_unknown_class() -> None:
    with pytest.raises(InputError, match="unsupported recurrent cell 'Dense'"):
        cells.layer_block_count("Dense")


def test_tracked_groups() -> None:
    for group, name in CELL_GROUP_NAMES.items():
        found = cells.for_tracked_group(group)
        assert found is not None and found.name == name
    assert {cells.get(n).tracked_group for n in cells.known()} == set(CELL_GROUP_NAMES)
    assert cells.for_tracked_group("dense") is None
    assert cells.for_tracked_group("LSTM") is None


def _settings() -> list[CellSettings]:
    out = []
    for cell, units, reset_after, use_bias in itertools.product(
        MATRIX_CLASSES, (1, 3, 7), (None, False, True), (True, False)
    ):
        out.append(CellSettings(cell, units, use_bias=use_bias, reset_after=reset_after))
    return out


@pytest.mark.parametrize("settings", _settings(), ids=repr)
def test_expected_shape_matches_the_reader(settings: CellSettings) -> None:
    for role, input_dim in itertools.product(ROLES, (0, 1, 5)):
        assert cells.expected_shape(settings, role, input_dim) == reader_expected_shape(
            settings, role, input_dim
        )


def test_expected_shape_of_an_unknown_role() -> None:
    with pytest.raises(InputError, match="a LSTM has no weight called gamma"):
        cells.expected_shape(CellSettings("LSTM", 2), "gamma", 3)


@pytest.mark.parametrize(
    "settings",
    [
        CellSettings("LSTM", 4, activation="relu", recurrent_activation="hard_sigmoid"),
        CellSettings("GRU", 2, use_bias=False, reset_after=False, go_backwards=True),
        CellSettings("SimpleRNN", 5, recurrent_activation=None, name="rnn"),
        CellSettings("CuDNNLSTM", 3, activation=None, use_bias=False, name="c1"),
        CellSettings("CuDNNGRU", 6, recurrent_activation=None, go_backwards=True, name="c2"),
        CellSettings("CuDNNGRU", 1, reset_after=False),
    ],
    ids=repr,
)
def test_keras_settings_match_the_transplant_plan(settings: CellSettings) -> None:
    assert cells.keras_settings(settings) == _keras_settings(settings)


def test_get_raises_what_check_cell_raised() -> None:
    message = (
        "unsupported recurrent cell 'CuDNNLSTM'; expected one of LSTM, GRU, SimpleRNN, "
        "ConvLSTM1D, ConvLSTM2D, ConvLSTM3D"
    )
    for lookup in (cells.get, check_cell):
        with pytest.raises(InputError) as err:
            lookup("CuDNNLSTM")
        assert str(err.value) == message


def test_tables_derived_from_the_registry() -> None:
    assert list(CELL_GATES) == ["LSTM", "GRU", "SimpleRNN", *CONV_CLASSES]
    lstm = {"i": "input", "f": "forget", "c": "cell", "o": "output"}
    assert GATE_NAMES == {
        "LSTM": lstm,
        "GRU": {"z": "update", "r": "reset", "h": "candidate"},
        "SimpleRNN": {},
        **dict.fromkeys(CONV_CLASSES, lstm),
    }


def test_forget_gates() -> None:
    assert [cells.get(n).forget_gate for n in cells.known()] == ["f", "z", None, "f", "f", "f"]


def test_cell_shapes() -> None:
    gru = cells.get("GRU")
    assert gru.shape("kernel", 4, 7) == (7, 12)
    assert gru.shape("recurrent_kernel", 4, 7) == (4, 12)
    assert gru.shape("bias", 4, 7, reset_after=True) == (2, 12)
    assert gru.shape("bias", 4, 7) == (12,)
    # reset_after means nothing to a family without the setting.
    assert cells.get("LSTM").shape("bias", 4, 7, reset_after=True) == (16,)
    assert cells.get("SimpleRNN").shape("bias", 4, 7, reset_after=True) == (4,)


def test_cudnn_variants() -> None:
    assert cudnn.KERAS_CELL == {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
    assert cudnn.is_cudnn("CuDNNGRU") and not cudnn.is_cudnn("GRU")
    stored = cells.variant("CuDNNGRU")
    assert stored is not None and stored.cell is cells.get("GRU")
    assert stored.shape("bias", 4, 2) == (24,)
    assert stored.shape("kernel", 4, 2) == (2, 12)
    assert cells.variant("GRU") is None


@pytest.mark.parametrize("class_name", ["CuDNNLSTM", "CuDNNGRU"])
def test_variant_conversion_is_the_cudnn_one(class_name: str) -> None:
    stored = cells.variant(class_name)
    assert stored is not None
    units, k = 3, stored.cell.blocks
    rng = np.random.default_rng(0)
    for role in ROLES:
        values = rng.standard_normal(stored.shape(role, units, 2))
        got = stored.to_keras(role, values, units)
        np.testing.assert_array_equal(got, cudnn.to_keras(class_name, role, values, units))
        keras_shape = stored.cell.shape(role, units, 2, bool(stored.reset_after))
        assert got.shape == keras_shape
    bias = rng.standard_normal(2 * k * units)
    if class_name == "CuDNNLSTM":
        np.testing.assert_array_equal(stored.to_keras("bias", bias, units), bias[:12] + bias[12:])
    else:
        np.testing.assert_array_equal(stored.to_keras("bias", bias, units), bias.reshape(2, 9))


def test_cudnn_errors() -> None:
    with pytest.raises(InputError, match=r"a CuDNNLSTM bias of shape \(12,\) cannot be converted"):
        cudnn.to_keras("CuDNNLSTM", "bias", np.zeros(12), 3)
    with pytest.raises(InputError, match="a CuDNNGRU has no weight called gamma"):
        cudnn.to_keras("CuDNNGRU", "gamma", np.zeros(3), 3)


def test_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="already registered"):
        cells.register(cells.get("LSTM"))
    stray = Cell("Stray", (), (), "stray_cell", None, 1, False, cells.get("SimpleRNN").step)
    with pytest.raises(ValueError, match="Stray, which is not registered"):
        cells.register_variant(
            StoredVariant("CuDNNStray", stray, "tanh", "sigmoid", True, None, cudnn.to_keras)
        )
    with pytest.raises(ValueError, match="one human name per gate"):
        Cell("Bad", ("a", "b"), ("alpha",), "bad_cell", None, 1, False, stray.step)
    assert "Stray" not in cells.known() and cells.variant("CuDNNStray") is None
