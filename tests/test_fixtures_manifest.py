"""The committed fixtures agree with fixtures/manifest.json and with themselves.

Reads files with h5py, zipfile and json only: no TensorFlow, no Keras.
"""

import hashlib
import io
import json
import zipfile
from pathlib import Path

import h5py
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ENTRIES = MANIFEST["fixtures"]
BY_FILE = {e["file"]: e for e in ENTRIES}
MAX_SIZE = 100 * 1024
MODEL_SUFFIXES = (".keras", ".h5")

CELL_NAMES = {"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU"}
PLAIN_RNN_CLASSES = {"LSTM", "GRU", "SimpleRNN"}
NESTED_MODEL_CLASSES = {"Sequential", "Functional", "Model"}


def ids(entries):
    return [e["file"] for e in entries]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_config(path, fmt):
    """The model configuration stored in the file, or None for weights-only files."""
    if fmt == "keras":
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    if fmt == "h5":
        with h5py.File(path, "r") as f:
            return json.loads(_text(f.attrs["model_config"]))
    return None


def _layer_list(model_config):
    conf = model_config.get("config")
    if isinstance(conf, list):  # Keras 2.0/2.1 Sequential: the list itself
        return conf
    return (conf or {}).get("layers", [])


def bidirectionals_in_config(model_config, prefix=""):
    """(name, wrapped class, units, merge_mode, layer config) per Bidirectional,
    depth first in config order; nested models give ``outer/inner`` names."""
    out = []
    for layer in _layer_list(model_config):
        cls = layer.get("class_name")
        conf = layer.get("config", {})
        name = conf.get("name", layer.get("name")) if isinstance(conf, dict) else None
        if cls == "Bidirectional":
            inner = conf["layer"]
            out.append(
                (prefix + name, inner["class_name"], inner["config"]["units"],
                 conf.get("merge_mode", "concat"), conf)
            )
        elif cls in NESTED_MODEL_CLASSES:
            out += bidirectionals_in_config(layer, prefix + name + "/")
    return out


def plain_rnns_in_config(model_config, prefix=""):
    """(name, class, units, layer entry) per plain (not Bidirectional) recurrent layer,
    depth first in config order; nested models give ``outer/inner`` names."""
    out = []
    for layer in _layer_list(model_config):
        cls = layer.get("class_name")
        conf = layer.get("config", {})
        name = conf.get("name", layer.get("name")) if isinstance(conf, dict) else None
        if cls in PLAIN_RNN_CLASSES:
            out.append((prefix + name, cls, conf["units"], layer))
        elif cls in NESTED_MODEL_CLASSES:
            out += plain_rnns_in_config(layer, prefix + name + "/")
    return out


def legacy_kernel_shape(path, name):
    """Shape of a layer's input kernel in a legacy ``.h5`` model, from ``weight_names``
    (``outer/inner`` names: the inner layer's weights in the outer model's group)."""
    top, _, inner = name.partition("/")
    leaf = inner.rsplit("/", 1)[-1] if inner else top
    with h5py.File(path, "r") as f:
        group = f["model_weights"][top]
        for weight in (_text(n) for n in group.attrs["weight_names"]):
            parts = weight.split("/")
            if parts[0] == leaf and parts[-1] == "kernel:0":
                return group[weight].shape
    return None


def class_names_in(obj):
    """Every class_name / registered_name anywhere in a configuration."""
    names = set()
    if isinstance(obj, dict):
        for key in ("class_name", "registered_name"):
            if isinstance(obj.get(key), str):
                names.add(obj[key])
        for v in obj.values():
            names |= class_names_in(v)
    elif isinstance(obj, list):
        for v in obj:
            names |= class_names_in(v)
    return names


def test_manifest_has_entries_and_unique_files():
    assert len(ENTRIES) >= 20
    assert len(BY_FILE) == len(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_entry_fields(entry):
    for key in ("file", "writer", "format", "loader", "safe_mode", "sha256", "size",
                "custom_objects", "bidirectional", "notes"):
        assert key in entry, key
    assert entry["format"] in ("keras", "h5", "weights.h5")
    assert entry["loader"] in ("keras3", "tf_keras", None)
    prefix = entry["file"].split("_")[0]
    assert prefix in ("k3", "k2", "cudnn") or (prefix.startswith("k3") and len(prefix) == 3)
    assert entry["bidirectional"] or entry.get("rnn"), (
        "every fixture holds at least one Bidirectional (or lists its plain recurrent layers)"
    )
    for rnn in entry.get("rnn", []):
        assert set(rnn) == {"name", "cell", "units", "input_dim"}
        assert rnn["cell"] in PLAIN_RNN_CLASSES
        assert isinstance(rnn["units"], int) and rnn["units"] > 0
        assert isinstance(rnn["input_dim"], int) and rnn["input_dim"] > 0
    for bi in entry["bidirectional"]:
        assert set(bi) >= {"name", "cell", "units", "merge_mode", "use_bias",
                           "reset_after", "input_dim"}
        assert bi["cell"] in CELL_NAMES
        assert bi["merge_mode"] in ("concat", "sum", "mul", "ave", None)
        assert isinstance(bi["units"], int) and bi["units"] > 0
        assert isinstance(bi["input_dim"], int) and bi["input_dim"] > 0
        if bi["cell"] == "GRU":
            assert bi["reset_after"] in (True, False)
        else:
            assert bi["reset_after"] is None
    if entry["format"] == "weights.h5":
        assert entry["loader"] is None
        assert entry["weights_of"] in BY_FILE
        source = BY_FILE[entry["weights_of"]]
        assert source["format"] != "weights.h5"
        assert entry["bidirectional"] == source["bidirectional"]


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_file_matches_checksum_and_size(entry):
    path = FIXTURES / entry["file"]
    assert path.is_file()
    assert path.stat().st_size == entry["size"]
    assert entry["size"] < MAX_SIZE
    assert sha256(path) == entry["sha256"]
    conv = entry.get("converted")
    if conv:
        cpath = FIXTURES / conv["file"]
        assert cpath.is_file()
        assert cpath.stat().st_size == conv["size"] < MAX_SIZE
        assert sha256(cpath) == conv["sha256"]


def test_every_model_file_is_listed():
    listed = set(BY_FILE)
    companions = {e["converted"]["file"] for e in ENTRIES if e.get("converted")}
    for path in FIXTURES.iterdir():
        if path.name.endswith(MODEL_SUFFIXES):
            assert path.name in listed, f"{path.name} is not in manifest.json"
        elif path.suffix == ".npz":
            assert path.name in companions, f"{path.name} is not in manifest.json"


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_format_agrees_with_file(entry):
    path = FIXTURES / entry["file"]
    fmt = entry["format"]
    if fmt == "keras":
        assert path.name.endswith(".keras")
        assert zipfile.is_zipfile(path)
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            assert {"config.json", "metadata.json", "model.weights.h5"} <= names
            with z.open("model.weights.h5") as member:
                data = member.read()
        assert data.startswith(b"\x89HDF\r\n\x1a\n")
        with h5py.File(io.BytesIO(data), "r") as f:
            assert "layers" in f
    else:
        assert path.name.endswith(".h5")
        assert not zipfile.is_zipfile(path)
        assert h5py.is_hdf5(path)
        with h5py.File(path, "r") as f:
            if fmt == "h5":
                assert "model_config" in f.attrs
                assert "model_weights" in f
            else:
                assert "model_config" not in f.attrs


@pytest.mark.parametrize(
    "entry", [e for e in ENTRIES if e["format"] != "weights.h5"],
    ids=ids([e for e in ENTRIES if e["format"] != "weights.h5"]),
)
def test_bidirectionals_agree_with_config(entry):
    config = read_config(FIXTURES / entry["file"], entry["format"])
    found = bidirectionals_in_config(config)
    assert [f[0] for f in found] == [b["name"] for b in entry["bidirectional"]]
    for (name, cls, units, merge_mode, conf), bi in zip(found, entry["bidirectional"]):
        assert cls == bi["cell"], name
        assert units == bi["units"], name
        assert merge_mode == bi["merge_mode"], name
        inner = conf["layer"]["config"]
        assert inner.get("use_bias", True) == bi["use_bias"], name
        if cls == "GRU":
            assert inner.get("reset_after", False) == bi["reset_after"], name


WITH_RNN = [e for e in ENTRIES if "rnn" in e]


@pytest.mark.parametrize("entry", WITH_RNN, ids=ids(WITH_RNN))
def test_plain_rnns_agree_with_config(entry):
    """The ``rnn`` list names every plain recurrent layer of the config, in order, with its
    cell and units; ``input_dim`` is the input width Keras built it for (``build_config``)
    or, in a legacy ``.h5`` without one, the first axis of the stored kernel."""
    assert entry["format"] != "weights.h5"
    path = FIXTURES / entry["file"]
    found = plain_rnns_in_config(read_config(path, entry["format"]))
    assert [f[0] for f in found] == [r["name"] for r in entry["rnn"]]
    for (name, cls, units, layer), rnn in zip(found, entry["rnn"]):
        assert cls == rnn["cell"], name
        assert units == rnn["units"], name
        input_shape = (layer.get("build_config") or {}).get("input_shape")
        if input_shape:
            assert input_shape[-1] == rnn["input_dim"], name
        else:
            assert entry["format"] == "h5", name
            shape = legacy_kernel_shape(path, name)
            assert shape is not None and shape[0] == rnn["input_dim"], name


@pytest.mark.parametrize(
    "entry", [e for e in ENTRIES if e["format"] != "weights.h5"],
    ids=ids([e for e in ENTRIES if e["format"] != "weights.h5"]),
)
def test_safe_mode_and_custom_objects_agree_with_config(entry):
    config = read_config(FIXTURES / entry["file"], entry["format"])
    classes = class_names_in(config)
    assert ("Lambda" in classes) == (entry["safe_mode"] is False)
    for name in entry["custom_objects"]:
        assert name in classes or f"bilstm_fixtures>{name}" in classes


@pytest.mark.parametrize(
    "entry", [e for e in ENTRIES if e["file"].startswith("cudnn_")],
    ids=ids([e for e in ENTRIES if e["file"].startswith("cudnn_")]),
)
def test_cudnn_layout(entry):
    """CuDNN-era files: no cell level, weight_names as fixed-length byte strings,
    CuDNN bias shapes."""
    gates = {"CuDNNLSTM": 4, "CuDNNGRU": 3}
    with h5py.File(FIXTURES / entry["file"], "r") as f:
        assert _text(f.attrs["keras_version"]).startswith("2.")
        for bi in entry["bidirectional"]:
            group = f["model_weights"][bi["name"]]
            names = [_text(n) for n in group.attrs["weight_names"]]
            assert len(names) == 6
            n, u = gates[bi["cell"]], bi["units"]
            for name in names:
                assert name.endswith(":0")
                assert "cell" not in name
                shape = group[name].shape
                role = name.rsplit("/", 1)[1][:-2]
                expected = {"kernel": (bi["input_dim"], n * u),
                            "recurrent_kernel": (u, n * u),
                            "bias": (2 * n * u,)}[role]
                assert shape == expected, name
