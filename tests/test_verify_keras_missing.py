"""`--verify keras` without Keras installed: a usage error (exit 2) said before any work, in
the command and in the library, found without importing anything."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli.ops import verify_keras

INSTALL = "pip install 'bilstm-cli[keras]'"


@pytest.fixture
def without(monkeypatch):
    """Make the given top-level modules look not installed, to find_spec."""

    def hide(*names: str) -> None:
        real = importlib.util.find_spec

        def find_spec(name, package=None):
            return None if name.split(".")[0] in names else real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def _error_line(run) -> str:
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    return lines[0]


def test_init_says_so_before_reading_anything(without, tmp_path):
    without("keras", "tf_keras")
    out = tmp_path / "out.h5"
    # A file init would refuse (no Bidirectional layer): missing Keras is said first.
    for model in ("k2_seq_lstm.h5", "k2_plain_lstm_lm.h5"):
        run = run_cli("init", FIXTURES / model, "-o", out, "--seed", "1", "--verify", "keras")
        assert run.exit_code == 2
        assert INSTALL in _error_line(run) and "--verify keras" in run.stderr
        assert run.stdout == ""
        assert list(tmp_path.iterdir()) == []


def test_transplant_says_so_before_reading_anything(without, tmp_path):
    without("keras", "tf_keras")
    out = tmp_path / "out.keras"
    run = run_cli(
        "transplant",
        FIXTURES / "k2_seq_lstm.h5",
        FIXTURES / "k3_seq_input_lstm_concat.keras",
        "-o",
        out,
        "--verify",
        "keras",
        "--json",
    )
    assert run.exit_code == 2
    assert INSTALL in _error_line(run)
    assert run.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_dry_run_needs_no_keras(without):
    without("keras", "tf_keras")
    run = run_cli("init", FIXTURES / "k2_seq_lstm.h5", "--dry-run", "--verify", "keras")
    assert run.exit_code == 0, run.stderr


def test_apply_raises_before_staging(without, tmp_path, monkeypatch):
    plan = bl.plan_init(str(FIXTURES / "k2_seq_lstm.h5"), seed=1)
    without("keras", "tf_keras")

    def no_jobs(*args):
        raise AssertionError("jobs made: apply got past the Keras check")

    monkeypatch.setattr(plan, "make_jobs", no_jobs)
    out = tmp_path / "out.h5"
    with pytest.raises(bl.UsageError) as raised:
        bl.apply(plan, str(out), verify="keras")
    assert raised.value.exit_code == 2 and INSTALL in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_tf_keras_alone_loads_only_keras2_files(without):
    keras2 = bl.plan_init(str(FIXTURES / "k2_seq_lstm.h5"), seed=1).model
    keras3 = bl.plan_init(str(FIXTURES / "k3_seq_input_lstm_concat.keras"), seed=1).model
    without("keras")
    verify_keras.require()
    verify_keras.require(keras2)
    with pytest.raises(bl.UsageError, match="needs Keras 3"):
        verify_keras.require(keras3)


def test_checking_imports_nothing():
    before = set(sys.modules)
    verify_keras.require()
    assert not {
        m
        for m in set(sys.modules) - before
        if m.split(".")[0] in ("keras", "tf_keras", "tensorflow")
    }
