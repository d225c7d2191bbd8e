"""Weights of a stored archive member are read straight from the archive file; the values
are exactly what HDF5 gives, and anything not plain is left to HDF5."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilstm_cli.formats import Session
from bilstm_cli.formats.hdf5 import H5Reader, read_direct

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ARCHIVES = [
    "k3_functional_mixed.keras",
    "dtypes/f16_lstm.keras",
    "dtypes/f64_gru.keras",
    "dtypes/bf16_lstm.keras",  # read by HDF5: 2-byte opaque values
    "dtypes/f32_lstm_gzip.keras",  # compressed chunks: read by HDF5
]


def _datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("name", ARCHIVES)
def test_every_weight_reads_as_hdf5_gives_it(name):
    path = FIXTURES / name
    with zipfile.ZipFile(path) as z:
        member = io.BytesIO(z.read("model.weights.h5"))
    reader = H5Reader(str(path), Session())
    direct = 0
    try:
        with h5py.File(member, "r") as f:
            for location in _datasets(f):
                ds = f[location]
                if ds.dtype.kind != "f":
                    continue
                got = reader.read(location)
                want = ds[()]
                assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
                assert np.array_equal(got, want, equal_nan=True), location
                direct += read_direct(reader._file[location], reader._span) is not None
    finally:
        reader.close()
    if "gzip" in name:
        assert direct == 0
    elif "bf16" not in name:
        assert direct > 0


def test_a_span_beyond_the_member_is_left_to_hdf5():
    path = FIXTURES / "k3_functional_mixed.keras"
    reader = H5Reader(str(path), Session())
    try:
        location = next(x for x in _datasets(reader._file) if "kernel" in x or "vars/0" in x)
        ds = reader._file[location]
        assert read_direct(ds, reader._span) is not None
        fd, start, size = reader._span
        assert read_direct(ds, (fd, start, 16)) is None  # a member ending before the data
    finally:
        reader.close()


def test_writes_read_and_read_back_plain_weights_directly(tmp_path, monkeypatch):
    """An init reads each weight it replaces, and verification reads each one back, straight
    from the archive; nothing plain goes through HDF5's file object."""
    import bilstm_cli as bl
    from bilstm_cli.formats import hdf5

    used = {"direct": 0, "hdf5": 0}
    real = hdf5.read_direct

    def counting(ds, span):
        got = real(ds, span)
        used["direct" if got is not None else "hdf5"] += 1
        return got

    monkeypatch.setattr(hdf5, "read_direct", counting)
    plan = bl.plan_init(str(FIXTURES / "k3_functional_mixed.keras"), init=["zeros"], seed=1)
    result = bl.apply(plan, str(tmp_path / "out.keras"))
    assert result.verified
    written = sum(1 for _ in result.changes)
    assert used["hdf5"] == 0 and used["direct"] >= 2 * written
