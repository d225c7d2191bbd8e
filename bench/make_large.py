"""Write the large benchmark model (generated on demand, never committed).

    python bench/make_large.py OUT_DIR

Keras 3 Sequential: Input(shape=(None,), int32) -> Embedding(1,000,000, 500) -> two
Bidirectional(LSTM(1024, return_sequences=True)) (concat) -> Dense(10). About 2 GB, almost
all of it the embedding, a layer the tool never changes: it shows how the time and memory of
a job grow with the parts of a file the job does not need. Written to OUT_DIR/big1m.keras
(skipped when it exists), with its twin OUT_DIR/big1k.keras: the same two LSTM layers beside
a 1,000-row embedding (about 150 MB), to tell what a job costs for the layers it reads from
what it costs for the rest of the file.
"""

from __future__ import annotations

import os
import sys
import time

VOCAB = 1_000_000
EMBED = 500
UNITS = 1024
LAYERS = 2
HEAD = 10
NAME = "big1m"
TWIN = ("big1k", 1_000)


def build(seed: int, name: str = NAME, vocab: int = VOCAB):
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(None,), dtype="int32", name="tokens"))
    model.add(keras.layers.Embedding(vocab, EMBED, name="embedding"))
    for i in range(1, LAYERS + 1):
        model.add(
            keras.layers.Bidirectional(
                keras.layers.LSTM(UNITS, return_sequences=True),
                merge_mode="concat",
                name=f"bi_lstm_{i}",
            )
        )
    model.add(keras.layers.Dense(HEAD, name="head"))
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2 if len(argv) != 1 else 0
    out_dir = argv[0]
    os.makedirs(out_dir, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    for name, vocab in ((NAME, VOCAB), TWIN):
        path = os.path.join(out_dir, f"{name}.keras")
        if os.path.exists(path):
            print(f"exists, kept: {path}")
            continue
        start = time.perf_counter()
        model = build(0, name, vocab)
        tmp = path + ".part.keras"
        model.save(tmp)
        os.replace(tmp, path)
        print(
            f"wrote {path}: {model.count_params():,} parameters, "
            f"{os.path.getsize(path) / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
