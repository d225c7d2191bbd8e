"""Find the Bidirectional layers of a model file and where each weight lives.

Three layouts are read (see FORMATS.md): the ``.keras`` archive and Keras 3 ``.weights.h5``
(groups named by Keras' object tracking, ``layers/bidirectional_2/forward_layer/cell/vars/0``),
and the legacy ``.h5`` layout of Keras 2 and of Keras 3's legacy writer (one group per
top-level layer, dataset order from its ``weight_names`` attribute).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py

from bilstm_cli.errors import InputError
from bilstm_cli.formats import h5safe
from bilstm_cli.formats.archive import CONFIG, METADATA, KerasArchive
from bilstm_cli.formats.keras_config import (
    MAX_CONFIG_BYTES,
    LayerEntry,
    bidirectional_settings,
    cell_settings,
    load_json,
    walk_layers,
)
from bilstm_cli.model import CellSettings, Layer, Model, PlainLayer, Weight

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
ROLES = ("kernel", "recurrent_kernel", "bias")
GATE_COUNT = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "CuDNNLSTM": 4, "CuDNNGRU": 3}
CELL_GROUP_NAMES = {"lstm_cell": "LSTM", "gru_cell": "GRU", "simple_rnn_cell": "SimpleRNN"}
MAX_GROUPS_VISITED = 200_000


def sniff(path: str) -> str:
    """``"zip"`` or ``"hdf5"``; InputError for anything that is neither or cannot be opened."""
    if not os.path.exists(path):
        raise InputError("no such file")
    if os.path.isdir(path):
        raise InputError("is a directory, not a model file")
    if not os.path.isfile(path):
        # Opening a pipe would wait for a writer forever; devices never end.
        raise InputError("is a pipe, device or socket, not a model file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] in ZIP_MAGICS:
                return "zip"
            # HDF5 allows a user block of 512, 1024, 2048… bytes before the signature.
            offset = 0
            while head == HDF5_MAGIC or offset < 1 << 20:
                if head == HDF5_MAGIC:
                    return "hdf5"
                offset = 512 if offset == 0 else offset * 2
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    break
    except PermissionError:
        raise InputError("permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})") from None
    if os.path.getsize(path) == 0:
        raise InputError("is empty")
    raise InputError("not a Keras model file (neither a .keras zip archive nor HDF5)")


def _open_h5(source: Any, key: tuple[object, ...] | None = None) -> h5py.File:
    try:
        h5safe.check_heaps_of(source, key)  # before HDF5 can loop forever on a damaged one
        return h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"the HDF5 data cannot be opened ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__


@contextmanager
def open_weights(path: str) -> Iterator[h5py.File]:
    """The HDF5 file holding a model's weights, opened read-only."""
    with _about(path):
        kind = sniff(path)
        archive = KerasArchive(path) if kind == "zip" else None
        try:
            if archive:
                f = _open_h5(archive.weights_file(), archive.weights_key)
            else:
                f = _open_h5(path, h5safe.path_identity(path))
        except BaseException:
            if archive:
                archive.close()
            raise
    try:
        yield f
    finally:
        f.close()
        if archive:
            archive.close()


@contextmanager
def _about(path: str) -> Iterator[None]:
    """Name the file in every error raised while reading it."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        # h5py reports damaged files in many ways; all of them mean the same to a user.
        raise InputError(f"{path}: damaged or unreadable model data ({_first_line(exc)})") from None


def read_weight(f: h5py.File, ref: Weight, path: str) -> Any:
    """One weight's values from an open weights file, with errors naming ``path``."""
    try:
        return h5safe.read(h5safe.dataset(f, ref.location), ref.location)
    except InputError as exc:
        raise InputError(f"{path}: {exc.message}") from None


def read_model(path: str) -> Model:
    """Everything the tool needs to know about a model file, without reading weight values."""
    with _about(path):
        if sniff(path) == "zip":
            return _read_archive(path)
        return _read_hdf5(path)


# --- .keras archives and Keras 3 weights files ----------------------------------------------


def _read_archive(path: str) -> Model:
    with KerasArchive(path) as archive:
        config = load_json(archive.read_member(CONFIG, MAX_CONFIG_BYTES), CONFIG)
        version = None
        if METADATA in archive.names:
            meta = load_json(archive.read_member(METADATA, 1 << 20), METADATA)
            if isinstance(meta, dict) and isinstance(meta.get("keras_version"), str):
                version = meta["keras_version"]
        with _open_h5(archive.weights_file(), archive.weights_key) as f:
            layers = _tracked_layers_from_config(f, config)
            rnns = _tracked_rnns_from_config(f, config)
            optimizer = ["optimizer"] if h5safe.has(f, "optimizer") else []
    return Model(
        path=path,
        format="keras",
        keras_version=version,
        layers=layers,
        config_known=True,
        weights_member="model.weights.h5",
        optimizer_groups=optimizer,
        plain_layers=rnns,
    )


def _layers_root(f: h5py.File) -> str:
    # tf-keras 2.13 named the layer list after its checkpoint dependency attribute.
    if not h5safe.has(f, "layers") and h5safe.has(f, "_layer_checkpoint_dependencies"):
        return "_layer_checkpoint_dependencies"
    return "layers"


def _tracked_layers_from_config(f: h5py.File, config: Any) -> list[Layer]:
    root_name = _layers_root(f)
    found = []
    for entry in walk_layers(config):
        if entry.class_name != "Bidirectional":
            continue
        forward, backward, merge_mode = bidirectional_settings(entry)
        base = entry.keras_path
        if root_name != "layers":
            base = base.replace("layers/", f"{root_name}/")
        base, notes = _locate_tracked(f, base, entry)
        layer = Layer(
            name=entry.display_name,
            group=base,
            merge_mode=merge_mode,
            forward=forward,
            backward=backward,
            notes=notes,
        )
        for direction, sub, settings in (
            ("forward", "forward_layer", forward),
            ("backward", "backward_layer", backward),
        ):
            layer.weights.extend(_tracked_direction(f, f"{base}/{sub}", direction, settings, layer))
        _check_directions(layer)
        found.append(layer)
    return found


def _plain_rnn_entries(config: Any) -> Iterator[tuple[LayerEntry, CellSettings]]:
    for entry in walk_layers(config):
        if entry.class_name in GATE_COUNT:
            settings = cell_settings(
                {"class_name": entry.class_name, "config": entry.config},
                f"layer '{entry.display_name}'",
            )
            yield entry, settings


def _tracked_rnns_from_config(f: h5py.File, config: Any) -> list[PlainLayer]:
    found = []
    for entry, settings in _plain_rnn_entries(config):
        base = entry.keras_path
        if _layers_root(f) != "layers":
            base = base.replace("layers/", f"{_layers_root(f)}/")
        if not h5safe.has(f, base):
            continue  # never built, so it has no weights
        layer = PlainLayer(entry.display_name, base, settings)
        layer.weights = _tracked_direction(f, base, "forward", settings, layer)
        _check_plain(layer)
        found.append(layer)
    return found


def _legacy_rnns_from_config(f: h5py.File, config: Any) -> list[PlainLayer]:
    found = []
    for entry, settings in _plain_rnn_entries(config):
        group_path = f"model_weights/{entry.h5_group}"
        if not h5safe.has(f, group_path):
            continue
        names = h5safe.attr_strings(h5safe.group(f, group_path), "weight_names")
        if entry.chain:
            names = [n for n in names if entry.name in n.split("/")[:-2]]
        if len(names) != len(_roles_for(settings)):
            continue
        layer = PlainLayer(entry.display_name, group_path, settings)
        layer.weights = _legacy_direction(f, group_path, names, "forward", settings, layer)
        _check_plain(layer)
        found.append(layer)
    return found


def _check_plain(layer: PlainLayer) -> None:
    kernel = layer.weight("kernel")
    if kernel is None or len(kernel.shape) != 2:
        raise InputError(f"layer '{layer.name}': kernel is missing or not a matrix")
    for w in layer.weights:
        want = expected_shape(layer.settings, w.role, kernel.shape[0])
        if w.shape != want:
            raise InputError(
                f"layer '{layer.name}': {w.role} has shape {_shape(w.shape)}, but a "
                f"{layer.settings.cell} of {layer.settings.units} units needs {_shape(want)}"
            )


def _vars_name(f: h5py.File, group_path: str) -> str | None:
    if not h5safe.has(f, f"{group_path}/vars"):
        return None
    return h5safe.attr_string(h5safe.group(f, f"{group_path}/vars"), "name")


def _locate_tracked(f: h5py.File, base: str, entry: LayerEntry) -> tuple[str, list[str]]:
    """The group holding a Bidirectional's weights, cross-checked against the ``name``
    attribute recent Keras versions write (older files have none, so it cannot lead)."""
    if h5safe.has(f, base):
        recorded = _vars_name(f, base)
        if recorded is None or recorded == entry.name:
            return base, []
    # The walk and the file disagree: look for the layer's recorded name among its siblings.
    parent = base.rpartition("/")[0]
    if h5safe.has(f, parent):
        for child in h5safe.group(f, parent):
            candidate = f"{parent}/{child}"
            if (
                h5safe.has(f, f"{candidate}/forward_layer")
                and _vars_name(f, candidate) == entry.name
            ):
                return candidate, [f"weights found by recorded name at '{candidate}'"]
    raise InputError(
        f"layer '{entry.display_name}': no weights where the configuration places them ('{base}')"
    )


def _numbered(g: h5py.Group) -> list[str]:
    keys = [k for k in g.keys() if k.isdigit()]
    return sorted(keys, key=int)


def _roles_for(settings: CellSettings) -> tuple[str, ...]:
    return ROLES if settings.use_bias else ROLES[:2]


def _tracked_direction(
    f: h5py.File, sub: str, direction: str, settings: CellSettings, layer: Layer
) -> list[Weight]:
    vars_path = f"{sub}/cell/vars"
    if not h5safe.has(f, vars_path):
        # Layers that are not cell-based RNNs keep their variables on the layer itself.
        if settings.cell not in GATE_COUNT and h5safe.has(f, f"{sub}/vars"):
            vars_path = f"{sub}/vars"
        else:
            raise InputError(f"layer '{layer.name}': {direction} weights missing ('{vars_path}')")
    keys = _numbered(h5safe.group(f, vars_path))
    if settings.cell not in GATE_COUNT:
        layer.notes.append(f"{settings.cell} is not a supported cell; weights listed by position")
        return [_ref(f, f"{vars_path}/{k}", direction, f"weight_{k}") for k in keys]
    roles = _roles_for(settings)
    if len(keys) != len(roles):
        raise InputError(
            f"layer '{layer.name}': {direction} {settings.cell} should have {len(roles)} weights "
            f"({', '.join(roles)}), the file has {len(keys)} at '{vars_path}'"
        )
    return [_ref(f, f"{vars_path}/{k}", direction, role) for k, role in zip(keys, roles)]


def _ref(f: h5py.File, path: str, direction: str, role: str) -> Weight:
    try:
        ds = h5safe.dataset(f, path)
    except KeyError:
        raise InputError(f"{direction} {role} weight '{path}' is missing from the file") from None
    return Weight(
        direction=direction,
        role=role,
        location=path,
        shape=tuple(int(d) for d in ds.shape),
        dtype=h5safe.dtype_name(ds),
    )


def expected_shape(settings: CellSettings, role: str, input_dim: int) -> tuple[int, ...]:
    """The shape Keras gives a weight of this cell (the Keras layout, not CuDNN's)."""
    u = settings.units
    k = GATE_COUNT[settings.cell]
    if role == "kernel":
        return (input_dim, k * u)
    if role == "recurrent_kernel":
        return (u, k * u)
    if settings.cell == "CuDNNLSTM" or settings.cell == "CuDNNGRU":
        return (2 * k * u,)
    if settings.cell == "GRU" and settings.reset_after:
        return (2, k * u)
    return (k * u,)


def _check_directions(layer: Layer) -> None:
    """Every weight's shape must fit the cell the configuration declares."""
    inputs = {}
    for direction in ("forward", "backward"):
        settings = layer.settings[direction]
        if settings.cell not in GATE_COUNT:
            continue
        kernel = layer.weight(direction, "kernel")
        if kernel is None or len(kernel.shape) != 2:
            raise InputError(f"layer '{layer.name}': {direction} kernel is missing or not a matrix")
        inputs[direction] = kernel.shape[0]
        for w in layer.weights:
            if w.direction != direction:
                continue
            want = expected_shape(settings, w.role, kernel.shape[0])
            if w.shape != want:
                raise InputError(
                    f"layer '{layer.name}': {direction} {w.role} has shape {_shape(w.shape)}, "
                    f"but a {settings.cell} of {settings.units} units needs {_shape(want)}"
                )
    if len(set(inputs.values())) > 1:
        raise InputError(
            f"layer '{layer.name}': the forward kernel takes {inputs['forward']} inputs, the "
            f"backward kernel {inputs['backward']}; both directions read the same input"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# --- HDF5 files: legacy full models, legacy weights, Keras 3 weights -------------------------


def _read_hdf5(path: str) -> Model:
    with _open_h5(path, h5safe.path_identity(path)) as f:
        version = h5safe.attr_string(f, "keras_version")
        if "model_config" in f.attrs:
            raw = h5safe.attr(f, "model_config")
            if isinstance(raw, bytes | str):
                config = load_json(raw, "model_config")
            else:
                raise InputError("the model_config attribute is not text")
            if not h5safe.has(f, "model_weights"):
                raise InputError("a model configuration but no model_weights group")
            layers = _legacy_layers_from_config(f, config)
            rnns = _legacy_rnns_from_config(f, config)
            optimizer = ["optimizer_weights"] if h5safe.has(f, "optimizer_weights") else []
            return Model(
                path, "h5", version, layers, True, optimizer_groups=optimizer, plain_layers=rnns
            )
        if "layer_names" in f.attrs:
            layers = _legacy_layers_inferred(f, "")
            notes = [
                "weights only: no configuration, so cells and settings are inferred "
                "from names and shapes (activations, merge mode unknown)"
            ]
            return Model(path, "weights.h5", version, layers, False, notes=notes)
        if h5safe.has(f, "layers") or h5safe.has(f, "vars"):
            layers = _tracked_layers_inferred(f)
            notes = [
                "weights only: no configuration, so cells and settings are inferred "
                "from group names and shapes (activations, merge mode unknown)"
            ]
            return Model(path, "weights.h5", version, layers, False, notes=notes)
    raise InputError("an HDF5 file, but not a Keras model or weights file")


def _strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _legacy_layers_from_config(f: h5py.File, config: Any) -> list[Layer]:
    found = []
    for entry in walk_layers(config):
        if entry.class_name != "Bidirectional":
            continue
        forward, backward, merge_mode = bidirectional_settings(entry)
        group_path = f"model_weights/{entry.h5_group}"
        if not h5safe.has(f, group_path):
            raise InputError(f"layer '{entry.display_name}': no weights group '{group_path}'")
        names = h5safe.attr_strings(h5safe.group(f, group_path), "weight_names")
        if entry.chain:
            # A nested model keeps all its weights in one group; pick this layer's by scope.
            names = [n for n in names if entry.name in n.split("/")[:-2]]
        layer = Layer(entry.display_name, group_path, merge_mode, forward, backward)
        counts = [len(_roles_for(s)) if s.cell in GATE_COUNT else None for s in (forward, backward)]
        if None in counts:
            half = len(names) // 2
            layer.notes.append(f"{forward.cell} is not a supported cell; weights by position")
            for i, n in enumerate(names):
                direction = "forward" if i < half else "backward"
                layer.weights.append(_ref(f, f"{group_path}/{n}", direction, f"weight_{i % half}"))
        else:
            if len(names) != sum(counts):
                raise InputError(
                    f"layer '{entry.display_name}': expected {sum(counts)} weights "
                    f"({forward.cell}, use_bias={forward.use_bias}), the file lists {len(names)}"
                )
            split = counts[0]
            for direction, chunk, settings in (
                ("forward", names[:split], forward),
                ("backward", names[split:], backward),
            ):
                layer.weights.extend(
                    _legacy_direction(f, group_path, chunk, direction, settings, layer)
                )
            _check_directions(layer)
        found.append(layer)
    return found


def _legacy_direction(
    f: h5py.File,
    group_path: str,
    names: list[str],
    direction: str,
    settings: CellSettings,
    layer: Layer,
) -> list[Weight]:
    expected = _roles_for(settings)
    named = [_strip(n).rsplit("/", 1)[-1] for n in names]
    if sorted(named) == sorted(expected):
        roles = named
    else:
        roles = list(expected)
        layer.notes.append(f"{direction} weight names not recognised; roles taken by position")
    return [_ref(f, f"{group_path}/{n}", direction, r) for n, r in zip(names, roles)]


def _legacy_layers_inferred(f: h5py.File, prefix: str) -> list[Layer]:
    found = []
    for layer_name in h5safe.attr_strings(f, "layer_names"):
        group_path = f"{prefix}{layer_name}"
        if not h5safe.has(f, group_path):
            continue
        scopes: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for n in h5safe.attr_strings(h5safe.group(f, group_path), "weight_names"):
            parts = _strip(n).split("/")
            role = parts[-1]
            if role not in ROLES or len(parts) < 2:
                continue
            if len(parts) >= 3 and parts[-2] in CELL_GROUP_NAMES:
                sub, scope = parts[-3], "/".join(parts[:-3])
            else:
                sub, scope = parts[-2], "/".join(parts[:-2])
            scopes.setdefault(scope, {}).setdefault(sub, []).append((n, role))
        for scope, subs in scopes.items():
            if len(subs) != 2:
                continue
            if not scope or scope == layer_name or scope.startswith(layer_name + "/"):
                name = scope or layer_name
            else:
                name = f"{layer_name}/{scope}"
            layer = _inferred_layer(
                f,
                name,
                group_path,
                list(subs.items()),
                lambda n, g=group_path: f"{g}/{n}",
            )
            if layer is not None:
                found.append(layer)
    return found


def _infer_settings(sub: str, shapes: dict[str, tuple[int, ...]]) -> CellSettings | None:
    rk = shapes.get("recurrent_kernel")
    if rk is None or len(rk) != 2 or rk[0] == 0 or rk[1] % rk[0]:
        return None
    units, gates = rk[0], rk[1] // rk[0]
    cell = {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}.get(gates)
    lowered = sub.lower()
    if "cu_dnn" in lowered or "cudnn" in lowered:
        cell = {4: "CuDNNLSTM", 3: "CuDNNGRU"}.get(gates)
    if cell is None:
        return None
    bias = shapes.get("bias")
    reset_after = None
    if cell == "GRU":
        reset_after = bias is not None and len(bias) == 2
    return CellSettings(
        cell=cell,
        units=units,
        activation=None,
        recurrent_activation=None,
        use_bias=bias is not None,
        reset_after=reset_after,
        go_backwards=False,
        name=sub,
    )


def _inferred_layer(
    f: h5py.File,
    name: str,
    group: str,
    subs: list[tuple[str, list[tuple[str, str]]]],
    dataset_path: Any,
) -> Layer | None:
    """A Bidirectional recognised from two sibling RNN weight sets (forward first)."""
    settings = []
    refs: list[Weight] = []
    for direction, (sub, items) in zip(("forward", "backward"), subs):
        direction_refs = [_ref(f, dataset_path(n), direction, role) for n, role in items]
        s = _infer_settings(sub, {r.role: r.shape for r in direction_refs})
        if s is None:
            return None
        if direction == "backward":
            s = CellSettings(**{**s.__dict__, "go_backwards": True})
        settings.append(s)
        refs.extend(direction_refs)
    layer = Layer(name, group, None, settings[0], settings[1], refs, config_known=False)
    layer.notes.append("no configuration: cell and units inferred from shapes")
    _check_directions(layer)
    return layer


def _tracked_layers_inferred(f: h5py.File) -> list[Layer]:
    found = []
    visited = 0
    seen = set()
    stack = [""]
    while stack:
        path = stack.pop()
        visited += 1
        if visited > MAX_GROUPS_VISITED:
            raise InputError("the weights file has too many groups to search")
        g = h5safe.group(f, path) if path else f
        key = h5safe.object_key(g)
        if key in seen:
            continue  # reached again through another hard link (a cycle or an alias)
        seen.add(key)
        children = [k for k in g.keys() if k != "vars"]
        if "forward_layer" in children and "backward_layer" in children:
            layer = _tracked_bidirectional_inferred(f, path)
            if layer is not None:
                found.append(layer)
                continue
        for child in sorted(children, reverse=True):
            # Only groups reached through hard links are searched; datasets are skipped.
            if isinstance(g.get(child, getlink=True), h5py.HardLink) and isinstance(
                g.get(child), h5py.Group
            ):
                stack.append(f"{path}/{child}" if path else child)
    return found


def _tracked_display_name(f: h5py.File, path: str) -> str:
    """``outer/inner`` from a tracked path, preferring the names recent Keras records."""
    parts = path.split("/")
    names = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] in ("layers", "_layer_checkpoint_dependencies"):
            names.append(_vars_name(f, "/".join(parts[: i + 1])) or part)
    return "/".join(names) or path


def _tracked_bidirectional_inferred(f: h5py.File, path: str) -> Layer | None:
    subs = []
    for sub in ("forward_layer", "backward_layer"):
        vars_path = f"{path}/{sub}/cell/vars"
        if not h5safe.has(f, vars_path):
            return None
        keys = _numbered(h5safe.group(f, vars_path))
        if len(keys) not in (2, 3):
            return None
        cell_name = _vars_name(f, f"{path}/{sub}/cell")
        items = [(f"{vars_path}/{k}", role) for k, role in zip(keys, ROLES)]
        subs.append((cell_name or sub, items))
    name = _tracked_display_name(f, path)
    layer = _inferred_layer(f, name, path, subs, lambda n: n)
    if layer is not None:
        recorded = [_vars_name(f, f"{path}/{s}/cell") for s in ("forward_layer", "backward_layer")]
        for r, s in zip(recorded, (layer.forward, layer.backward)):
            if r in CELL_GROUP_NAMES and CELL_GROUP_NAMES[r] != s.cell:
                raise InputError(f"layer '{name}': a {r} whose shapes fit a {s.cell}")
    return layer
