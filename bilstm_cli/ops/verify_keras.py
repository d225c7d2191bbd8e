"""``--verify keras``: the optional deep check, loading the written file with Keras itself.

This is the only module of the tool that imports Keras, and only when asked to. It loads the
staged output in safe mode (Keras 3, or tf-keras for a Keras 2 file when it is installed),
compares the weights Keras sees with those the tool wrote, and runs the model on a probe batch.
When Keras cannot load the file at all, it says why; that fails the check only if Keras can
load the input, i.e. only if writing broke something Keras relied on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from bilstm_cli import formats
from bilstm_cli.errors import first_line
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


def _loader(model: Model) -> tuple[str, Any]:
    with _quiet_tensorflow():
        if (model.keras_version or "3").startswith(("1.", "2.")):
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
        if type(layer).__name__ == "Bidirectional":
            found.append((prefix + layer.name, layer))
        elif hasattr(layer, "layers") and hasattr(layer, "inputs"):
            found.extend(_bidirectionals(layer, prefix + layer.name + "/"))
    return found


def _numpy(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def _probe(model: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    batch = []
    for tensor in model.inputs:
        shape = [d if d is not None else (2 if i == 0 else 5) for i, d in enumerate(tensor.shape)]
        dtype = str(getattr(tensor, "dtype", "float32"))
        if "int" in dtype:
            batch.append(np.zeros(shape, dtype="int32"))
        else:
            batch.append(rng.standard_normal(shape).astype("float32"))
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
        for name, layer in _bidirectionals(loaded):
            mine = ours.get(name)
            if mine is None:
                mismatched.append(f"{name}: not found by the tool")
                continue
            for direction, sub in (
                ("forward", layer.forward_layer),
                ("backward", layer.backward_layer),
            ):
                for variable in sub.cell.weights if hasattr(sub, "cell") else sub.weights:
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
        outputs = loaded(_probe(loaded) if len(loaded.inputs) > 1 else _probe(loaded)[0])
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
