"""Initialization strategies: parsing, fitting, generation and facts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli import strategies as ini
from bilstm_cli.cells.blocks import CELL_GATES, gate_blocks, gate_mask, gate_slices
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.stats import orthogonality_error
from bilstm_cli.strategies import (
    Spec,
    Target,
    WeightInfo,
    check_fit,
    describe,
    facts,
    generate,
    parse_init_option,
    parse_spec,
    parse_target,
    sampling,
)

SEED = np.random.SeedSequence(1234)
FAST = settings(max_examples=25, deadline=None)


def info_for(
    cell: str, role: str, units: int, input_dim: int = 3, reset_after: bool = True
) -> WeightInfo:
    width = max(1, len(CELL_GATES[cell])) * units
    if role == "kernel":
        shape: tuple[int, ...] = (input_dim, width)
    elif role == "recurrent_kernel":
        shape = (units, width)
    elif cell == "GRU" and reset_after:
        shape = (2, width)
    else:
        shape = (width,)
    ra = reset_after if cell == "GRU" else None
    return WeightInfo(cell=cell, role=role, shape=shape, units=units, reset_after=ra)


weights = st.builds(
    info_for,
    cell=st.sampled_from(["LSTM", "GRU", "SimpleRNN"]),
    role=st.sampled_from(["kernel", "recurrent_kernel", "bias"]),
    units=st.integers(1, 7),
    input_dim=st.integers(1, 9),
    reset_after=st.booleans(),
)

RANDOM_SPECS = [
    "uniform",
    "uniform:-0.3,0.7",
    "normal:1,0.5",
    "truncated_normal:stddev=0.2",
    "glorot_uniform",
    "glorot_normal:per_gate=true",
    "he_uniform:per_gate=true",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "pytorch_default",
]


def all_ok(spec: Spec, info: WeightInfo, a: np.ndarray, columns: object = None) -> None:
    for name, ok, detail, _ in facts(spec, info, a, columns):
        assert ok, f"{spec.text} on {info}: fact {name} failed ({detail})"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def test_parse_positional_and_keyword() -> None:
    assert parse_spec("uniform:-1,2").args == {"minval": -1.0, "maxval": 2.0}
    assert parse_spec("uniform:minval=-0.05,maxval=0.05").args == {
        "minval": -0.05,
        "maxval": 0.05,
    }
    assert parse_spec("uniform:-0.2, maxval=0.3").args == {"minval": -0.2, "maxval": 0.3}
    assert parse_spec("normal:stddev=0.5").args == {"mean": 0.0, "stddev": 0.5}
    assert parse_spec("constant:1.5").args == {"value": 1.5}
    assert parse_spec("constant:value=-2").args == {"value": -2.0}
    assert parse_spec("chrono:200").args == {"tmax": 200.0}
    assert parse_spec("orthogonal").args == {"gain": 1.0, "per_gate": True}
    assert parse_spec("orthogonal:gain=2,per_gate=false").args == {"gain": 2.0, "per_gate": False}
    assert parse_spec("glorot_uniform:per_gate=yes").args == {"per_gate": True}
    s = parse_spec("  Glorot-Uniform ")
    assert s.name == "glorot_uniform" and s.text == "Glorot-Uniform"


def test_spec_is_hashable_and_comparable() -> None:
    assert parse_spec("zeros") == parse_spec("zeros")
    assert len({parse_spec("zeros"), parse_spec("zeros")}) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("xavier", "known: zeros, ones"),
        ("constant", "needs value"),
        ("chrono", "needs tmax"),
        ("chrono:2", "above 2"),
        ("zeros:1", "takes no arguments"),
        ("uniform:a=1", "unknown argument 'a'"),
        ("uniform:1,2,3", "at most 2"),
        ("uniform:minval=1,2", "positional value"),
        ("uniform:0.1,minval=0", "given twice"),
        ("uniform:1,1", "below maxval"),
        ("normal:stddev=0", "positive"),
        ("normal:stddev=abc", "not a number"),
        ("constant:nan", "finite"),
        ("orthogonal:gain=0", "non-zero"),
        ("orthogonal:per_gate=2", "boolean"),
        ("npy:", "npy needs a file"),
        ("npz:file.npz", "array name"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_spec(text)


def test_parse_array_specs() -> None:
    assert parse_spec("npy:/tmp/a b/k.npy").args == {"path": "/tmp/a b/k.npy"}
    assert parse_spec("npy:path=x=1.npy").args == {"path": "x=1.npy"}
    assert parse_spec("npz:w.npz:kernel").args == {"path": "w.npz", "key": "kernel"}
    assert parse_spec("npz:/d:1/w.npz:k").args == {"path": "/d:1/w.npz", "key": "k"}
    assert parse_spec("npz:path=a:b.npz,key=k").args == {"path": "a:b.npz", "key": "k"}
    with pytest.raises(UsageError):
        parse_spec("npz:C:\\w.npz")


def test_parse_target() -> None:
    assert parse_target("bias") == Target("bias", None)
    assert parse_target(" recurrent_kernel[i, f] ") == Target("recurrent_kernel", ("i", "f"))
    assert parse_target("Kernel[Z,z]") == Target("kernel", ("z",))
    assert str(parse_target("bias[f]")) == "bias[f]"
    for bad in ("weights", "bias[", "bias[]", "bias[i,]", "bias f"):
        with pytest.raises(UsageError):
            parse_target(bad)


def test_parse_init_option() -> None:
    assert parse_init_option("glorot_uniform") == (Target(None, None), parse_spec("glorot_uniform"))
    t, s = parse_init_option("bias=chrono:tmax=200")
    assert t == Target("bias", None) and s.args == {"tmax": 200.0}
    t, s = parse_init_option("uniform:minval=-0.05,maxval=0.05")
    assert t.role is None and s.name == "uniform"
    t, s = parse_init_option("bias[f]=ones")
    assert t == Target("bias", ("f",)) and s.name == "ones"
    t, s = parse_init_option("kernel=npy:/x=y.npy")
    assert t.role == "kernel" and s.args == {"path": "/x=y.npy"}
    with pytest.raises(UsageError, match="unknown role 'kernal'"):
        parse_init_option("kernal=zeros")
    with pytest.raises(UsageError, match="follow a ':'"):
        parse_init_option("constant=1")


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "info", "match"),
    [
        ("orthogonal", info_for("LSTM", "bias", 2), "not the LSTM bias"),
        ("identity", info_for("LSTM", "kernel", 2, input_dim=2), "recurrent kernels only"),
        ("unit_forget_bias", info_for("GRU", "bias", 2), "LSTM bias only"),
        ("unit_forget_bias", info_for("LSTM", "kernel", 2), "LSTM bias only"),
        ("chrono:10", info_for("SimpleRNN", "bias", 2), "SimpleRNN has no gates"),
        ("chrono:10", info_for("LSTM", "recurrent_kernel", 2), "biases only"),
    ],
)
def test_check_fit_rejects(spec: str, info: WeightInfo, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_fit(parse_spec(spec), info)
    with pytest.raises(UsageError):
        generate(parse_spec(spec), info, SEED)


def test_identity_needs_square_blocks() -> None:
    odd = WeightInfo("LSTM", "recurrent_kernel", (3, 8), 2)
    with pytest.raises(UsageError, match="square"):
        check_fit(parse_spec("identity"), odd)


def test_check_fit_rejects_inconsistent_shapes() -> None:
    with pytest.raises(InputError, match="last axis"):
        check_fit(parse_spec("zeros"), WeightInfo("LSTM", "bias", (6,), 2))
    with pytest.raises(InputError, match="reset_after"):
        check_fit(parse_spec("zeros"), WeightInfo("GRU", "bias", (6,), 2, reset_after=True))
    with pytest.raises(InputError, match="unsupported"):
        check_fit(parse_spec("zeros"), WeightInfo("CuDNNLSTM", "bias", (8,), 2))


# ---------------------------------------------------------------------------------------------
# Generation properties
# ---------------------------------------------------------------------------------------------


@FAST
@given(info=weights, spec_text=st.sampled_from(RANDOM_SPECS), seed=st.integers(0, 2**32))
def test_random_strategies_shape_facts_and_determinism(
    info: WeightInfo, spec_text: str, seed: int
) -> None:
    spec = parse_spec(spec_text)
    a = generate(spec, info, np.random.SeedSequence(seed))
    assert a.shape == info.shape and a.dtype == np.float32
    all_ok(spec, info, a)
    b = generate(spec, info, np.random.SeedSequence(seed))
    np.testing.assert_array_equal(a, b)
    if a.size >= 4:
        c = generate(spec, info, np.random.SeedSequence(seed + 1))
        assert not np.array_equal(a, c)
    assert "\n" not in describe(spec, info)


@FAST
@given(info=weights, seed=st.integers(0, 2**32))
def test_every_strategy_fits_or_refuses_cleanly(info: WeightInfo, seed: int) -> None:
    names = [n for n in ini.STRATEGY_USAGE if n not in ("npy", "npz")]
    for name in names:
        text = {"constant": "constant:0.25", "chrono": "chrono:50"}.get(name, name)
        spec = parse_spec(text)
        try:
            check_fit(spec, info)
        except UsageError:
            continue
        a = generate(spec, info, np.random.SeedSequence(seed))
        assert a.shape == info.shape
        all_ok(spec, info, a)
        assert "\n" not in describe(spec, info)


@FAST
@given(
    cell=st.sampled_from(["LSTM", "GRU", "SimpleRNN"]),
    units=st.integers(1, 8),
    rows=st.integers(1, 12),
    gain=st.sampled_from([1.0, 0.5, -2.0]),
    seed=st.integers(0, 2**32),
)
def test_orthogonal_blocks(cell: str, units: int, rows: int, gain: float, seed: int) -> None:
    info = WeightInfo(cell, "kernel", (rows, max(1, len(CELL_GATES[cell])) * units), units)
    a = generate(parse_spec(f"orthogonal:gain={gain}"), info, np.random.SeedSequence(seed))
    for _, sl in gate_blocks(cell, units):
        assert orthogonality_error(a[:, sl].astype(np.float64) / gain) < 1e-5


def test_orthogonal_whole_matrix_is_keras_like() -> None:
    info = info_for("LSTM", "recurrent_kernel", 6)
    a = generate(parse_spec("orthogonal:per_gate=false"), info, SEED).astype(np.float64)
    # (u, 4u): rows orthonormal, gate blocks not orthogonal.
    assert np.allclose(a @ a.T, np.eye(6), atol=1e-5)
    assert orthogonality_error(a[:, :6]) > 0.1
    spec = parse_spec("orthogonal:per_gate=false")
    assert [f[0] for f in facts(spec, info, a, gate_mask("LSTM", 6, ["f"]))] == ["finite"]


@pytest.mark.parametrize("shape", [(512, 512), (300, 100), (12, 3), (1, 1)])
def test_orthogonal_factorization_matches_numpys_qr_bit_for_bit(shape, monkeypatch) -> None:
    from bilstm_cli.strategies import orthogonal

    draws = np.random.default_rng(shape[0]).standard_normal(shape)
    q, r = np.linalg.qr(draws)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    expected = q * signs
    np.testing.assert_array_equal(orthogonal._orthogonal_matrix(*shape, draws.copy()), expected)
    # Without NumPy's LAPACK functions under their private name: np.linalg.qr, the same bits.
    monkeypatch.setattr(np.linalg, "_umath_linalg", None)
    np.testing.assert_array_equal(orthogonal._orthogonal_matrix(*shape, draws.copy()), expected)


def test_identity() -> None:
    info = info_for("GRU", "recurrent_kernel", 3)
    a = generate(parse_spec("identity:0.5"), info, SEED)
    for _, sl in gate_blocks("GRU", 3):
        np.testing.assert_array_equal(a[:, sl], 0.5 * np.eye(3))


def test_unit_forget_bias_and_keras_default_bias() -> None:
    info = info_for("LSTM", "bias", 3)
    expected = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    np.testing.assert_array_equal(generate(parse_spec("unit_forget_bias"), info, SEED), expected)
    np.testing.assert_array_equal(generate(parse_spec("keras_default"), info, SEED), expected)
    for ra in (True, False):
        gru = info_for("GRU", "bias", 3, reset_after=ra)
        assert not generate(parse_spec("keras_default"), gru, SEED).any()


def test_keras_default_kernels() -> None:
    k = info_for("LSTM", "kernel", 4, input_dim=5)
    a = generate(parse_spec("keras_default"), k, SEED)
    assert np.abs(a).max() <= math.sqrt(6 / (5 + 16))
    r = info_for("LSTM", "recurrent_kernel", 4)
    b = generate(parse_spec("keras_default"), r, SEED).astype(np.float64)
    assert np.allclose(b @ b.T, np.eye(4), atol=1e-5)
    assert "whole matrix" in describe(parse_spec("keras_default"), r)


@FAST
@given(units=st.integers(1, 10), tmax=st.floats(2.5, 1e4), seed=st.integers(0, 2**32))
def test_chrono_lstm(units: int, tmax: float, seed: int) -> None:
    info = info_for("LSTM", "bias", units)
    a = generate(parse_spec(f"chrono:tmax={tmax}"), info, np.random.SeedSequence(seed))
    s = gate_slices("LSTM", units)
    f = a[s["f"]].astype(np.float64)
    assert (f >= 0).all() and (f <= math.log(tmax - 1) + 1e-6).all()
    np.testing.assert_array_equal(a[s["i"]], -a[s["f"]])
    assert not a[s["c"]].any() and not a[s["o"]].any()


@pytest.mark.parametrize("reset_after", [True, False])
def test_chrono_gru(reset_after: bool) -> None:
    info = info_for("GRU", "bias", 50, reset_after=reset_after)
    spec = parse_spec("chrono:tmax=100")
    a = generate(spec, info, SEED)
    z = gate_slices("GRU", 50)["z"]
    row = a[0] if reset_after else a
    assert (row[z] >= 0).all() and (row[z] <= math.log(99) + 1e-6).all() and row[z].std() > 0
    rest = a.copy()
    if reset_after:
        rest[0, z] = 0
    else:
        rest[z] = 0
    assert not rest.any()
    all_ok(spec, info, a)
    assert "update gate z" in describe(spec, info)


def test_pytorch_default_bound() -> None:
    info = info_for("GRU", "recurrent_kernel", 16)
    a = generate(parse_spec("pytorch_default"), info, SEED)
    assert np.abs(a).max() <= 0.25 and np.abs(a).max() > 0.2


# ---------------------------------------------------------------------------------------------
# Moments on large draws
# ---------------------------------------------------------------------------------------------

BIG = WeightInfo("LSTM", "kernel", (256, 4096), 1024)


@pytest.mark.parametrize(
    ("text", "mean", "std"),
    [
        ("uniform:-0.5,1.5", 0.5, 2 / math.sqrt(12)),
        ("normal:0.3,2", 0.3, 2.0),
        ("truncated_normal:0,1", 0.0, ini.TRUNCATED_NORMAL_STD),
        ("glorot_uniform", 0.0, math.sqrt(2 / (256 + 4096))),
        ("glorot_normal", 0.0, math.sqrt(2 / (256 + 4096))),
        ("he_uniform", 0.0, math.sqrt(2 / 256)),
        ("he_normal", 0.0, math.sqrt(2 / 256)),
        ("lecun_uniform", 0.0, math.sqrt(1 / 256)),
        ("lecun_normal", 0.0, math.sqrt(1 / 256)),
        ("glorot_normal:per_gate=true", 0.0, math.sqrt(2 / (256 + 1024))),
        ("pytorch_default", 0.0, (1 / 32) / math.sqrt(3)),
    ],
)
def test_moments(text: str, mean: float, std: float) -> None:
    a = generate(parse_spec(text), BIG, SEED).astype(np.float64)
    assert a.mean() == pytest.approx(mean, abs=5 * std / math.sqrt(a.size))
    assert a.std() == pytest.approx(std, rel=3e-3)


def test_per_gate_fans_differ_per_block() -> None:
    info = WeightInfo("LSTM", "kernel", (64, 4 * 256), 256)
    a = generate(parse_spec("he_uniform:per_gate=true"), info, SEED)
    assert np.abs(a).max() <= math.sqrt(6 / 64) * (1 + 1e-6)
    b = generate(parse_spec("glorot_uniform:per_gate=true"), info, SEED)
    assert np.abs(b).max() <= math.sqrt(6 / (64 + 256)) * (1 + 1e-6)
    assert np.abs(b).max() > math.sqrt(6 / (64 + 1024))


# ---------------------------------------------------------------------------------------------
# Streams, chunks and threads
# ---------------------------------------------------------------------------------------------


@FAST
@given(
    chunk=st.integers(1, 40),
    workers=st.integers(1, 4),
    spec_text=st.sampled_from(["truncated_normal", "glorot_uniform:per_gate=true", "normal"]),
    rows=st.integers(1, 9),
)
def test_thread_count_does_not_change_values(
    chunk: int, workers: int, spec_text: str, rows: int
) -> None:
    info = WeightInfo("GRU", "kernel", (rows, 9), 3)
    spec = parse_spec(spec_text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "CHUNK_SIZE", chunk)
        mp.setattr(sampling, "WORKERS", 1)
        one = generate(spec, info, SEED)
        mp.setattr(sampling, "WORKERS", workers)
        many = generate(spec, info, SEED)
    np.testing.assert_array_equal(one, many)
    all_ok(spec, info, many)


@FAST
@given(chunk=st.integers(1, 30), rows=st.integers(1, 7), seed=st.integers(0, 1000))
def test_per_column_scaling_across_chunk_boundaries(chunk: int, rows: int, seed: int) -> None:
    """Chunks start mid-row: the per-column scale must still land on the right columns."""
    shape = (rows, 8)
    scale = np.arange(1, 9, dtype=np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "CHUNK_SIZE", chunk)
        ss = np.random.SeedSequence(seed)
        base = sampling.draw("uniform", shape, ss, np.dtype(np.float32))
        scaled = sampling.draw(
            "uniform", shape, ss, np.dtype(np.float32), scale=scale, shift=-scale
        )
    np.testing.assert_array_equal(scaled, base * scale - scale)


def test_seed_sequence_is_not_mutated() -> None:
    ss = np.random.SeedSequence(7, spawn_key=(1, 2))
    a = generate(parse_spec("orthogonal"), info_for("LSTM", "recurrent_kernel", 4), ss)
    assert ss.n_children_spawned == 0
    b = generate(parse_spec("orthogonal"), info_for("LSTM", "recurrent_kernel", 4), ss)
    np.testing.assert_array_equal(a, b)


def test_large_array_uses_several_chunks_deterministically() -> None:
    info = WeightInfo("SimpleRNN", "kernel", (3 * 1024 + 5, 512), 512)
    spec = parse_spec("truncated_normal:stddev=0.1")
    a = generate(spec, info, SEED)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "WORKERS", 1)
        b = generate(spec, info, SEED)
    np.testing.assert_array_equal(a, b)
    # Chunks draw from different streams.
    n = ini.CHUNK_SIZE
    flat = a.reshape(-1)
    assert not np.array_equal(flat[:1000], flat[n : n + 1000])
    all_ok(spec, info, a)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_dtypes(dtype: type) -> None:
    info = info_for("LSTM", "recurrent_kernel", 5)
    for text in ("orthogonal", "truncated_normal", "unit_forget_bias", "glorot_uniform"):
        spec = parse_spec(text)
        tgt = info if text != "unit_forget_bias" else info_for("LSTM", "bias", 5)
        a = generate(spec, tgt, SEED, dtype=dtype)
        assert a.dtype == dtype and a.shape == tgt.shape
        all_ok(spec, tgt, a)


# ---------------------------------------------------------------------------------------------
# Facts catch what is wrong
# ---------------------------------------------------------------------------------------------


def test_facts_detect_violations() -> None:
    info = info_for("LSTM", "recurrent_kernel", 3)
    orth = parse_spec("orthogonal")
    bad = np.ones(info.shape, dtype=np.float32)
    assert not dict((n, ok) for n, ok, _, _ in facts(orth, info, bad))["orthogonal blocks"]
    z = np.zeros(info.shape, dtype=np.float32)
    z[0, 0] = np.nan
    f = facts(parse_spec("zeros"), info, z)
    assert f[0][0] == "finite" and not f[0][1] and "1 non-finite" in f[0][2]
    u = np.full(info.shape, 0.2, dtype=np.float32)
    (_, (_, ok, detail, _)) = facts(parse_spec("uniform:-0.1,0.1"), info, u)
    assert not ok and "found" in detail
    bias = info_for("LSTM", "bias", 3)
    ufb = generate(parse_spec("unit_forget_bias"), bias, SEED)
    ufb[4] = 0.5
    assert not all(ok for _, ok, _, _ in facts(parse_spec("unit_forget_bias"), bias, ufb))


def test_facts_respect_columns() -> None:
    info = info_for("LSTM", "bias", 2)
    a = np.array([9, 9, 1, 1, 9, 9, 9, 9], dtype=np.float32)
    assert all(ok for _, ok, _, _ in facts(parse_spec("ones"), info, a, gate_mask("LSTM", 2, "f")))
    assert all(ok for _, ok, _, _ in facts(parse_spec("ones"), info, a, np.array([2, 3])))
    assert not all(ok for _, ok, _, _ in facts(parse_spec("ones"), info, a, None))


# ---------------------------------------------------------------------------------------------
# Array files
# ---------------------------------------------------------------------------------------------


def test_npy_and_npz(tmp_path: Path) -> None:
    info = info_for("LSTM", "kernel", 2, input_dim=3)
    arr = np.arange(24, dtype=np.float32).reshape(3, 8) / 7
    np.save(tmp_path / "k.npy", arr)
    np.savez(tmp_path / "w.npz", kernel=arr, other=np.zeros(3))
    a = generate(parse_spec(f"npy:{tmp_path / 'k.npy'}"), info, SEED)
    np.testing.assert_array_equal(a, arr)
    b = generate(parse_spec(f"npz:{tmp_path / 'w.npz'}:kernel"), info, SEED)
    np.testing.assert_array_equal(b, arr)
    spec = parse_spec(f"npy:{tmp_path / 'k.npy'}")
    assert describe(spec, info).startswith("exact array from")
    all_ok(spec, info, a)


def test_array_file_errors(tmp_path: Path) -> None:
    info = info_for("LSTM", "kernel", 2, input_dim=3)
    np.save(tmp_path / "small.npy", np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(UsageError, match=r"\(2, 8\).*\(3, 8\)"):
        check_fit(parse_spec(f"npy:{tmp_path / 'small.npy'}"), info)
    with pytest.raises(InputError, match="cannot read"):
        check_fit(parse_spec(f"npy:{tmp_path / 'missing.npy'}"), info)
    np.savez(tmp_path / "w.npz", a=np.zeros((3, 8)))
    with pytest.raises(UsageError, match="no array 'b'; it holds a"):
        check_fit(parse_spec(f"npz:{tmp_path / 'w.npz'}:b"), info)
    with pytest.raises(UsageError, match="npz archive"):
        check_fit(parse_spec(f"npy:{tmp_path / 'w.npz'}"), info)
    with pytest.raises(UsageError, match="not a .npz archive"):
        check_fit(parse_spec(f"npz:{tmp_path / 'small.npy'}:a"), info)
    with pytest.raises(InputError, match="cannot read"):
        check_fit(parse_spec(f"npz:{tmp_path / 'missing.npz'}:a"), info)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError):
        check_fit(
            parse_spec(f"npy:{tmp_path / 'obj.npy'}"), WeightInfo("SimpleRNN", "bias", (1,), 1)
        )
    np.save(tmp_path / "c.npy", np.zeros((3, 8), dtype=np.complex64))
    with pytest.raises(UsageError, match="real numbers"):
        check_fit(parse_spec(f"npy:{tmp_path / 'c.npy'}"), info)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(InputError):
        check_fit(parse_spec(f"npy:{tmp_path / 'junk.npy'}"), info)


def test_bfloat16_facts() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    for text, tgt in (
        ("orthogonal", info_for("LSTM", "recurrent_kernel", 16)),
        ("constant:0.1", info_for("GRU", "bias", 4)),
        ("chrono:100", info_for("LSTM", "bias", 8)),
        ("he_normal", info_for("LSTM", "kernel", 8, input_dim=5)),
    ):
        spec = parse_spec(text)
        a = generate(spec, tgt, SEED, dtype=bf16)
        assert a.dtype == bf16
        all_ok(spec, tgt, a)
    bad = np.array([1.0, np.nan], dtype=bf16)
    assert not facts(parse_spec("ones"), WeightInfo("SimpleRNN", "bias", (2,), 2), bad)[0][1]


@pytest.mark.parametrize(
    "text", ["truncated_normal:stddev=0.2", "uniform:-0.3,0.7", "glorot_uniform:per_gate=true"]
)
@pytest.mark.parametrize("damage", ["too_big", "too_small", "nan"])
def test_bounds_fact_fails_on_a_value_outside(text, damage):
    spec = parse_spec(text)
    info = info_for("LSTM", "kernel", units=4, input_dim=5)
    a = generate(spec, info, SEED, np.dtype(np.float32))
    all_ok(spec, info, a)
    # One value, in the last gate block's last column, beyond what the strategy can draw.
    a[2, -1] = {"too_big": 10.0, "too_small": -10.0, "nan": np.nan}[damage]
    found = {name: (ok, detail) for name, ok, detail, _ in facts(spec, info, a)}
    assert found["within bounds"][0] is False
    assert "found values in" in found["within bounds"][1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 1_000_001])
def test_normal_sampler_is_standard_normal(dtype, size) -> None:
    """The Box–Muller sampler behind every normal strategy: the empirical distribution
    against the normal CDF (a Kolmogorov–Smirnov bound), kurtosis, and no correlation between
    the two draws made from one pair of uniforms."""
    out = np.full(size, np.nan, dtype=dtype)
    sampling.standard_normal(np.random.Generator(np.random.SFC64(5)), out)
    assert np.isfinite(out).all()
    if size < 1000:
        return
    z = np.sort(out.astype(np.float64))
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z[:: size // 2000]])
    empirical = (np.arange(size)[:: size // 2000] + 0.5) / size
    assert np.abs(cdf - empirical).max() < 1.63 / math.sqrt(size) * 2  # far beyond 1% KS level
    kurtosis = float(np.mean(z**4) / np.mean(z**2) ** 2)
    assert kurtosis == pytest.approx(3.0, abs=0.03)
    half = (size + 1) // 2
    pairs = np.corrcoef(out[: size - half].astype(np.float64), out[half:].astype(np.float64))
    assert abs(pairs[0, 1]) < 5 / math.sqrt(size // 2)
    assert np.mean(np.abs(z) > 2.0) == pytest.approx(0.0455, abs=0.002)


@given(
    count=st.integers(1, 3000),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_uniforms_are_numpys_own(count: int, dtype: type, seed: int) -> None:
    """The uniforms made from raw outputs are the bits NumPy's own ``random`` gives, for odd
    and even counts, and a second draw goes on where NumPy's would (after even float32
    counts, the only ones drawn before another)."""
    ours, theirs = (np.random.Generator(np.random.SFC64(seed)) for _ in range(2))
    for n in (count + count % 2, count):  # an even draw, then any
        got = np.empty(n, dtype=dtype)
        sampling.uniforms(ours, got)
        np.testing.assert_array_equal(got, theirs.random(n, dtype=dtype))


@given(count=st.integers(1, 2000), dtype=st.sampled_from([np.float32, np.float64]))
def test_normals_draw_the_radii_then_the_angles(count: int, dtype: type) -> None:
    """Box–Muller takes the radii's uniforms first from the stream, then the angles', as
    NumPy's ``random`` would draw them one after the other."""
    ours, theirs = (np.random.Generator(np.random.SFC64(99)) for _ in range(2))
    got = np.empty(count, dtype=dtype)
    sampling.standard_normal(ours, got)
    half = (count + 1) // 2
    radius = np.sqrt(dtype(-2.0) * np.log(dtype(1.0) - theirs.random(half, dtype=dtype)))
    angle = theirs.random(half, dtype=dtype) * dtype(2.0 * math.pi)
    want = np.concatenate([np.cos(angle) * radius, (np.sin(angle) * radius)[: count - half]])
    np.testing.assert_array_equal(got, want)
