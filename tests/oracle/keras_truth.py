"""Keras as the oracle: what Keras itself makes of a model file.

Every function here imports Keras 3 or tf_keras lazily, so importing this module
is cheap; only tests under tests/oracle/ (marked ``keras``) should call it.

* ``load(path, loader=None)``: the model as Keras loads it (cached per file state).
* ``bidirectional_truth(path)``: every Bidirectional layer with its settings and
  its weights keyed by (direction, role), as Keras holds them.
* ``run_bidirectional(path, layer_name, x)``: that layer's output on ``x``.
* ``load_weights_into(path, ...)``: load a file the way a user would (a whole model,
  or a weights-only file into the architecture it belongs to); raises on failure.
* ``cudnn_converted_truth(path)``: what tf_keras makes of a CuDNN-era file when it
  is loaded into the equivalent LSTM / GRU(reset_after=True) model.

``loader`` is ``"keras3"`` or ``"tf_keras"``. For a fixture it defaults to the
manifest's value (with its ``safe_mode`` and custom objects); for any other file it
is guessed from the Keras version recorded in the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIRECTIONS = ("forward", "backward")
ROLES = ("kernel", "recurrent_kernel", "bias")
NESTED_MODEL_CLASSES = ("Sequential", "Functional", "Model")

_models: dict[tuple, Any] = {}
_manifest: dict[str, dict] | None = None


# ---------------------------------------------------------------------------
# Manifest and helpers


def manifest() -> dict[str, dict]:
    """Manifest entries keyed by file name."""
    global _manifest
    if _manifest is None:
        doc = json.loads((FIXTURES / "manifest.json").read_text())
        _manifest = {e["file"]: e for e in doc["fixtures"]}
    return _manifest


def manifest_entry(path: str | os.PathLike) -> dict | None:
    """The manifest entry of a committed fixture, None for any other file."""
    p = Path(path).resolve()
    if p.parent != FIXTURES.resolve():
        return None
    return manifest().get(p.name)


def _custom_objects_module():
    name = "bilstm_fixture_custom_objects"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "custom_objects.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def custom_objects(loader: str) -> dict[str, Any]:
    """Every custom object the fixtures use, for the given loader."""
    module = _custom_objects_module()
    table = module.keras3_objects() if loader == "keras3" else module.tf_keras_objects()
    return module.objects_for(loader, list(table))


def _is_keras2_version(version: str | None) -> bool:
    return bool(version) and version.split(".")[0] in ("1", "2")


def guess_loader(path: str | os.PathLike) -> str:
    """``tf_keras`` for files written by Keras 2 (tf_keras), else ``keras3``."""
    path = str(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("metadata.json"))
        return "tf_keras" if _is_keras2_version(meta.get("keras_version")) else "keras3"
    import h5py

    with h5py.File(path, "r") as f:
        version = f.attrs.get("keras_version")
        if version is None and "model_weights" in f:
            version = f["model_weights"].attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode("utf8")
    return "tf_keras" if _is_keras2_version(version) else "keras3"


def _resolve(path, loader, safe_mode):
    entry = manifest_entry(path)
    if loader is None:
        loader = entry["loader"] if entry and entry["loader"] else guess_loader(path)
    if safe_mode is None:
        safe_mode = entry["safe_mode"] if entry else True
    return loader, safe_mode


def _file_key(path) -> tuple:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def to_numpy(value) -> np.ndarray:
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    try:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # not a Keras 3 tensor
        return np.asarray(value)


# ---------------------------------------------------------------------------
# Loading


def _load_model_file(path: str, loader: str, safe_mode: bool):
    if loader == "keras3":
        import keras

        return keras.saving.load_model(
            path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects(loader)
        )
    if loader == "tf_keras":
        import tf_keras

        return tf_keras.models.load_model(
            path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects(loader)
        )
    raise ValueError(f"unknown loader {loader!r}")


def load(path, loader: str | None = None, *, safe_mode: bool | None = None):
    """The model in ``path`` as Keras loads it (``compile=False``), cached as long as
    the file is unchanged. Raises whatever Keras raises on failure."""
    path = str(path)
    loader, safe_mode = _resolve(path, loader, safe_mode)
    key = (_file_key(path), loader, safe_mode)
    if key not in _models:
        _models[key] = _load_model_file(path, loader, safe_mode)
    return _models[key]


def _is_weights_only(path: str) -> bool:
    if zipfile.is_zipfile(path):
        return False
    import h5py

    with h5py.File(path, "r") as f:
        return "model_config" not in f.attrs


def load_weights_into(
    path,
    loader: str | None = None,
    *,
    architecture=None,
    safe_mode: bool | None = None,
):
    """Load ``path`` the way a user would and return the fresh (uncached) model.

    A whole-model file is loaded with ``load_model``. A weights-only file is loaded
    with ``model.load_weights`` into a fresh copy of ``architecture`` (a model file;
    for a committed fixture it defaults to the manifest's ``weights_of``), using
    that file's loader. Raises on any failure, which is the point.
    """
    path = str(path)
    if not _is_weights_only(path):
        loader, safe_mode = _resolve(path, loader, safe_mode)
        return _load_model_file(path, loader, safe_mode)
    if architecture is None:
        entry = manifest_entry(path)
        if not entry or not entry.get("weights_of"):
            raise ValueError(f"{path}: weights-only file; say which model it belongs to")
        architecture = FIXTURES / entry["weights_of"]
    architecture = str(architecture)
    loader, safe_mode = _resolve(architecture, loader, safe_mode)
    model = _load_model_file(architecture, loader, safe_mode)
    model.load_weights(path)
    return model


# ---------------------------------------------------------------------------
# Bidirectional layers


def iter_bidirectionals(model, prefix: str = ""):
    """(name, layer) for each Bidirectional, depth first in ``model.layers`` order;
    layers of nested models are named ``outer/inner``."""
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Bidirectional":
            yield prefix + layer.name, layer
        elif cls in NESTED_MODEL_CLASSES or (
            hasattr(layer, "layers") and hasattr(layer, "inputs")
        ):
            yield from iter_bidirectionals(layer, prefix + layer.name + "/")


def find_bidirectional(model, layer_name: str):
    for name, layer in iter_bidirectionals(model):
        if name == layer_name:
            return layer
    for name, layer in iter_bidirectionals(model):  # own name of a nested layer
        if name.rsplit("/", 1)[-1] == layer_name:
            return layer
    raise KeyError(f"no Bidirectional layer named {layer_name!r}")


def _activation_name(fn) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__name__", None) or str(fn)


def _role(variable) -> str:
    name = getattr(variable, "path", None) or variable.name
    role = name.rsplit("/", 1)[-1].split(":", 1)[0]
    if role not in ROLES:
        raise ValueError(f"unexpected RNN cell variable {name!r}")
    return role


def cell_weights(rnn_layer) -> dict[str, np.ndarray]:
    """``{role: array}`` for one direction, roles matched by variable name.
    CuDNN layers own their weights directly (their ``cell`` is a placeholder)."""
    cell = getattr(rnn_layer, "cell", None)
    if cell is None or not hasattr(cell, "get_weights"):
        cell = rnn_layer
    values = cell.get_weights()
    variables = cell.weights
    assert len(values) == len(variables)
    out = {}
    for var, value in zip(variables, values):
        role = _role(var)
        assert role not in out, role
        out[role] = np.asarray(value)
    return out


def describe(name: str, layer) -> dict[str, Any]:
    fwd, bwd = layer.forward_layer, layer.backward_layer
    cell = getattr(fwd, "cell", None)
    if cell is None or not hasattr(cell, "get_weights"):
        cell = fwd
    cls = type(fwd).__name__
    per_direction = {"forward": fwd, "backward": bwd}
    weights = {}
    for direction, sub in per_direction.items():
        for role, value in cell_weights(sub).items():
            weights[(direction, role)] = value
    return {
        "name": name,
        "cell": cls,
        "backward_cell": type(bwd).__name__,
        "units": int(getattr(fwd, "units", getattr(cell, "units", 0))),
        "merge_mode": layer.merge_mode,
        "use_bias": bool(getattr(cell, "use_bias", True)),
        "reset_after": bool(cell.reset_after) if cls == "GRU" else None,
        "activation": {
            d: _activation_name(getattr(getattr(s, "cell", s), "activation", None))
            for d, s in per_direction.items()
        },
        "recurrent_activation": {
            d: _activation_name(getattr(getattr(s, "cell", s), "recurrent_activation", None))
            for d, s in per_direction.items()
        },
        "go_backwards": {d: bool(s.go_backwards) for d, s in per_direction.items()},
        "return_sequences": bool(fwd.return_sequences),
        "weights": weights,
    }


def bidirectional_truth(path, loader: str | None = None) -> list[dict[str, Any]]:
    """Each Bidirectional layer of the model in ``path`` as Keras holds it.

    Keys: ``name``, ``cell`` (class of the forward layer), ``backward_cell``,
    ``units``, ``merge_mode``, ``use_bias``, ``reset_after`` (GRU, else None),
    ``activation`` / ``recurrent_activation`` / ``go_backwards`` (dicts keyed by
    direction), ``return_sequences`` and ``weights``:
    ``{(direction, role): ndarray}``. A weights-only fixture is read through
    ``load_weights_into`` with the model it belongs to.
    """
    path = str(path)
    if _is_weights_only(path):
        model = load_weights_into(path, loader)
    else:
        model = load(path, loader)
    return [describe(name, layer) for name, layer in iter_bidirectionals(model)]


def run_bidirectional(path, layer_name: str, x, loader: str | None = None):
    """Run only the Bidirectional ``layer_name`` of the model in ``path`` on ``x``
    (batch, time, features). Returns an array, or a list of arrays when the layer
    returns several (``merge_mode=None`` or ``return_state``)."""
    path = str(path)
    if _is_weights_only(path):
        model = load_weights_into(path, loader)
    else:
        model = load(path, loader)
    layer = find_bidirectional(model, layer_name)
    x = np.asarray(x, dtype="float32")
    out = layer(x)
    if isinstance(out, (list, tuple)):
        return [to_numpy(o) for o in out]
    return to_numpy(out)


# ---------------------------------------------------------------------------
# CuDNN-era files


def cudnn_converted_truth(path) -> dict[tuple[str, str, str], np.ndarray]:
    """``{(layer, direction, role): array}``: what tf_keras' ``load_weights`` makes of
    a CuDNN-era file when loading it into the same model with each CuDNNLSTM replaced
    by LSTM and each CuDNNGRU by GRU(reset_after=True)."""
    import h5py

    with h5py.File(str(path), "r") as f:
        raw = f.attrs["model_config"]
    config = json.loads(raw.decode("utf8") if isinstance(raw, bytes) else raw)
    spec = importlib.util.spec_from_file_location(
        "bilstm_fixture_make_cudnn", FIXTURES / "make_cudnn.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.plain_equivalent_tf_keras(config)
    model.load_weights(str(path))
    out = {}
    for name, layer in iter_bidirectionals(model):
        for direction, sub in (("forward", layer.forward_layer),
                               ("backward", layer.backward_layer)):
            for role, value in cell_weights(sub).items():
                out[(name, direction, role)] = value
    return out
