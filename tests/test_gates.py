"""Gate layout helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli.cells.blocks import (
    CELL_GATES,
    ROLES,
    block_count,
    gate_block,
    gate_blocks,
    gate_columns,
    gate_mask,
    gate_slices,
    last_axis_width,
    parse_gates,
    selected_blocks,
)
from bilstm_cli.errors import InputError, UsageError


def test_constants() -> None:
    lstm = ("i", "f", "c", "o")
    conv = dict.fromkeys(("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"), lstm)
    assert CELL_GATES == {"LSTM": lstm, "GRU": ("z", "r", "h"), "SimpleRNN": (), **conv}
    assert ROLES == ("kernel", "recurrent_kernel", "bias")


def test_lstm_slices() -> None:
    s = gate_slices("LSTM", 3)
    assert s == {"i": slice(0, 3), "f": slice(3, 6), "c": slice(6, 9), "o": slice(9, 12)}


def test_simple_rnn_has_no_gates_but_one_block() -> None:
    assert gate_slices("SimpleRNN", 5) == {}
    assert gate_blocks("SimpleRNN", 5) == [(None, slice(0, 5))]
    assert block_count("SimpleRNN") == 1
    assert last_axis_width("SimpleRNN", 5) == 5


def test_gate_block_picks_columns() -> None:
    a = np.arange(2 * 12).reshape(2, 12)
    np.testing.assert_array_equal(gate_block(a, "LSTM", 3, "f"), a[:, 3:6])
    b = np.arange(12)
    np.testing.assert_array_equal(gate_block(b, "LSTM", 3, "o"), b[9:])


def test_gru_reset_after_bias_blocks_span_both_rows() -> None:
    bias = np.arange(2 * 9).reshape(2, 9)
    z = gate_block(bias, "GRU", 3, "z")
    assert z.shape == (2, 3)
    np.testing.assert_array_equal(z, [[0, 1, 2], [9, 10, 11]])


def test_gate_block_rejects_wrong_width() -> None:
    with pytest.raises(InputError, match="last axis"):
        gate_block(np.zeros((2, 10)), "LSTM", 3, "i")


def test_parse_gates_orders_and_dedupes() -> None:
    assert parse_gates("LSTM", "o, f,f") == ("f", "o")
    assert parse_gates("GRU", ["h", "z"]) == ("z", "h")


def test_parse_gates_unknown_names_cell_gates() -> None:
    with pytest.raises(UsageError, match=r"LSTM has gates i, f, c, o"):
        parse_gates("LSTM", "x")
    with pytest.raises(UsageError, match=r"GRU has gates z, r, h"):
        parse_gates("GRU", ["f"])
    with pytest.raises(UsageError, match="has no gates"):
        parse_gates("SimpleRNN", ["i"])
    with pytest.raises(UsageError, match="empty"):
        parse_gates("LSTM", "")


def test_unknown_cell() -> None:
    with pytest.raises(InputError, match="CuDNNLSTM"):
        gate_slices("CuDNNLSTM", 3)


def test_masks() -> None:
    m = gate_mask("LSTM", 2, ["f"])
    np.testing.assert_array_equal(m, [0, 0, 1, 1, 0, 0, 0, 0])
    assert gate_mask("GRU", 2, None).all()
    np.testing.assert_array_equal(gate_columns("GRU", 2, "z,h"), [0, 1, 4, 5])
    assert gate_mask("SimpleRNN", 4, None).shape == (4,)


def test_selected_blocks() -> None:
    m = gate_mask("LSTM", 2, ["i", "o"])
    assert [g for g, _ in selected_blocks("LSTM", 2, m)] == ["i", "o"]
    assert len(selected_blocks("GRU", 2, None)) == 3


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(["LSTM", "GRU"]),
    units=st.integers(1, 6),
    data=st.data(),
)
def test_mask_matches_slices(cell: str, units: int, data: st.DataObject) -> None:
    gates = data.draw(st.lists(st.sampled_from(CELL_GATES[cell]), min_size=1, unique=True))
    mask = gate_mask(cell, units, gates)
    expected = np.zeros(len(CELL_GATES[cell]) * units, dtype=bool)
    for g in gates:
        expected[gate_slices(cell, units)[g]] = True
    np.testing.assert_array_equal(mask, expected)
    # Blocks tile the last axis exactly, in order.
    covered = np.concatenate([np.arange(s.start, s.stop) for _, s in gate_blocks(cell, units)])
    np.testing.assert_array_equal(covered, np.arange(len(expected)))
