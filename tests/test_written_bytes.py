"""Byte-level proof, independent of the tool's own verification, that a written file differs
from its input only in the written weights (and, in a .keras archive, the weights member's
CRC in its two zip headers), and that the archive still passes zipfile's own CRC check."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, run_cli

from bilstm_cli.formats.inplace import copy_around

K3 = FIXTURES / "k3_seq_input_lstm_concat.keras"
K2 = FIXTURES / "k2_seq_lstm.h5"
LEGACY = FIXTURES / "k3_legacy_seq_lstm.h5"
WEIGHTS = "model.weights.h5"


def _weights_member(path: Path) -> tuple[int, int, int]:
    """(offset of the member's data, local header offset, central header CRC position)."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(WEIGHTS)
        names = [i.filename for i in z.infolist()]
        start_dir = z.start_dir
    local = info.header_offset
    name_len = int.from_bytes(data[local + 26 : local + 28], "little")
    extra_len = int.from_bytes(data[local + 28 : local + 30], "little")
    central = start_dir
    for name in names:  # central entries come in infolist order
        if name == WEIGHTS:
            break
        sizes = data[central + 28 : central + 34]
        central += 46 + sum(int.from_bytes(sizes[i : i + 2], "little") for i in (0, 2, 4))
    return local + 30 + name_len + extra_len, local, central + 16


def _allowed_ranges(path: Path, datasets: list[str]) -> list[tuple[int, int]]:
    """File byte ranges that the command may change in ``path``."""
    if path.suffix == ".keras":
        base, local, central_crc = _weights_member(path)
        with zipfile.ZipFile(path) as z:
            h5 = h5py.File(io.BytesIO(z.read(WEIGHTS)), "r")
        allowed = [(local + 14, 4), (central_crc, 4)]
    else:
        base, h5 = 0, h5py.File(path, "r")
        allowed = []
    with h5:
        for name in datasets:
            ds = h5[name]
            allowed.append((base + ds.id.get_offset(), ds.id.get_storage_size()))
    return allowed


def _changed_outside(before: Path, after: Path, allowed: list[tuple[int, int]]) -> list[int]:
    a = np.frombuffer(before.read_bytes(), np.uint8)
    b = np.frombuffer(after.read_bytes(), np.uint8)
    assert a.size == b.size
    changed = a != b
    for offset, length in allowed:
        changed[offset : offset + length] = False
    return np.flatnonzero(changed)[:10].tolist()


def _written(run) -> list[str]:
    assert run.exit_code == 0, run.stderr
    return sorted({c["dataset"] for c in run.json()["changes"]})


@pytest.mark.parametrize("model", [K3, LEGACY], ids=["keras", "h5"])
def test_init_changes_only_the_written_weights(tmp_path, model):
    out = tmp_path / f"out{model.suffix}"
    run = run_cli("init", model, "-o", out, "--init", "glorot_uniform", "--seed", "3", "--json")
    datasets = _written(run)
    assert datasets
    assert _changed_outside(model, out, _allowed_ranges(out, datasets)) == []
    if model.suffix == ".keras":
        with zipfile.ZipFile(out) as z:
            assert z.testzip() is None  # every member's CRC matches its bytes
        # and the weights really changed, so the CRC had to be rewritten
        with zipfile.ZipFile(model) as zin, zipfile.ZipFile(out) as zout:
            assert zin.getinfo(WEIGHTS).CRC != zout.getinfo(WEIGHTS).CRC


def test_partial_transplant_changes_only_the_written_weights(tmp_path):
    out = tmp_path / "out.keras"
    run = run_cli(
        "transplant", K2, K3, "-o", out, "--role", "recurrent_kernel[f]", "--direction",
        "backward", "--json",
    )  # fmt: skip
    datasets = _written(run)
    assert len(datasets) == 1
    assert _changed_outside(K3, out, _allowed_ranges(out, datasets)) == []
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None


def test_copy_around_copies_everything_but_the_skipped_ranges(tmp_path):
    data = os.urandom(3 << 20)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    dst.write_bytes(b"")
    skip = [(100, 50), (1 << 20, 70_000), (len(data) - 10, 10), (120, 40)]  # one overlaps
    copy_around(str(src), str(dst), skip)
    got = bytearray(dst.read_bytes())
    assert len(got) == len(data)
    expected = bytearray(data)
    for offset, length in skip:
        assert got[offset : offset + length] == bytes(length)  # holes read as zeros
        expected[offset : offset + length] = bytes(length)
    assert got == expected
