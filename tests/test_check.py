"""``bilstm check`` / ``bl.check``: planted faults are named at their place and fail; trained
models pass; thresholds, severities and odd files behave as documented."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, fixture_entries, fixture_ids

import bilstm_cli as bl
from bilstm_cli.errors import UsageError
from bilstm_cli.findings import RULES, resolve, thresholds_from
from bilstm_cli.health.linalg import spectral_radius, top_singular
from bilstm_cli.health.rules import timescales

TRAINED = FIXTURES / "check" / "trained_lstm_gru.h5"
PREFIX = "model_weights/{layer}/{layer}/{direction}_{cell}/{cell}_cell/{role}"
U = 8  # units of both layers of the trained fixture


def ds(layer: str, direction: str, role: str) -> str:
    cell = "lstm" if layer == "bi_lstm" else "gru"
    return PREFIX.format(layer=layer, direction=direction, cell=cell, role=role)


@pytest.fixture
def planted(tmp_path):
    """A copy of the trained model, changed by ``plant(edit)`` with h5py; returns the path."""

    def plant(edit):
        path = tmp_path / "planted.h5"
        shutil.copyfile(TRAINED, path)
        with h5py.File(path, "r+") as f:
            edit(f)
        return str(path)

    return plant


def places(result, code):
    return [(f.layer, f.direction, f.role, f.gate) for f in result.findings if f.code == code]


def test_trained_models_pass():
    for name in ("check/trained_lstm_gru.keras", "check/trained_lstm_gru.h5"):
        result = bl.check(str(FIXTURES / name), fail_on="warning")
        assert result.ok and result.findings == [], name
        assert len(result.blocks) == 2 * (4 + 1) + 2 * (3 + 1)  # gate blocks + time scales
    # The older trained fixtures, Keras 3 and Keras 2 (tf.keras with Adam state), too.
    for name in ("k3_trained_adam.keras", "k2_trained_adam.h5"):
        assert bl.check(str(FIXTURES / name), fail_on="warning").findings == [], name


def test_nan_is_named_at_its_gate(planted):
    def edit(f):
        d = f[ds("bi_lstm", "forward", "recurrent_kernel")]
        a = d[()]
        a[2, U + 3] = np.nan  # gate f is the second block of 8 columns
        a[4, U + 5] = np.inf
        d[...] = a

    result = bl.check(planted(edit))
    assert not result.ok
    assert places(result, "nonfinite") == [("bi_lstm", "forward", "recurrent_kernel", "f")]
    (finding,) = [f for f in result.findings if f.code == "nonfinite"]
    assert finding.value == 2 and "1 NaN" in finding.detail and "(2, 11)" in finding.detail
    assert finding.severity == "error"
    # The spectrum of that weight cannot be judged and says so.
    assert any(s.role == "recurrent_kernel" and "NaN" in s.why for s in result.skipped)


def test_recurrent_block_scaled_by_ten_explodes(planted):
    def edit(f):
        d = f[ds("bi_gru", "backward", "recurrent_kernel")]
        a = d[()]
        a[:, U : 2 * U] *= 10  # gate r
        d[...] = a

    result = bl.check(planted(edit))
    assert not result.ok
    expected = [("bi_gru", "backward", "recurrent_kernel", "r")]
    assert places(result, "recurrent.exploding") == expected
    (finding,) = [f for f in result.findings if f.code == "recurrent.exploding"]
    assert finding.value > 8 and finding.threshold == 8
    # A higher threshold lets it pass.
    raised = bl.check(result.file, thresholds={"recurrent.exploding": {"max_singular": 100}})
    assert places(raised, "recurrent.exploding") == []


def test_forget_bias_minus_ten_has_no_memory(planted):
    def edit(f):
        d = f[ds("bi_lstm", "backward", "bias")]
        a = d[()]
        a[U : 2 * U] = -10.0
        d[...] = a

    result = bl.check(planted(edit))
    assert not result.ok
    assert places(result, "timescale.short") == [("bi_lstm", "backward", "bias", "f")]
    (finding,) = [f for f in result.findings if f.code == "timescale.short"]
    assert finding.value == 1.0 and "8 of 8 units" in finding.detail


def test_gru_update_bias_saturated_open_is_a_warning(planted):
    def edit(f):
        d = f[ds("bi_gru", "forward", "bias")]
        a = d[()]
        a[:, 0:U] = 12.0  # both rows of the z block: 24 in all
        d[...] = a

    path = planted(edit)
    result = bl.check(path)
    assert result.ok  # a warning does not reach --fail-on error
    assert ("bi_gru", "forward", "bias", "z") in places(result, "timescale.long")
    assert ("bi_gru", "forward", "bias", "z") in places(result, "units.saturated")
    assert not bl.check(path, fail_on="warning").ok


def test_zeroed_unit_is_dead(planted):
    def edit(f):
        for role in ("kernel", "recurrent_kernel", "bias"):
            d = f[ds("bi_gru", "forward", role)]
            a = d[()]
            a[..., [5, U + 5, 2 * U + 5]] = 0.0
            if role == "recurrent_kernel":
                a[5] = 0.0
            d[...] = a

    result = bl.check(planted(edit))
    assert not result.ok
    assert places(result, "units.dead") == [("bi_gru", "forward", None, None)]
    (finding,) = [f for f in result.findings if f.code == "units.dead"]
    assert finding.value == 1 and finding.detail.endswith("unit 5")


def test_unused_unit_recurrent_row(planted):
    def edit(f):
        d = f[ds("bi_lstm", "forward", "recurrent_kernel")]
        a = d[()]
        a[3] = 0.0
        d[...] = a

    result = bl.check(planted(edit), fail_on="warning")
    assert places(result, "units.unused") == [("bi_lstm", "forward", "recurrent_kernel", None)]
    assert places(result, "units.dead") == [] and not result.ok


def test_forward_equal_backward(planted):
    def edit(f):
        for role in ("kernel", "recurrent_kernel", "bias"):
            f[ds("bi_lstm", "backward", role)][...] = f[ds("bi_lstm", "forward", role)][()]

    result = bl.check(planted(edit))
    assert not result.ok
    assert places(result, "directions.identical") == [("bi_lstm", None, None, None)]
    assert places(result, "directions.mirrored") == []


@pytest.mark.parametrize("how", ["negated", "reversed"])
def test_mirrored_directions(planted, how):
    def edit(f):
        for role in ("kernel", "recurrent_kernel", "bias"):
            a = f[ds("bi_gru", "forward", role)][()]
            if how == "negated":
                b = -a
            else:
                b = a.reshape(*a.shape[:-1], 3, U)[..., ::-1].reshape(a.shape)
                b = b[::-1] if role == "recurrent_kernel" else b
            f[ds("bi_gru", "backward", role)][...] = b

    result = bl.check(planted(edit), fail_on="warning")
    assert places(result, "directions.mirrored") == [("bi_gru", None, None, None)]
    assert not result.ok


def orthogonal(rng, rows, cols):
    q, r = np.linalg.qr(rng.standard_normal((cols, rows)))
    return (q * np.sign(np.diag(r))).T.astype(np.float32)  # orthonormal rows


@pytest.mark.parametrize("per_gate", [False, True])
def test_freshly_initialized(planted, per_gate):
    rng = np.random.default_rng(0)

    def edit(f):
        for layer, blocks in (("bi_lstm", 4), ("bi_gru", 3)):
            for direction in ("forward", "backward"):
                if per_gate:
                    r = np.concatenate([orthogonal(rng, U, U) for _ in range(blocks)], axis=1)
                else:
                    r = orthogonal(rng, U, blocks * U)
                f[ds(layer, direction, "recurrent_kernel")][...] = r
                d = f[ds(layer, direction, "bias")]
                b = np.zeros(d.shape, np.float32)
                if layer == "bi_lstm":
                    b[U : 2 * U] = 1.0  # unit forget bias
                d[...] = b

    result = bl.check(planted(edit))
    assert not result.ok
    assert sorted(places(result, "init.fresh")) == sorted(
        (layer, d, "recurrent_kernel", None)
        for layer in ("bi_lstm", "bi_gru")
        for d in ("forward", "backward")
    )
    how = "per gate" if per_gate else "as a whole"
    assert all(how in f.detail for f in result.findings if f.code == "init.fresh")


def test_real_keras_fresh_model_is_named():
    result = bl.check(str(FIXTURES / "check" / "fresh_lstm_gru.keras"))
    assert not result.ok
    assert sorted(places(result, "init.fresh")) == sorted(
        (layer, d, "recurrent_kernel", None)
        for layer in ("bi_lstm", "bi_gru")
        for d in ("forward", "backward")
    )


def test_orthogonal_but_trained_biases_is_not_fresh(planted):
    rng = np.random.default_rng(1)

    def edit(f):
        f[ds("bi_lstm", "forward", "recurrent_kernel")][...] = orthogonal(rng, U, 4 * U)

    assert places(bl.check(planted(edit)), "init.fresh") == []


@pytest.mark.parametrize("entry", fixture_entries(), ids=fixture_ids(fixture_entries()))
def test_every_fixture_is_checked_without_crashing(entry):
    result = bl.check(str(FIXTURES / entry["file"]))
    assert len(result.layers) == len(entry["bidirectional"])  # weights-only files name them
    doc = result.to_dict()
    assert set(doc) >= {"file", "ok", "findings", "skipped", "blocks", "thresholds", "counts"}
    for name, layer in zip(result.layers, entry["bidirectional"]):
        if not layer.get("use_bias", True):
            assert any(s.layer == name and "no bias" in s.why for s in result.skipped)


def test_float16_weights(planted):
    def edit(f):
        for layer in ("bi_lstm", "bi_gru"):
            for direction in ("forward", "backward"):
                for role in ("kernel", "recurrent_kernel", "bias"):
                    name = ds(layer, direction, role)
                    a = f[name][()]
                    attrs = dict(f[name].attrs)
                    del f[name]
                    f.create_dataset(name, data=a.astype(np.float16))
                    f[name].attrs.update(attrs)
        d = f[ds("bi_lstm", "forward", "kernel")]
        a = d[()]
        a[0, 0] = np.nan
        d[...] = a

    result = bl.check(planted(edit))
    assert places(result, "nonfinite") == [("bi_lstm", "forward", "kernel", "i")]
    assert len(result.findings) == 1


def test_settings_parse_and_refuse_unknown_names():
    parsed = thresholds_from(["recurrent.exploding.max_singular=12", "init.fresh.severity=off"])
    settings = resolve(parsed)
    assert settings.get("recurrent.exploding", "max_singular") == 12.0
    assert not settings.on("init.fresh")
    for bad in (
        ["nonsense.count=1"],
        ["recurrent.exploding.nope=1"],
        ["recurrent.exploding.max_singular=big"],
        ["recurrent.exploding"],
        ["units.dead.severity=fatal"],
        ["nonfinite.count=nan"],
    ):
        with pytest.raises(UsageError):
            resolve(thresholds_from(bad))
    with pytest.raises(UsageError):
        bl.check(str(TRAINED), fail_on="info")


def test_every_rule_has_a_reason_and_json_safe_defaults():
    for code, rule in RULES.items():
        assert rule.code == code and rule.severity in ("error", "warning")
        assert rule.why.endswith(".") and len(rule.why) > 30
        assert all(np.isfinite(v) for v in rule.thresholds.values())


def test_spectral_estimates_match_numpy():
    rng = np.random.default_rng(3)
    for n in (8, 64, 300):
        m = rng.standard_normal((n, n)) / np.sqrt(n)
        m[:, 0] *= 3.0  # a clear top singular value
        assert top_singular(m) == pytest.approx(np.linalg.norm(m, 2), rel=1e-6)
        exact = np.max(np.abs(np.linalg.eigvals(m)))
        assert spectral_radius(m) == pytest.approx(exact, rel=0.2)
    wide = rng.standard_normal((50, 200))
    assert top_singular(wide) == pytest.approx(np.linalg.norm(wide, 2), rel=1e-6)


def test_timescales_per_activation():
    b = np.array([-10.0, 0.0, 1.0, 3.0])
    sig = timescales(b, "sigmoid", 3)
    assert sig[1] == pytest.approx(2.0) and sig[2] == pytest.approx(1 + np.e)
    assert sig[0] == pytest.approx(1.0, abs=1e-4)
    # Keras 2 hard_sigmoid saturates at 2.5, Keras 3's at 3: different time scales for b = 1.
    assert timescales(b, "hard_sigmoid", 2)[2] == pytest.approx(1 / (1 - 0.7))
    assert timescales(b, "hard_sigmoid", 3)[2] == pytest.approx(1 / (1 - (1 / 6 + 0.5)))
    assert timescales(b, "hard_sigmoid", 2)[3] == 1e12  # saturated: capped


def test_gru_biases_of_both_shapes_get_time_scales():
    result = bl.check(str(FIXTURES / "k2_functional_mixed.h5"))
    shapes = {}
    with bl.open_model(str(FIXTURES / "k2_functional_mixed.h5")) as model:
        for layer in model.layers:
            if layer.cell == "GRU":
                shapes[layer.name] = layer.weight("forward", "bias").shape
    assert sorted(len(s) for s in shapes.values()) == [1, 2]  # (3u,) and (2, 3u)
    for name in shapes:
        scales = [b for b in result.blocks if b["layer"] == name and b["role"] == "bias"]
        assert [b["gate"] for b in scales] == ["z", "z"]
        assert all(1 < b["timescale_median"] < 100 for b in scales)


def test_convolution_kernels_are_skipped_not_crashed():
    """A ConvLSTM-shaped direction: counted and compared, but no spectrum of a 4-D kernel."""
    from bilstm_cli.findings import resolve
    from bilstm_cli.health import rules

    rng = np.random.default_rng(5)
    raw = {
        "kernel": rng.normal(size=(3, 3, 2, 4 * U)).astype(np.float32),
        "recurrent_kernel": rng.normal(size=(3, 3, U, 4 * U)).astype(np.float32),
        "bias": np.zeros(4 * U, np.float32),
    }
    raw["recurrent_kernel"][..., 3] = 0.0
    raw["kernel"][..., [3, U + 3, 2 * U + 3, 3 * U + 3]] = 0.0
    raw["recurrent_kernel"][..., [U + 3, 2 * U + 3, 3 * U + 3]] = 0.0
    side = rules.Side(
        "conv",
        "forward",
        "LSTM",
        U,
        "tanh",
        "sigmoid",
        {k: v.astype(np.float64) for k, v in raw.items()},
        raw,
    )
    judge = rules.Judge(resolve())
    for step in (
        rules.check_nonfinite,
        rules.check_recurrent,
        rules.check_timescales,
        rules.check_saturation,
        rules.check_units,
        rules.check_fresh,
    ):
        step(judge, side)
    assert [(s.role, s.check) for s in judge.skipped] == [("recurrent_kernel", "spectrum")]
    assert "not a matrix" in judge.skipped[0].why
    assert [(f.code, f.detail.endswith("unit 3")) for f in judge.findings] == [("units.dead", True)]


def test_a_cell_family_the_checks_do_not_know_is_skipped_by_name():
    from bilstm_cli.model import CellSettings, Layer, Model, Weight
    from bilstm_cli.ops.check import check_model

    class Arrays:
        def read(self, location):
            return np.ones((3, 3, 2, 16), np.float32)

        def close(self):
            pass

    settings = CellSettings("MinimalCell", 4)
    weights = [
        Weight(d, "kernel", f"{d}/kernel", (3, 3, 2, 16), "float32", Arrays())
        for d in ("forward", "backward")
    ]
    layer = Layer("bi_conv", "bi_conv", "concat", settings, settings, weights)
    model = Model("conv.keras", "keras", "3.15.1", [layer], True)
    result = check_model(model, [layer], resolve())
    assert result.findings == [] and result.ok
    assert [(s.direction, s.check, s.why) for s in result.skipped] == [
        (d, "all", "MinimalCell is not a cell family the checks know")
        for d in ("forward", "backward")
    ]


def test_a_simple_rnn_has_no_recurrent_activation_to_assume():
    """SimpleRNN has no gates: its missing recurrent activation is not a missing config."""
    result = bl.check(str(FIXTURES / "k3_functional_mixed.keras"))
    assert "my_bi" in {b["layer"] for b in result.blocks}
    assert not [n for n in result.notes if "no layer configuration" in n], result.notes
    weights_only = bl.check(str(FIXTURES / "k3_functional_mixed.weights.h5"))
    assert [n for n in weights_only.notes if "no layer configuration" in n]
