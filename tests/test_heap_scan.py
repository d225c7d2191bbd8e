"""The global-heap signature is found wherever it lies, however the bytes are cut into blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli.formats.h5heaps import CollectionFinder


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"G", b"C", b"O", b"L", b"x", b"GCOL"]), max_size=80).map(
        b"".join
    ),
    block=st.integers(min_value=1, max_value=17),
)
def test_every_occurrence_found_once(data, block):
    finder = CollectionFinder()
    for i in range(0, len(data), block):
        finder.feed(data[i : i + block])
    expected = [i for i in range(len(data)) if data[i : i + 4] == b"GCOL"]
    assert sorted(finder.found) == expected


# --- the collections one attribute points to (h5attrs.py) ----------------------------------

import io  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bilstm_cli.formats import h5attrs, h5heaps  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WITH_STRINGS = [
    "k3_functional_mixed.keras",  # Keras 3 'vars' groups named by a string attribute
    "wrappers/k3_nested.keras",
    "dtypes/bf16_lstm.keras",  # plus the dtype="bfloat16" tags
    "k3_legacy_functional_gru.h5",  # model_config, layer and weight names
    "k2_functional_mixed.h5",
    "cudnn_seq_lstm.h5",
]


def _hdf5_bytes(name: str) -> bytes:
    path = FIXTURES / name
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            return z.read("model.weights.h5")
    return path.read_bytes()


def _string_attributes(f: h5py.File) -> list[tuple[h5py.HLObject, bytes]]:
    found = []

    def visit(_name: str, obj: h5py.HLObject) -> None:
        for key in obj.attrs:
            tid = h5py.h5a.open(obj.id, key.encode()).get_type()
            if h5heaps.needs_heap(tid):
                found.append((obj, key.encode()))

    visit("/", f)
    f.visititems(visit)
    return found


def _addresses(data: bytes, obj: h5py.HLObject, name: bytes) -> list[int] | None:
    count = h5py.h5a.open(obj.id, name).get_space().get_simple_extent_npoints()
    header = h5py.h5o.get_info(obj.id).addr
    return h5attrs.heap_addresses(lambda at, n: data[at : at + n], header, name, count)


@pytest.mark.parametrize("name", WITH_STRINGS)
def test_every_string_attribute_points_into_a_collection_the_scan_finds(name):
    """Read from the object header, each attribute's values lead to global heap collections,
    and those are exactly collections the whole-file scan finds: the ones HDF5 would load."""
    data = _hdf5_bytes(name)
    finder = CollectionFinder()
    finder.feed(data)
    with h5py.File(io.BytesIO(data), "r") as f:
        attributes = _string_attributes(f)
        assert attributes
        pointed: set[int] = set()
        for obj, key in attributes:
            found = _addresses(data, obj, key)
            assert found, (obj.name, key)
            pointed.update(found)
    assert pointed and pointed <= set(finder.found)


def test_dense_attribute_storage_is_not_read_but_scanned_whole(tmp_path):
    """Attributes kept in a fractal heap (many of them, newest file format) are not looked
    up here: the caller falls back to the whole-file scan."""
    path = tmp_path / "dense.h5"
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("g")
        for k in range(20):
            g.attrs[f"a{k}"] = f"value {k}"
        f.create_dataset("w", data=np.zeros((3, 4), "f4"))
    data = path.read_bytes()
    with h5py.File(path, "r") as f:
        assert _addresses(data, f["g"], b"a3") is None


def test_compact_attributes_of_the_newest_header_version(tmp_path):
    path = tmp_path / "v2.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_group("g").attrs["name"] = "forward"
    data = path.read_bytes()
    finder = CollectionFinder()
    finder.feed(data)
    with h5py.File(path, "r") as f:
        found = _addresses(data, f["g"], b"name")
    assert found and set(found) <= set(finder.found)


def _damage_first_collection(data: bytearray) -> int:
    at = data.find(b"GCOL")
    size = int.from_bytes(data[at + 8 : at + 16], "little")
    data[at + 8 : at + 16] = (size + 10496).to_bytes(8, "little")  # beyond the file's end
    return at


def test_damaged_collection_an_attribute_points_to_is_refused(tmp_path):
    """A Keras 3 .keras whose 'vars' name strings sit in a collection declaring more bytes
    than the file holds: refused before HDF5 walks it, though the member is not scanned."""
    source = FIXTURES / "k3_seq_input_lstm_concat.keras"
    member = bytearray(_hdf5_bytes("k3_seq_input_lstm_concat.keras"))
    at = _damage_first_collection(member)
    p = tmp_path / "looping.keras"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(p, "w") as zout:
        for info in zin.infolist():
            body = bytes(member) if info.filename == "model.weights.h5" else zin.read(info)
            zout.writestr(info, body)
    run = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", "inspect", str(p)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert run.stderr.startswith(f"Error: {p}: global heap at byte {at}"), run.stderr
    assert len(run.stderr.splitlines()) == 1


def test_only_the_collections_read_are_walked(monkeypatch):
    """A weights file whose values read are all numbers needs no heap check at all; a legacy
    file's strings (config, layer and weight names) have their own collections walked, and
    neither is scanned byte by byte."""
    scans, walked = [], []
    real_scan, real_walk = h5heaps.check_global_heaps, h5heaps._check_collection
    monkeypatch.setattr(h5heaps, "check_global_heaps", lambda f: scans.append(1) or real_scan(f))
    monkeypatch.setattr(
        h5heaps, "_check_collection", lambda f, at, *a: walked.append(at) or real_walk(f, at, *a)
    )
    import bilstm_cli as bl

    with bl.open_model(str(FIXTURES / "k31_functional_lstm_gru.keras")) as model:
        for layer in model.layers:
            for w in layer.weights:
                w.read()
    assert (scans, walked) == ([], [])
    with bl.open_model(str(FIXTURES / "k3_legacy_functional_gru.h5")) as model:
        model.layers[0].weights[0].read()
    finder = CollectionFinder()
    finder.feed((FIXTURES / "k3_legacy_functional_gru.h5").read_bytes())
    assert scans == [] and walked and set(walked) <= set(finder.found)
