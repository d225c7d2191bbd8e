"""Small things a new user runs into: counts of non-finite values, what a dry run would
write, and Keras' own initializer names."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
from conftest import FIXTURES, run_cli

LSTM_H5 = FIXTURES / "k2_seq_lstm.h5"
BIAS = "model_weights/bidirectional/bidirectional/forward_lstm/lstm_cell/bias:0"


def test_statistics_count_nonfinite_values(tmp_path):
    src = tmp_path / "nan.h5"
    shutil.copyfile(LSTM_H5, src)
    with h5py.File(src, "r+") as f:
        values = f[BIAS][()]
        values[:3] = [np.nan, np.inf, -np.inf]
        f[BIAS][...] = values
    doc = run_cli("inspect", src, "--json").json()
    stats = {w["dataset"]: w["stats"] for w in doc["layers"][0]["weights"]}
    assert stats[BIAS]["finite"] is False and stats[BIAS]["nonfinite"] == 3
    # The other numbers are over the finite values, which are all still there.
    clean = run_cli("inspect", LSTM_H5, "--json").json()["layers"][0]["weights"][2]["stats"]
    assert clean["nonfinite"] == 0 and stats[BIAS]["max"] <= clean["max"]


def test_dry_run_document_names_the_output_it_would_write(tmp_path):
    out = tmp_path / "would.h5"
    doc = run_cli("init", LSTM_H5, "-o", out, "--seed", "1", "--dry-run", "--json").json()
    assert doc["dry_run"] is True and doc["output"] == str(out)
    assert not out.exists()
    without = run_cli("init", LSTM_H5, "--seed", "1", "--dry-run", "--json").json()
    assert without["output"] is None


def test_keras_class_names_are_strategy_names(tmp_path):
    pairs = [
        ("TruncatedNormal:stddev=0.05", "truncated_normal:stddev=0.05"),
        ("recurrent_kernel=Orthogonal", "recurrent_kernel=orthogonal"),
        ("kernel=GlorotUniform", "kernel=glorot_uniform"),
        ("RandomUniform:minval=-0.1,maxval=0.1", "uniform:minval=-0.1,maxval=0.1"),
        ("bias=Zeros", "bias=zeros"),
    ]
    for k, (keras_name, ours) in enumerate(pairs):
        a, b = tmp_path / f"a{k}.h5", tmp_path / f"b{k}.h5"
        assert run_cli("init", LSTM_H5, "-o", a, "--init", keras_name, "--seed", "3").exit_code == 0
        assert run_cli("init", LSTM_H5, "-o", b, "--init", ours, "--seed", "3").exit_code == 0
        assert a.read_bytes() == b.read_bytes(), keras_name
    unknown = run_cli("init", LSTM_H5, "-o", tmp_path / "c.h5", "--init", "VarianceScaling")
    assert unknown.exit_code == 2 and "unknown init strategy 'VarianceScaling'" in unknown.stderr


MIXED = FIXTURES / "k3_functional_mixed.keras"


def test_diff_pairs_layers_by_order_and_by_map():
    by_order = run_cli("diff", LSTM_H5, MIXED, "--by", "order", "--json")
    assert by_order.exit_code == 1
    layers = by_order.json()["layers"]
    assert [(x["name"], x["name_b"], x["status"]) for x in layers] == [
        ("bidirectional", "bi_lstm_ave", "different"),
        ("bi_gru_mul", "bi_gru_mul", "only in B"),
        ("my_bi", "my_bi", "only in B"),
    ]
    mapped = run_cli("diff", MIXED, MIXED, "--map", "bi_lstm_ave=bi_lstm_ave", "--json").json()
    assert [x["name"] for x in mapped["layers"]] == ["bi_lstm_ave"] and mapped["identical"]
    text = run_cli("diff", LSTM_H5, MIXED, "--map", "bidirectional=bi_lstm_ave").stdout
    assert "bidirectional ↔ bi_lstm_ave" in text
    bad = run_cli("diff", LSTM_H5, MIXED, "--map", "bidirectional=nope")
    assert bad.exit_code == 2 and "no Bidirectional layer 'nope' in B" in bad.stderr
    assert bad.stdout == ""


def test_diff_role_narrows_and_relative_difference_is_bounded(tmp_path):
    zeroed = tmp_path / "zeroed.h5"
    made = run_cli("init", LSTM_H5, "-o", zeroed, "--init", "bias=zeros", "--seed", "1")
    assert made.exit_code == 0
    doc = run_cli("diff", LSTM_H5, zeroed, "--role", "bias", "--json").json()
    weights = doc["layers"][0]["weights"]
    assert {w["role"] for w in weights} == {"bias"}
    # Zero on one side: 100% different, not a quotient by zero.
    assert all(w["max_rel_diff"] == 1.0 for w in weights)


def test_stale_optimizer_note_only_for_weights_the_optimizer_keeps(tmp_path):
    trained = FIXTURES / "k2_trained_adam.h5"
    run = run_cli("init", trained, "-o", tmp_path / "a.h5", "--init", "bias=zeros", "--seed", "1")
    assert run.exit_code == 0 and "optimizer state (optimizer_weights)" in run.stdout
    keras3 = FIXTURES / "k3_trained_adam.keras"
    run = run_cli("init", keras3, "-o", tmp_path / "a.keras", "--seed", "1", "--json")
    assert any("optimizer state (optimizer)" in n for n in run.json()["notes"])
    # A file saved without its optimizer says nothing about one.
    plain = run_cli("init", LSTM_H5, "-o", tmp_path / "b.h5", "--seed", "1", "--json")
    assert not any("optimizer" in n for n in plain.json()["notes"])


def test_no_stale_optimizer_note_when_the_optimizer_keeps_nothing_of_that_shape(tmp_path):
    src = tmp_path / "frozen.h5"
    shutil.copyfile(FIXTURES / "k2_trained_adam.h5", src)
    with h5py.File(src, "r+") as f:
        # As if the recurrent layer had been frozen: the optimizer kept only the dense head.
        slots = f["optimizer_weights"]
        for name in list(slots.keys()):
            del slots[name]
        slots["Adam/m/dense/kernel:0"] = np.zeros((6, 1), np.float32)
    run = run_cli("init", src, "-o", tmp_path / "o.h5", "--seed", "1", "--json")
    assert run.exit_code == 0, run.stderr
    assert not any("optimizer" in n for n in run.json()["notes"])
