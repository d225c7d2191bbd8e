"""Oracle: Keras 3 agrees with the tool on weights in every float dtype and HDF5 storage
variant: what ``inspect`` reads is what Keras loads, and what ``init`` / ``transplant`` write
loads in Keras with exactly the intended values, in the model's own dtype."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli import dtypes

keras = pytest.importorskip("keras")

DT = FIXTURES / "dtypes"
# Keras 3.15 cannot load the bfloat16 file its own legacy .h5 writer wrote.
ALL = sorted(
    p.name for p in DT.iterdir() if p.suffix in (".keras", ".h5") and p.name != "bf16_lstm.h5"
)
EXPECTED_DTYPE = {
    "bf16_lstm.keras": "bfloat16",
    "f16_lstm.keras": "float16",
    "f64_gru.keras": "float64",
}


def _keras_weights(path) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
    """(direction, role) -> (variable dtype, values widened to float64) as Keras loads them."""
    model = keras.saving.load_model(str(path), compile=False)
    bi = model.get_layer("bi")
    out = {}
    for direction, rnn in (("forward", bi.forward_layer), ("backward", bi.backward_layer)):
        cell = rnn.cell
        roles = {
            "kernel": cell.kernel,
            "recurrent_kernel": cell.recurrent_kernel,
            "bias": cell.bias,
        }
        for role, var in roles.items():
            value = np.asarray(keras.ops.convert_to_numpy(var))
            out[direction, role] = (str(var.dtype), value.astype(np.float64))
    return out


def _tool_weights(path) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
    with bl.open_model(path) as model:
        return {
            (w.direction, w.role): (w.dtype, w.read().astype(np.float64))
            for w in model.layers[0].weights
        }


def _agree(path) -> None:
    theirs, ours = _keras_weights(path), _tool_weights(path)
    assert theirs.keys() == ours.keys()
    for key, (dtype, values) in ours.items():
        assert theirs[key][0] == dtype, (path, key)
        assert np.array_equal(theirs[key][1], values), (path, key)


@pytest.mark.parametrize("name", ALL)
def test_inspect_reads_what_keras_loads(name):
    _agree(DT / name)
    dtype = EXPECTED_DTYPE.get(name, "float32")
    assert {d for d, _ in _tool_weights(DT / name).values()} == {dtype}


@pytest.mark.parametrize("name", ALL)
def test_init_output_loads_in_keras_with_the_intended_values(name, tmp_path):
    src = DT / name
    out = tmp_path / ("out" + src.suffix)
    run = run_cli(
        "init", src, "-o", out, "--seed", "4", "--json",
        "--init", "bias=constant:0.3", "--init", "recurrent_kernel=orthogonal",
        "--init", "kernel=truncated_normal:stddev=0.4",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    _agree(out)
    dtype = EXPECTED_DTYPE.get(name, "float32")
    theirs = _keras_weights(out)
    for direction in ("forward", "backward"):
        stored, bias = theirs[direction, "bias"]
        assert stored == dtype
        # Keras' own rounding of 0.3 into the variable's dtype (ml_dtypes for bfloat16).
        want = keras.ops.convert_to_numpy(keras.ops.full(bias.shape, 0.3, dtype=dtype))
        assert np.array_equal(bias, np.asarray(want).astype(np.float64))
        assert np.array_equal(bias, dtypes.cast(np.full(bias.shape, 0.3), dtype))


@pytest.mark.parametrize(
    "target, dtype, tolerance",
    [("f16_lstm.keras", "float16", 3e-3), ("bf16_lstm.keras", "bfloat16", 3e-2)],
)
def test_transplant_from_float32_casts_and_keras_agrees(target, dtype, tolerance, tmp_path):
    donor = DT / "f32_lstm.keras"
    out = tmp_path / "out.keras"
    run = run_cli("transplant", donor, DT / target, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] is True
    forward = [c for c in doc["checks"] if c["check"] == "Bidirectional forward pass"]
    assert [c["status"] for c in forward] == ["passed"]
    _agree(out)
    written, given = _keras_weights(out), _keras_weights(donor)
    for key, (stored, values) in written.items():
        assert stored == dtype
        cast = keras.ops.convert_to_numpy(keras.ops.cast(given[key][1].astype(np.float32), dtype))
        assert np.array_equal(values, np.asarray(cast).astype(np.float64)), key
    # Keras runs both layers: the written one computes the donor's function, up to the
    # arithmetic of its narrower dtype.
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    y_donor = keras.saving.load_model(str(donor), compile=False).get_layer("bi")(x)
    y_out = keras.saving.load_model(str(out), compile=False).get_layer("bi")(x.astype(dtype))
    a = np.asarray(keras.ops.convert_to_numpy(y_donor)).astype(np.float64)
    b = np.asarray(keras.ops.convert_to_numpy(y_out)).astype(np.float64)
    assert np.max(np.abs(a - b)) < tolerance


@pytest.mark.parametrize("variant", ["f32_lstm_gzip.h5", "f32_lstm_lzf.h5", "f32_lstm_be.h5"])
def test_transplant_into_stored_variants_loads_in_keras(variant, tmp_path):
    donor = DT / "f16_lstm.keras"
    out = tmp_path / "out.h5"
    run = run_cli("transplant", donor, DT / variant, "-o", out)
    assert run.exit_code == 0, run.stderr
    _agree(out)
    written, given = _keras_weights(out), _keras_weights(donor)
    for key, (stored, values) in written.items():
        assert stored == "float32" and np.array_equal(values, given[key][1])
