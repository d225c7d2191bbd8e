"""A failed verification exits 1 and leaves nothing at the output path, temporary files included."""

from __future__ import annotations

import os
from dataclasses import replace

from conftest import FIXTURES, run_cli

from bilstm_cli import formats
from bilstm_cli.formats.base import Comparison

SRC = FIXTURES / "k3_seq_input_lstm_concat.keras"
DONOR = FIXTURES / "k2_seq_lstm.h5"  # same layers, other values


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_unexpected_change_elsewhere_fails_verification(tmp_path, monkeypatch):
    real = formats.writer_for

    def changed_elsewhere(model, staged, written, on_written, session):
        return Comparison(["dataset 'layers/dense/vars/0' changed"], [], len(written))

    monkeypatch.setattr(
        formats,
        "writer_for",
        lambda model: replace(real(model), unchanged_except=changed_elsewhere),
    )
    out = tmp_path / "o.keras"
    run = run_cli("init", SRC, "-o", out, "--seed", "1")
    assert run.exit_code == 1
    assert "verification failed" in run.stderr and "layers/dense/vars/0" in run.stderr
    assert _leftovers(tmp_path) == []


def test_a_failed_strategy_fact_fails_verification(tmp_path, monkeypatch):
    import bilstm_cli.strategies as strategies

    monkeypatch.setattr(strategies, "facts", lambda *a, **k: [("orthogonal blocks", False, "off")])
    out = tmp_path / "o.keras"
    out.write_bytes(b"previous")
    run = run_cli("init", SRC, "-o", out, "--seed", "1", "--force")
    assert run.exit_code == 1 and "orthogonal blocks" in run.stderr
    assert out.read_bytes() == b"previous"  # the old file stays as it was
    assert _leftovers(tmp_path) == ["o.keras"]


def test_written_bytes_that_differ_from_the_intent_fail_verification(tmp_path, monkeypatch):
    import bilstm_cli.formats.staging as writer

    real = writer.StagedWrite.write

    def corrupting_write(self, dataset, values):
        real(self, dataset, values)  # the digest of the intended values is taken here
        if self.in_place:
            offset, _ = self._spans[dataset]
            first = os.pread(self._fd, 1, offset)
            os.pwrite(self._fd, bytes([first[0] ^ 0x01]), offset)
        else:
            ds = self._h5[dataset]
            ds[(0,) * ds.ndim] = ds[(0,) * ds.ndim] + 1.0

    monkeypatch.setattr(writer.StagedWrite, "write", corrupting_write)
    out = tmp_path / "o.h5"
    run = run_cli("init", FIXTURES / "k2_seq_lstm.h5", "-o", out, "--seed", "1")
    assert run.exit_code == 1 and "intended values" in run.stderr
    assert _leftovers(tmp_path) == []


def test_a_transplant_whose_bytes_differ_from_the_donor_fails_verification(tmp_path, monkeypatch):
    import bilstm_cli.formats.staging as writer

    real = writer.StagedWrite.write

    def corrupting_write(self, dataset, values):
        real(self, dataset, values)
        offset, _ = self._spans[dataset]
        first = os.pread(self._fd, 1, offset)
        os.pwrite(self._fd, bytes([first[0] ^ 0x01]), offset)

    monkeypatch.setattr(writer.StagedWrite, "write", corrupting_write)
    out = tmp_path / "o.keras"
    run = run_cli("transplant", DONOR, SRC, "-o", out)
    assert run.exit_code == 1 and "intended values" in run.stderr
    assert _leftovers(tmp_path) == []


def test_a_forward_pass_that_disagrees_fails_verification(tmp_path, monkeypatch):
    import bilstm_cli.ops.forward_check as forward_check

    real = forward_check.ForwardChecks.written

    def nudged(self, dataset, values):
        # The bytes check out, but the cell computes something else: only the forward pass
        # can tell.
        real(self, dataset, values + 1e-3 if dataset.endswith("vars/2") else values)

    monkeypatch.setattr(forward_check.ForwardChecks, "written", nudged)
    # Run the written cells on what reaches them, never on their donor's outputs.
    monkeypatch.setattr(forward_check._CellRun, "_mirrors_twin", lambda self: False)
    out = tmp_path / "o.keras"
    run = run_cli("transplant", DONOR, SRC, "-o", out)
    assert run.exit_code == 1
    assert "Bidirectional forward pass" in run.stderr and "should be 0" in run.stderr
    assert _leftovers(tmp_path) == []


def _recurrences_per_pass(monkeypatch, donor, out):
    """Transplant ``donor`` into SRC at ``out``; the cells run per Bidirectional forward pass,
    each pass checked and passed, and the passes' details."""
    import bilstm_cli.ops.forward_check as forward_check

    runs = []
    real = forward_check._CellRun._recur

    def counted(self, rk, bias):
        runs.append(self)
        real(self, rk, bias)

    monkeypatch.setattr(forward_check._CellRun, "_recur", counted)
    run = run_cli("transplant", donor, SRC, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    passes = [c for c in run.json()["checks"] if c["check"] == "Bidirectional forward pass"]
    assert passes and all(c["status"] == "passed" for c in passes)
    return len(runs) / len(passes), {c["detail"] for c in passes}


def _equal_donor(tmp_path):
    donor = tmp_path / "donor.keras"
    assert run_cli("init", SRC, "-o", donor, "--seed", "5").exit_code == 0
    return donor


def test_a_written_cell_equal_to_its_donor_runs_neither_side(tmp_path, monkeypatch):
    # Same settings, weights moved whole and read back bit for bit: each written cell would
    # repeat its donor cell's arithmetic exactly, so the outputs are known equal unrun.
    out = tmp_path / "o.keras"
    runs, details = _recurrences_per_pass(monkeypatch, _equal_donor(tmp_path), out)
    unrun = "the donor cells' weights bit for bit and settings: not run"
    assert runs == 0
    assert details == {f"largest output difference 0 ({unrun})"}


def test_a_held_donor_cell_runs_on_its_weights_read_again_when_asked(tmp_path, monkeypatch):
    import bilstm_cli.ops.forward_check as forward_check

    # The written cells run on what was read back: their held donor cells, fed nothing they
    # kept, read their weights again and must compute the very same outputs.
    monkeypatch.setattr(forward_check._CellRun, "_mirrors_twin", lambda self: False)
    out = tmp_path / "o.keras"
    runs, details = _recurrences_per_pass(monkeypatch, _equal_donor(tmp_path), out)
    assert runs == 4
    assert details == {"largest output difference 0"}


def test_a_written_cell_with_other_settings_runs_itself(tmp_path, monkeypatch):
    # A Keras 2 donor: its cells run under Keras 2's definitions (the cell settings say
    # keras_major 2), the written ones under Keras 3's, so each side runs its own arithmetic.
    runs, details = _recurrences_per_pass(monkeypatch, DONOR, tmp_path / "o.keras")
    assert runs == 4
    assert details == {"largest output difference 0"}


def test_a_failed_flush_to_disk_is_an_output_error(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the flush of the staged copy, on a helper
    out = tmp_path / "o.keras"
    run = run_cli("init", SRC, "-o", out, "--seed", "1")
    assert run.exit_code == 4 and "no space left" in run.stderr, run.stderr
    assert _leftovers(tmp_path) == []
