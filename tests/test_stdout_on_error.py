"""stdout carries data only: whatever fails, and however late, it stays empty."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
from conftest import FIXTURES, run_cli

DONOR = FIXTURES / "k2_seq_lstm.h5"
TARGET = FIXTURES / "k3_seq_input_lstm_concat.keras"


def _failed(run, code: int) -> None:
    assert run.exit_code == code, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith("Error: ") and run.stderr.count("\n") == 1


def test_transplant_onto_an_existing_output_prints_nothing(tmp_path):
    out = tmp_path / "out.keras"
    out.write_bytes(b"keep me")
    _failed(run_cli("transplant", DONOR, TARGET, "-o", out), 4)
    assert out.read_bytes() == b"keep me"


def test_transplant_into_a_missing_folder_prints_nothing(tmp_path):
    _failed(run_cli("transplant", DONOR, TARGET, "-o", tmp_path / "no" / "out.keras"), 4)


def test_transplant_of_a_donor_holding_nan_prints_nothing(tmp_path):
    donor = tmp_path / "nan.h5"
    shutil.copyfile(DONOR, donor)
    with h5py.File(donor, "r+") as f:
        name = "model_weights/bidirectional/bidirectional/forward_lstm/lstm_cell/bias:0"
        values = f[name][()]
        values[0] = np.nan
        f[name][...] = values
    _failed(run_cli("transplant", donor, TARGET, "-o", tmp_path / "out.keras"), 3)
    assert not (tmp_path / "out.keras").exists()


def test_transplant_that_fails_verification_prints_nothing(tmp_path, monkeypatch):
    import bilstm_cli.ops.forward_check as forward_check

    real = forward_check.ForwardChecks.written

    def nudged(self, dataset, values):
        real(self, dataset, values + 1.0)

    monkeypatch.setattr(forward_check.ForwardChecks, "written", nudged)
    _failed(run_cli("transplant", DONOR, TARGET, "-o", tmp_path / "out.keras"), 1)


def test_a_successful_transplant_still_shows_its_plan_first(tmp_path):
    run = run_cli("transplant", DONOR, TARGET, "-o", tmp_path / "out.keras")
    assert run.exit_code == 0
    assert run.stdout.startswith(f"plan: {DONOR} → {TARGET}")
