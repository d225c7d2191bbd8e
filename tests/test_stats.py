"""Weight statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bilstm_cli.stats import (
    STAT_KEYS,
    gate_stats,
    max_singular_value,
    orthogonality_error,
    weight_stats,
)


def test_basic_values() -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    s = weight_stats(a)
    assert set(STAT_KEYS) <= set(s)
    assert s["mean"] == 2.5
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert (s["min"], s["max"]) == (1.0, 4.0)
    assert s["l2"] == pytest.approx(math.sqrt(30))
    assert s["finite"] is True
    assert s["count"] == 4 and s["nonfinite"] == 0
    assert all(type(s[k]) is float for k in ("mean", "std", "min", "max", "l2"))


def test_nonfinite_values_are_skipped() -> None:
    a = np.array([1.0, np.nan, 3.0, np.inf, -np.inf], dtype=np.float32)
    s = weight_stats(a)
    assert s["finite"] is False
    assert s["nonfinite"] == 3
    assert s["mean"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0
    json.dumps(s, allow_nan=False)


def test_all_nonfinite_gives_none() -> None:
    s = weight_stats(np.full(3, np.nan))
    assert s["finite"] is False
    assert all(s[k] is None for k in ("mean", "std", "min", "max", "l2"))
    json.dumps(s, allow_nan=False)


def test_empty_array() -> None:
    s = weight_stats(np.zeros((0, 4), dtype=np.float32))
    assert s["finite"] is True and s["mean"] is None and s["count"] == 0


def test_float16_precision_is_float64() -> None:
    a = np.full(100_000, 0.1, dtype=np.float16)
    assert weight_stats(a)["mean"] == pytest.approx(float(np.float16(0.1)), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.one_of(
            st.floats(-1e3, 1e3, width=32),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
    )
)
def test_stats_property(a: np.ndarray) -> None:
    s = weight_stats(a)
    finite = a[np.isfinite(a)].astype(np.float64)
    json.dumps(s, allow_nan=False)
    assert s["finite"] == bool(np.isfinite(a).all())
    if finite.size:
        assert s["min"] <= s["mean"] <= s["max"] or math.isclose(s["min"], s["max"])
        assert s["std"] == pytest.approx(np.std(finite), rel=1e-9, abs=1e-9)
        assert s["l2"] == pytest.approx(np.linalg.norm(finite), rel=1e-9, abs=1e-12)


def test_orthogonality_error() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    assert orthogonality_error(q) < 1e-12
    assert orthogonality_error(2 * q) == pytest.approx(3 * math.sqrt(6))
    # Wide matrices with orthonormal rows also score zero.
    assert orthogonality_error(q[:, :4].T) < 1e-12
    assert orthogonality_error(np.eye(3)) == 0.0


def test_max_singular_value() -> None:
    m = np.diag([3.0, 1.0, 0.5])
    assert max_singular_value(m) == pytest.approx(3.0)
    r = np.random.default_rng(1).standard_normal((5, 8))
    assert max_singular_value(r) == pytest.approx(np.linalg.norm(r, 2))


def test_gate_stats_lstm_recurrent() -> None:
    u = 4
    rng = np.random.default_rng(2)
    blocks = [np.linalg.qr(rng.standard_normal((u, u)))[0] for _ in range(4)]
    rk = np.concatenate(blocks, axis=1)
    rk[:, 4:8] *= 2.0
    out = gate_stats(rk, "LSTM", "recurrent_kernel", u)
    assert [e["gate"] for e in out] == ["i", "f", "c", "o"]
    assert out[0]["orth_error"] < 1e-12
    assert out[1]["orth_error"] == pytest.approx(3 * math.sqrt(u))
    assert out[1]["max_singular"] == pytest.approx(2.0)


def test_gate_stats_bias_and_nonfinite() -> None:
    bias = np.zeros(8, dtype=np.float32)
    bias[2:4] = 1.0
    out = gate_stats(bias, "LSTM", "bias", 2)
    assert out[1]["gate"] == "f" and out[1]["mean"] == 1.0
    assert "orth_error" not in out[1]
    rk = np.eye(2, 4, dtype=np.float32)
    rk[0, 0] = np.nan
    out = gate_stats(np.concatenate([rk, rk], axis=1)[:, :6], "GRU", "recurrent_kernel", 2)
    assert out[0]["orth_error"] is None and out[0]["finite"] is False
    json.dumps(out, allow_nan=False)


def test_gate_stats_gru_reset_after_bias_and_simple_rnn() -> None:
    bias = np.arange(12, dtype=np.float32).reshape(2, 6)
    out = gate_stats(bias, "GRU", "bias", 2)
    assert [e["gate"] for e in out] == ["z", "r", "h"]
    assert out[0]["mean"] == pytest.approx(np.mean([0, 1, 6, 7]))
    out = gate_stats(np.eye(3), "SimpleRNN", "recurrent_kernel", 3)
    assert len(out) == 1 and out[0]["gate"] is None and out[0]["orth_error"] == 0.0
