"""Every float dtype and HDF5 storage variant Keras files come in: bfloat16 (2-byte data
tagged ``dtype="bfloat16"``), float16, float64, mixed precision; chunked, compressed and
big-endian datasets. Read exactly, written back as stored, transplants cast and verified in
the target's dtype, and values a dtype cannot hold refused before any work."""

from __future__ import annotations

import io
import shutil
import warnings
import zipfile
from fractions import Fraction

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli import dtypes

DT = FIXTURES / "dtypes"
BF16 = DT / "bf16_lstm.keras"
F16 = DT / "f16_lstm.keras"
F32 = DT / "f32_lstm.keras"
F32_H5 = DT / "f32_lstm.h5"
STORAGE_VARIANTS = ["f32_lstm_gzip.h5", "f32_lstm_lzf.h5", "f32_lstm_be.h5", "f32_lstm_gzip.keras"]
ALL = sorted(p.name for p in DT.iterdir() if p.suffix in (".keras", ".h5"))


def _h5(path):
    path = str(path)
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    return h5py.File(path, "r")


def _datasets(path) -> dict[str, h5py.Dataset]:
    f = _h5(path)
    out: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = obj

    f.visititems(visit)
    return out


def _storage(ds: h5py.Dataset) -> tuple:
    return (ds.dtype.str, ds.chunks, ds.compression, ds.shuffle, ds.fletcher32, dict(ds.attrs))


def _exact_bf16(v: float) -> float:
    """The bfloat16 nearest to ``v`` (ties to even), by exact rational arithmetic."""
    f = np.float32(v)
    bits = int(np.array(f).view(np.uint32)) >> 16
    candidates = {b for b in range(bits - 2, bits + 3) if 0 <= b < 0x7F80 or 0x8000 <= b < 0xFF80}

    def value(b: int) -> float:
        return float(np.array(b << 16, dtype=np.uint32).view(np.float32))

    return value(min(candidates, key=lambda b: (abs(Fraction(value(b)) - Fraction(v)), b & 1)))


# --- the conversions -----------------------------------------------------------------------


def test_bf16_rounding_is_to_nearest_even_from_float32_and_float64():
    rng = np.random.default_rng(0)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130 + 2**-138], dtype=np.float64)
    samples = np.concatenate(
        [rng.standard_normal(300) * np.exp(rng.uniform(-60, 60, 300)), ties, ties + 2**-40]
    )
    got = dtypes.round_bf16(samples)
    assert dtypes.storage(got) == "bfloat16"
    assert [float(x) for x in got] == [_exact_bf16(float(v)) for v in samples]
    f32 = samples.astype(np.float32)
    assert [float(x) for x in dtypes.round_bf16(f32)] == [_exact_bf16(float(v)) for v in f32]
    assert float(dtypes.round_bf16(np.array([1 + 2**-8]))[0]) == 1.0  # tie to even
    assert float(dtypes.round_bf16(np.array([1 + 3 * 2**-8]))[0]) == 1 + 2**-6


def test_bf16_patterns_round_trip_and_keep_nan_and_overflow():
    every = np.arange(1 << 16, dtype=np.uint16)
    values = dtypes.decode_bf16(every)
    back = dtypes.encode_bf16(values)
    finite = np.isfinite(values)
    assert np.array_equal(back[finite], every[finite])
    assert np.isnan(dtypes.decode_bf16(dtypes.encode_bf16(np.array([np.nan], np.float32)))).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = dtypes.round_bf16(np.array([3.4e38, -3.4e38], np.float32))
    assert np.isinf(big).all()


def test_representable_edges():
    assert dtypes.representable(65519, "float16") and not dtypes.representable(65520, "float16")
    assert dtypes.representable(3.3895e38, "bfloat16")
    assert not dtypes.representable(3.4e38, "bfloat16")
    assert dtypes.representable(3.4028234e38, "float32")
    assert not dtypes.representable(1e39, "float32") and dtypes.representable(1e300, "float64")
    assert not dtypes.representable(float("inf"), "float64")


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("bf16_lstm.keras", "bfloat16"),
        ("bf16_lstm.h5", "bfloat16"),
        ("f16_lstm.keras", "float16"),
        ("f64_gru.keras", "float64"),
        ("mixed_f16_lstm.keras", "float32"),
        ("f32_lstm_be.h5", "float32"),
    ],
)
def test_weights_read_as_stored(name, dtype):
    raw = _datasets(DT / name)
    with bl.open_model(DT / name) as model:
        for w in model.layers[0].weights:
            assert w.dtype == dtype
            values = w.read()
            ds = raw[w.location]
            if dtype == "bfloat16":
                assert ds.dtype.str == "|V2"
                assert dict(ds.attrs) == ({} if name.endswith(".h5") else {"dtype": "bfloat16"})
                bits = np.asarray(ds[()]).view("<u2").astype(np.uint32) << 16
                expected = bits.view(np.float32)
            else:
                expected = np.asarray(ds[()]).astype(np.dtype(dtype))
            assert values.dtype.isnative
            assert np.array_equal(values, expected)


def test_legacy_bf16_holds_the_same_values_as_the_keras_file():
    run = run_cli("diff", BF16, DT / "bf16_lstm.h5", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["identical"] is True


def test_opaque_data_of_another_size_or_tag_stays_refused(tmp_path):
    path = tmp_path / "odd.h5"
    shutil.copyfile(DT / "bf16_lstm.h5", path)
    name = "model_weights/bi/bf16/bi/forward_lstm/lstm_cell/kernel"
    with h5py.File(path, "r+") as f:
        f[name].attrs["dtype"] = "float8_e4m3"
    run = run_cli("inspect", path)
    assert run.exit_code == 3 and "holds |V2, not floating-point weights" in run.stderr


def test_inspect_json_names_bf16():
    run = run_cli("inspect", BF16, "--json")
    assert run.exit_code == 0, run.stderr
    dts = {w["dtype"] for layer in run.json()["layers"] for w in layer["weights"]}
    assert dts == {"bfloat16"}


@pytest.mark.parametrize("variant", STORAGE_VARIANTS)
def test_storage_variants_read_and_diff_as_equal(variant):
    base = F32 if variant.endswith(".keras") else F32_H5
    run = run_cli("diff", base, DT / variant, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["identical"] is True


def test_plugin_filters_stay_refused(tmp_path):
    path = tmp_path / "plugin.h5"
    shutil.copyfile(F32_H5, path)
    with h5py.File(path, "r+") as f:
        name = "model_weights/bi/f32/bi/forward_lstm/lstm_cell/kernel"
        data = f[name][()]
        del f[name]
        f.create_dataset(name, data=data, chunks=True, compression=32001, allow_unknown_filter=True)
    run = run_cli("inspect", path)
    assert run.exit_code == 3
    assert "filter 32001" in run.stderr and "not loaded" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_init_keeps_dtype_tag_and_storage(name, tmp_path):
    src = DT / name
    out = tmp_path / ("out" + ("".join(src.suffixes[-1:])))
    run = run_cli(
        "init", src, "-o", out, "--seed", "3", "--json",
        "--init", "bias=constant:0.3", "--init", "recurrent_kernel=orthogonal",
        "--init", "kernel=uniform:-0.5,0.5",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    before, after = _datasets(src), _datasets(out)
    assert set(before) == set(after)
    for path, ds in before.items():
        assert _storage(ds) == _storage(after[path]), path
    with bl.open_model(out) as model:
        for w in model.layers[0].weights:
            values = w.read()
            if w.role == "bias":
                want = dtypes.cast(np.full(w.shape, 0.3), w.dtype)
                assert np.array_equal(values, want)
            if w.dtype == "bfloat16":  # every value exactly a bfloat16
                assert np.array_equal(dtypes.round_bf16(values), values)


def test_bf16_init_is_the_float32_draw_rounded_once(tmp_path):
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    for src, out in ((F32, a), (BF16, b)):
        run = run_cli("init", src, "-o", out, "--seed", "11", "--init", "glorot_uniform")
        assert run.exit_code == 0, run.stderr
    with bl.open_model(a) as fa, bl.open_model(b) as fb:
        for wa, wb in zip(fa.layers[0].weights, fb.layers[0].weights):
            assert np.array_equal(dtypes.round_bf16(wa.read()), wb.read())


@pytest.mark.parametrize(
    "spec, model, dtype",
    [
        ("constant:1e39", F32, "float32"),
        ("normal:stddev=1e300", F32, "float32"),
        ("constant:70000", F16, "float16"),
        ("uniform:-7e4,1", F16, "float16"),
        ("normal:stddev=12000", F16, "float16"),
        ("truncated_normal:mean=2e38,stddev=1e38", BF16, "bfloat16"),
        ("recurrent_kernel=orthogonal:gain=1e39", F16, "float16"),
    ],
)
def test_values_a_dtype_cannot_hold_are_a_usage_error(spec, model, dtype, tmp_path):
    out = tmp_path / "out.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy RuntimeWarning may escape
        run = run_cli("init", model, "-o", out, "--init", spec, "--seed", "1")
    assert run.exit_code == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert spec.removeprefix("recurrent_kernel=") in lines[0]
    assert dtype in lines[0]
    assert "Warning" not in run.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_values_just_inside_the_range_are_fine(tmp_path):
    run = run_cli("init", F16, "-o", tmp_path / "o.keras", "--init", "constant:65504")
    assert run.exit_code == 0, run.stderr


# --- transplant between dtypes ---------------------------------------------------------------


@pytest.mark.parametrize("target", [F16, BF16])
def test_transplant_into_a_narrower_dtype_casts_and_verifies(target, tmp_path):
    out = tmp_path / "out.keras"
    dtype = "float16" if target == F16 else "bfloat16"
    run = run_cli("transplant", F32, target, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] is True
    assert any(f"cast to the target's {dtype}" in n for n in doc["notes"])
    assert all(f"cast float32 → {dtype}" in c["source"] for c in doc["changes"])
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["Bidirectional forward pass"]["status"] == "passed"
    # The donor cells run on the cast values (reading the donor again would not give them);
    # the written cells, holding those values bit for bit, take their outputs.
    assert checks["Bidirectional forward pass"]["detail"] == "largest output difference 0"
    assert f"as cast to {dtype}" in checks["equals donor"]["detail"]
    with bl.open_model(F32) as donor, bl.open_model(out) as written:
        for wd, ww in zip(donor.layers[0].weights, written.layers[0].weights):
            assert ww.dtype == dtype
            assert np.array_equal(ww.read(), dtypes.cast(wd.read(), dtype))
    assert _storage(_datasets(out)[written.layers[0].weights[0].location]) == _storage(
        _datasets(target)[written.layers[0].weights[0].location]
    )


def test_partial_transplant_says_it_cast(tmp_path):
    run = run_cli("transplant", F32, F16, "-o", tmp_path / "o.keras", "--role", "kernel")
    assert run.exit_code == 0, run.stderr
    assert "bit for bit as cast to float16" in run.stdout
    assert "cast float32 → float16" in run.stdout


def test_transplant_into_a_wider_dtype_is_exact(tmp_path):
    out = tmp_path / "out.keras"
    run = run_cli("transplant", BF16, F32, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    with bl.open_model(BF16) as donor, bl.open_model(out) as written:
        for wd, ww in zip(donor.layers[0].weights, written.layers[0].weights):
            assert ww.dtype == "float32" and np.array_equal(ww.read(), wd.read())


def test_donor_value_beyond_the_target_range_is_refused_by_name(tmp_path):
    donor = tmp_path / "big.h5"
    shutil.copyfile(F32_H5, donor)
    name = "model_weights/bi/f32/bi/backward_lstm/lstm_cell/recurrent_kernel"
    with h5py.File(donor, "r+") as f:
        data = f[name][()]
        data[0, 0] = 1e5
        f[name][...] = data
    out = tmp_path / "out.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = run_cli("transplant", donor, F16, "-o", out)
    assert run.exit_code == 3, run.stderr
    assert "bi/backward recurrent_kernel" in run.stderr and "float16" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("variant", STORAGE_VARIANTS)
def test_transplant_into_storage_variants_keeps_their_storage(variant, tmp_path):
    target = DT / variant
    out = tmp_path / ("out" + target.suffix)
    run = run_cli("transplant", F16, target, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    before, after = _datasets(target), _datasets(out)
    for path, ds in before.items():
        assert _storage(ds) == _storage(after[path]), path
    with bl.open_model(F16) as donor, bl.open_model(out) as written:
        for wd, ww in zip(donor.layers[0].weights, written.layers[0].weights):
            assert np.array_equal(ww.read(), wd.read().astype(np.float32))


def test_verification_sees_a_dataset_stored_differently(tmp_path):
    from bilstm_cli.formats.compare import compare_weights

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(a, "w") as f:
        f.create_dataset("w", data=data)
    with h5py.File(b, "w") as f:
        f.create_dataset("w", data=data, chunks=(1, 4), compression="gzip")
    problems: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        compare_weights(fa, fb, {}, problems)
    assert problems == ["storage of dataset 'w' changed (chunks, filters or byte order)"]
    problems.clear()
    with h5py.File(a, "r") as fa, h5py.File(a, "r") as fb:
        compare_weights(fa, fb, {}, problems)
    assert problems == []


def test_verification_walks_a_wide_tree_and_sees_each_change_in_it(tmp_path):
    # More groups wait on the walk's stack than it keeps open; those wait as paths, and a
    # change anywhere is still found, as is an attribute on one side only.
    from bilstm_cli.formats import compare

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    width = compare._OPEN_PENDING + 36
    for path, changed in ((a, False), (b, True)):
        with h5py.File(path, "w") as f:
            for k in range(width):
                g = f.create_group(f"g{k:03d}")
                g.attrs["name"] = f"layer {k}"
                g.create_group("inner").create_dataset("w", data=np.full(3, k, np.float32))
            if changed:
                f["g097"].attrs["name"] = "renamed"
                f["g001/inner/w"][1] = -1.0
                f["g050/inner"].attrs["new"] = 1
    problems: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        seen = compare.compare_weights(fa, fb, {}, problems)
    assert sorted(problems) == [
        "attributes of 'g050/inner' changed",
        "attributes of 'g097' changed",
        "dataset 'g001/inner/w' changed but was not selected",
    ]
    assert len(seen) == width
