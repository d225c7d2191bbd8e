"""Write the benchmark models (generated on demand, never committed).

    python bench/make_model.py OUT_DIR

Keras 3 Sequential: Input(shape=(None, 64)) -> three Bidirectional(LSTM(512,
return_sequences=True)) (concat) -> Dense(10): about 14.96 M parameters, 57 MiB of
float32 weights. Files written into OUT_DIR (each skipped when it already exists):

  bench3x512.keras        the model (.keras archive)
  bench3x512.h5           the same model through Keras' legacy HDF5 writer
  bench3x512_donor.keras  same architecture and layer names, other values (transplants)
"""

from __future__ import annotations

import os
import sys
import time

FEATURES = 64
UNITS = 512
LAYERS = 3
HEAD = 10
NAME = "bench3x512"
EXPECTED_PARAMS = (
    2 * 4 * UNITS * (FEATURES + UNITS + 1)
    + (LAYERS - 1) * 2 * 4 * UNITS * (2 * UNITS + UNITS + 1)
    + 2 * UNITS * HEAD
    + HEAD
)


def build(seed: int):
    import keras
    import numpy as np

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(name=NAME)
    model.add(keras.Input(shape=(None, FEATURES), name="frames"))
    for i in range(1, LAYERS + 1):
        model.add(
            keras.layers.Bidirectional(
                keras.layers.LSTM(UNITS, return_sequences=True),
                merge_mode="concat",
                name=f"bi_lstm_{i}",
            )
        )
    model.add(keras.layers.Dense(HEAD, name="head"))
    # Random values for every weight (biases too); much faster than initializers.
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            (rng.standard_normal(w.shape, dtype=np.float32) * np.float32(0.05))
            for w in model.get_weights()
        ]
    )
    count = model.count_params()
    if count != EXPECTED_PARAMS:
        raise SystemExit(f"unexpected parameter count {count} (wanted {EXPECTED_PARAMS})")
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2 if len(argv) != 1 else 0
    out_dir = argv[0]
    os.makedirs(out_dir, exist_ok=True)
    targets = {
        "main_keras": (os.path.join(out_dir, f"{NAME}.keras"), 0),
        "main_h5": (os.path.join(out_dir, f"{NAME}.h5"), 0),
        "donor": (os.path.join(out_dir, f"{NAME}_donor.keras"), 1),
    }
    todo = {k: v for k, v in targets.items() if not os.path.exists(v[0])}
    for key, (path, _) in targets.items():
        if key not in todo:
            print(f"exists, kept: {path}")
    if not todo:
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    models = {}
    for path, seed in todo.values():
        start = time.perf_counter()
        if seed not in models:
            models[seed] = build(seed)
        model = models[seed]
        tmp = path + ".part" + (".h5" if path.endswith(".h5") else ".keras")
        model.save(tmp)
        os.replace(tmp, path)
        size = os.path.getsize(path)
        print(
            f"wrote {path}: {model.count_params():,} parameters, "
            f"{size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
