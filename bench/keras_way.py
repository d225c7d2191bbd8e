"""The benchmark's baseline: each bilstm job done the ordinary way, through the Keras API.

    python bench/keras_way.py inspect MODEL
    python bench/keras_way.py init MODEL OUT          truncated normal (stddev 0.05, seed 0)
    python bench/keras_way.py recipe MODEL OUT        glorot_uniform / orthogonal / zeros, f-bias 1
    python bench/keras_way.py transplant DONOR MODEL OUT
    python bench/keras_way.py diff A B                exit 0 identical, 1 different

Every job loads whole models with ``load_model(path, compile=False)``, works on each
Bidirectional layer's ``get_weights()`` / ``set_weights()``, checks that the layer now
holds what was set, and (init, recipe, transplant) writes the model with ``model.save``.
Files written by Keras 3 (``.keras``, or ``.h5`` with keras_version 3.x) are loaded with
Keras 3; an ``.h5`` written by Keras 2 (keras_version 2.x) with tf-keras, the Keras 2 that
runs beside TensorFlow 2.16+, as a user of such a file would.

Keras and TensorFlow are imported only when a job runs: ``--help`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

TRUNCATED_STDDEV = 0.05
SEED = 0
_FRAMEWORKS: dict[str, object] = {}


def framework_for(path: str):
    """keras (Keras 3) for what Keras 3 wrote; tf_keras for an HDF5 file from Keras 2."""
    name = "keras"
    if not path.endswith(".keras"):
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
        if isinstance(version, bytes):
            version = version.decode("utf8", "replace")
        if str(version).startswith("2."):
            name = "tf_keras"
    if name not in _FRAMEWORKS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if name == "tf_keras":
            import tf_keras as module
        else:
            import keras as module
        _FRAMEWORKS[name] = module
    return _FRAMEWORKS[name]


def load(path: str):
    fw = framework_for(path)
    if fw.__name__ == "keras":
        return fw, fw.saving.load_model(path, compile=False, safe_mode=True)
    return fw, fw.models.load_model(path, compile=False)


def bidirectional_layers(fw, layers) -> list:
    """Every Bidirectional layer, top level first, then inside nested models."""
    found = []
    for layer in layers:
        if isinstance(layer, fw.layers.Bidirectional):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(bidirectional_layers(fw, layer.layers))
    return found


def weight_name(layer, variable) -> str:
    """'bi_lstm_1/forward_lstm/lstm_cell/kernel': Keras 3's path or tf-keras' name sans ':0'."""
    name = (getattr(variable, "path", None) or variable.name).split(":")[0]
    return name if name.startswith(layer.name + "/") else f"{layer.name}/{name}"


def role_of(variable) -> str:
    return (getattr(variable, "path", None) or variable.name).split(":")[0].rsplit("/", 1)[-1]


def set_and_check(layer, new: list[np.ndarray]) -> None:
    layer.set_weights(new)
    held = layer.get_weights()
    if len(held) != len(new) or not all(np.array_equal(a, b) for a, b in zip(new, held)):
        raise SystemExit(f"{layer.name}: the layer does not hold the weights just set")


def stats(a: np.ndarray) -> dict[str, object]:
    x = a.astype(np.float64)
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "l2": float(np.linalg.norm(x.ravel())),
        "finite": bool(np.isfinite(x).all()),
    }


def cmd_inspect(args) -> int:
    fw, model = load(args.model)
    layers = []
    for layer in bidirectional_layers(fw, model.layers):
        weights = [
            {
                "name": weight_name(layer, v),
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "stats": stats(a),
            }
            for v, a in zip(layer.weights, layer.get_weights())
        ]
        layers.append({"name": layer.name, "weights": weights})
    print(json.dumps({"file": args.model, "layers": layers}))
    return 0


def _seeded(fw, initializer: str, seed: int, **kwargs):
    return getattr(fw.initializers, initializer)(seed=seed, **kwargs)


def _draw(init, shape, dtype) -> np.ndarray:
    """The initializer's values as a writable NumPy array."""
    return np.array(init(shape, dtype=str(dtype)), dtype=dtype)


def cmd_init(args) -> int:
    fw, model = load(args.model)
    seed = SEED
    for layer in bidirectional_layers(fw, model.layers):
        new = []
        for a in layer.get_weights():
            init = _seeded(fw, "TruncatedNormal", seed, mean=0.0, stddev=TRUNCATED_STDDEV)
            new.append(_draw(init, a.shape, a.dtype))
            seed += 1  # a seeded Keras initializer repeats itself: one seed per weight
        set_and_check(layer, new)
    model.save(args.out)
    return 0


def cmd_recipe(args) -> int:
    fw, model = load(args.model)
    seed = SEED
    for layer in bidirectional_layers(fw, model.layers):
        new = []
        for v, a in zip(layer.weights, layer.get_weights()):
            role = role_of(v)
            if role == "kernel":
                w = _draw(_seeded(fw, "GlorotUniform", seed), a.shape, a.dtype)
            elif role == "recurrent_kernel":
                w = _draw(_seeded(fw, "Orthogonal", seed, gain=1.0), a.shape, a.dtype)
            elif role == "bias":
                w = _draw(fw.initializers.Zeros(), a.shape, a.dtype)
                cell = getattr(layer.forward_layer, "cell", None)
                if isinstance(cell, fw.layers.LSTMCell):
                    units = cell.units
                    w[..., units : 2 * units] = 1.0  # gate order i f c o: the forget gate
            else:
                w = a
            seed += 1
            new.append(w)
        set_and_check(layer, new)
    model.save(args.out)
    return 0


def cmd_transplant(args) -> int:
    dfw, donor = load(args.donor)
    donated = {layer.name: layer.get_weights() for layer in bidirectional_layers(dfw, donor.layers)}
    fw, model = load(args.model)
    moved = 0
    for layer in bidirectional_layers(fw, model.layers):
        if layer.name in donated:
            set_and_check(layer, donated[layer.name])
            moved += 1
    if not moved:
        raise SystemExit("no Bidirectional layer shares a name with the donor's")
    model.save(args.out)
    return 0


def cmd_diff(args) -> int:
    afw, a_model = load(args.a)
    bfw, b_model = load(args.b)
    a_layers = {la.name: la for la in bidirectional_layers(afw, a_model.layers)}
    b_layers = {lb.name: lb for lb in bidirectional_layers(bfw, b_model.layers)}
    identical = a_layers.keys() == b_layers.keys()
    for name in sorted(a_layers.keys() ^ b_layers.keys()):
        print(f"{name}: only in {args.a if name in a_layers else args.b}")
    for name in (n for n in a_layers if n in b_layers):
        la, lb = a_layers[name], b_layers[name]
        for v, x, y in zip(la.weights, la.get_weights(), lb.get_weights()):
            if x.shape != y.shape:
                identical = False
                print(f"{weight_name(la, v)}: shape {x.shape} vs {y.shape}")
                continue
            equal = x.dtype == y.dtype and np.array_equal(x, y)
            identical = identical and equal
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            rel = d / np.maximum(np.abs(x.astype(np.float64)), 1e-12)
            sx, sy = stats(x), stats(y)
            print(
                f"{weight_name(la, v)}: {'equal' if equal else 'differs'} max|d| {d.max():.3g} "
                f"max rel {rel.max():.3g} mean {sx['mean']:.4g}->{sy['mean']:.4g} "
                f"std {sx['std']:.4g}->{sy['std']:.4g}"
            )
    return 0 if identical else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras_way.py", description="bilstm's jobs done through the Keras API."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("inspect", help="statistics of every Bidirectional weight (JSON)")
    c.add_argument("model")
    c.set_defaults(run=cmd_inspect)
    c = sub.add_parser("init", help="truncated normal (stddev 0.05) into every weight, save")
    c.add_argument("model")
    c.add_argument("out")
    c.set_defaults(run=cmd_init)
    c = sub.add_parser("recipe", help="glorot_uniform, orthogonal, zeros, forget bias 1; save")
    c.add_argument("model")
    c.add_argument("out")
    c.set_defaults(run=cmd_recipe)
    c = sub.add_parser("transplant", help="copy the donor's Bidirectional weights, save")
    c.add_argument("donor")
    c.add_argument("model")
    c.add_argument("out")
    c.set_defaults(run=cmd_transplant)
    c = sub.add_parser("diff", help="compare every Bidirectional weight; exit 1 if any differ")
    c.add_argument("a")
    c.add_argument("b")
    c.set_defaults(run=cmd_diff)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
