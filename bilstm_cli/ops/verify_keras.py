"""``--verify keras``: the optional deep check, loading the written file with Keras itself.

This is the only module of the tool that imports Keras, and only when asked to. It loads the
staged output in safe mode (Keras 3, or tf-keras for a Keras 2 file when it is installed),
compares the weights Keras sees with those the tool wrote, and runs the model on a probe batch.
When Keras cannot load the file at all, it says why; that fails the check only if Keras can
load the input, i.e. only if writing broke something Keras relied on. :func:`require` says up
front, without importing anything, whether a Keras that can load the file is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from bilstm_cli import formats
from bilstm_cli.errors import UsageError, first_line
from bilstm_cli.formats import Session
from bilstm_cli.model import Model
from bilstm_cli.results import Check

NAME = "--verify keras"


def _first_line(exc: BaseException) -> str:
    """What Keras said, with the kind of failure: Keras' messages alone can be cryptic."""
    text = first_line(exc, 200)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """TensorFlow's C++ start-up logs go straight to file descriptor 2; keep them off it."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """TensorFlow's C++ logging off while it loads (it reads the setting once, on import);
    the variable is put back as it was afterwards."""
    saved = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_stderr():
            yield
    finally:
        if saved is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = saved


def _keras2(model: Model) -> bool:
    return (model.keras_version or "3").startswith(("1.", "2."))


def _installed(name: str) -> bool:
    """Whether the top-level module ``name`` can be imported; finding it runs none of it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(model: Model | None = None) -> None:
    """Raise :class:`~bilstm_cli.errors.UsageError` unless a Keras that can load ``model``
    is installed: Keras, or tf-keras for a Keras 2 file. With no model (not read yet), either
    will do. Cheap: nothing is imported, TensorFlow least of all."""
    if _installed("keras"):
        return
    if _installed("tf_keras"):
        if model is None or _keras2(model):
            return
        raise UsageError(
            f"{NAME} needs Keras 3 for {model.path} (tf-keras loads only Keras 2 files): "
            "pip install 'bilstm-cli[keras]'"
        )
    raise UsageError(f"{NAME} needs Keras, which is not installed: pip install 'bilstm-cli[keras]'")


def _loader(model: Model) -> tuple[str, Any]:
    with _quiet_tensorflow():
        if _keras2(model):
            try:
                import tf_keras

                return "tf-keras", tf_keras
            except ImportError:
                pass
        import keras

        return "Keras", keras


def _load(module: Any, path: str) -> Any:
    if hasattr(module, "saving") and hasattr(module.saving, "load_model"):
        return module.saving.load_model(path, compile=False, safe_mode=True)
    return module.models.load_model(path, compile=False, safe_mode=True)


def _bidirectionals(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "TimeDistributed" and hasattr(layer, "layer"):
            if type(layer.layer).__name__ == "Bidirectional":  # listed as outer/inner
                found.append((f"{prefix}{layer.name}/{layer.layer.name}", layer.layer))
        elif type(layer).__name__ == "Bidirectional":
            found.append((prefix + layer.name, layer))
        elif hasattr(layer, "layers") and hasattr(layer, "inputs"):
            found.extend(_bidirectionals(layer, prefix + layer.name + "/"))
    return found


def _cells(model: Any) -> Iterator[tuple[str, Any, str, Any]]:
    """(the tool's layer name, Bidirectional, direction, what holds the weights) for each
    direction, and for each cell of a ``StackedRNNCells`` (the tool's ``name/k``)."""
    for name, layer in _bidirectionals(model):
        for direction, sub in (
            ("forward", layer.forward_layer),
            ("backward", layer.backward_layer),
        ):
            cell = getattr(sub, "cell", sub)
            if type(cell).__name__ == "StackedRNNCells":
                for k, inner in enumerate(cell.cells):
                    yield f"{name}/{k}", layer, direction, inner
            else:
                yield name, layer, direction, cell


def _numpy(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def _flat(value: Any) -> list[Any]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return [] if value is None else [value]


def _layer_inputs(layer: Any) -> list[Any]:
    """The tensors ``layer`` is called on, in every call (a shared layer has several)."""
    try:
        return _flat(layer.input)
    except Exception:  # noqa: BLE001 - called more than once (or never): read its nodes
        found = []
        for node in getattr(layer, "_inbound_nodes", None) or []:
            found.extend(_flat(getattr(node, "input_tensors", None)))
        return found


Vocabulary = tuple[int, bool]  # the ids an input may hold: [0, input_dim), and whether 0 masks


def _merge(seen: dict[int, Vocabulary], key: int, vocabulary: Vocabulary) -> None:
    size, masks = seen.get(key, vocabulary)
    seen[key] = (min(size, vocabulary[0]), masks or vocabulary[1])


def _vocabularies(model: Any) -> dict[int, Vocabulary]:
    """For each tensor of ``model`` (by id) that an Embedding reads, directly or inside a
    nested model: the smallest vocabulary reading it, and whether any of them masks zeros."""
    seen: dict[int, Vocabulary] = {}
    for layer in getattr(model, "layers", []):
        inputs = _layer_inputs(layer)
        if type(layer).__name__ == "Embedding":
            vocabulary = (int(layer.input_dim), bool(getattr(layer, "mask_zero", False)))
            for tensor in inputs:
                _merge(seen, id(tensor), vocabulary)
        elif hasattr(layer, "layers") and hasattr(layer, "inputs"):
            inner = _vocabularies(layer)
            for outer, own in zip(inputs, _flat(layer.inputs)):
                if id(own) in inner:
                    _merge(seen, id(outer), inner[id(own)])
    return seen


def _dtype(tensor: Any) -> np.dtype[Any]:
    dtype = getattr(tensor, "dtype", None)
    try:
        return np.dtype(str(getattr(dtype, "name", None) or dtype or "float32"))
    except TypeError:  # bfloat16 and other types NumPy does not know: Keras casts floats
        return np.dtype("float32")


def _probe(model: Any) -> list[np.ndarray]:
    """One small batch that fits each input: token ids where an Embedding reads the input
    (above 0 if it masks zeros), the declared dtype, None dimensions made small."""
    rng = np.random.default_rng(0)
    vocabularies = _vocabularies(model)
    smallest = min((size for size, _ in vocabularies.values()), default=1)
    batch = []
    for tensor in model.inputs:
        shape = [d if d is not None else (2 if i == 0 else 5) for i, d in enumerate(tensor.shape)]
        dtype = _dtype(tensor)
        size, masks = vocabularies.get(id(tensor), (0, False))
        if not size and dtype.kind in "iu":  # ids that reach an Embedding by another way
            size = smallest
        if size:
            low = 1 if masks and size > 1 else 0
            batch.append(rng.integers(low, size, shape).astype(dtype))
        elif dtype.kind == "b":
            batch.append(rng.integers(0, 2, shape).astype(bool))
        else:
            batch.append(rng.standard_normal(shape).astype(dtype))
    return batch


def verify(model: Model, staged: str, session: Session) -> list[Check]:
    """Load ``staged`` with Keras and compare; returns the checks made."""
    if not model.config_known:
        why = "a weights-only file has no model for Keras to load"
        return [Check.skipped("file", NAME, why, applies=False)]
    try:
        which, module = _loader(model)
    except ImportError:
        return [
            Check.of(
                "file", NAME, False, "Keras is not installed (pip install 'bilstm-cli[keras]')"
            )
        ]
    try:
        with _quiet_stderr():
            loaded = _load(module, staged)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding itself
        reason = _first_line(exc)
        try:
            with _quiet_stderr():
                _load(module, model.path)
        except Exception as original:  # noqa: BLE001
            why = f"{which} cannot load the input either ({_first_line(original)})"
            return [Check.skipped("file", NAME, why)]
        return [
            Check.of("file", NAME, False, f"{which} loads the input but not the output: {reason}")
        ]
    checks = []
    ours = {layer.name: layer for layer in model.layers}
    mismatched = []
    compared = 0
    reader = formats.open_reader(staged, session)
    try:
        for name, _, direction, cell in _cells(loaded):
            mine = ours.get(name)
            if mine is None:
                mismatched.append(f"{name}: not found by the tool")
                continue
            for variable in cell.weights:
                role = str(getattr(variable, "path", None) or variable.name)
                role = role.replace(":0", "").rsplit("/", 1)[-1]
                ref = mine.weight(direction, role)
                if ref is None:
                    continue
                stored = reader.read(ref.location)
                compared += 1
                if not np.array_equal(_numpy(variable), stored):
                    mismatched.append(f"{name}/{direction}/{role}")
    finally:
        reader.close()
    checks.append(
        Check.of(
            "file",
            f"{NAME}: weights",
            not mismatched and compared > 0,
            f"{which} sees the written values in {compared} weights"
            if not mismatched and compared
            else "differs at " + ", ".join(mismatched[:5])
            if mismatched
            else "no weight compared",
        )
    )
    try:
        probe = _probe(loaded)
        outputs = loaded(probe if len(probe) > 1 else probe[0])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        finite = all(np.isfinite(_numpy(o)).all() for o in outputs)
        checks.append(
            Check.of(
                "file",
                f"{NAME}: probe batch",
                finite,
                "the model runs; outputs finite" if finite else "the model outputs NaN or Inf",
            )
        )
    except Exception as exc:  # noqa: BLE001
        checks.append(
            Check.of("file", f"{NAME}: probe batch", False, f"running failed: {_first_line(exc)}")
        )
    return checks
