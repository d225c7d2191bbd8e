"""`bilstm transplant` and `bilstm diff` end to end, across formats and Keras versions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import FIXTURES, run_cli
from test_init import _weights

MIXED = FIXTURES / "k3_functional_mixed.keras"
K3_LSTM = FIXTURES / "k3_seq_input_lstm_concat.keras"
K2_LSTM = FIXTURES / "k2_seq_lstm.h5"
K2_TRAINED = FIXTURES / "k2_trained_adam.h5"
K3_TRAINED = FIXTURES / "k3_trained_adam.keras"
CUDNN = FIXTURES / "cudnn_seq_lstm.h5"


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def donor(tmp_path):
    """The mixed model with every Bidirectional weight re-drawn: a donor of the same shapes."""
    path = tmp_path / "donor.keras"
    assert (
        run_cli("init", MIXED, "-o", path, "--init", "normal:stddev=0.3", "--seed", "5").exit_code
        == 0
    )
    return path


def test_transplant_by_name_moves_everything_and_diff_agrees(donor, tmp_path):
    out = tmp_path / "out.keras"
    before = sha(MIXED)
    run = run_cli("transplant", donor, MIXED, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] and all(c["ok"] for c in doc["checks"])
    assert {c["check"] for c in doc["checks"]} >= {
        "equals donor",
        "Bidirectional forward pass",
        "everything else unchanged",
    }
    assert sha(MIXED) == before
    same = run_cli("diff", donor, out)
    assert same.exit_code == 0 and same.stdout.rstrip().endswith("identical")
    changed = run_cli("diff", MIXED, out, "--json")
    assert changed.exit_code == 1 and changed.json()["identical"] is False


def test_keras2_h5_into_keras3_archive_and_back(tmp_path):
    out = tmp_path / "k3.keras"
    assert run_cli("transplant", K2_LSTM, K3_LSTM, "-o", out).exit_code == 0
    assert run_cli("diff", K2_LSTM, out).exit_code == 0
    back = tmp_path / "k2.h5"
    assert run_cli("transplant", K3_TRAINED, K2_TRAINED, "-o", back).exit_code == 0
    assert run_cli("diff", K3_TRAINED, back).exit_code == 0


def test_map_one_direction_onto_the_other_with_gates(tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli(
        "transplant",
        MIXED,
        MIXED,
        "-o",
        out,
        "--map",
        "bi_lstm_ave/forward=bi_lstm_ave/backward",
        "--role",
        "recurrent_kernel[i,f]",
    )
    assert run.exit_code == 0, run.stderr
    old, new = _weights(MIXED, "bi_lstm_ave"), _weights(out, "bi_lstm_ave")
    u = 3
    rk_new, rk_fwd, rk_old = (
        new[("backward", "recurrent_kernel")],
        old[("forward", "recurrent_kernel")],
        old[("backward", "recurrent_kernel")],
    )
    assert np.array_equal(rk_new[:, : 2 * u], rk_fwd[:, : 2 * u])
    assert np.array_equal(rk_new[:, 2 * u :], rk_old[:, 2 * u :])
    for key in old:
        if key != ("backward", "recurrent_kernel"):
            assert np.array_equal(old[key], new[key])
    assert "as expected with a partial transplant" in run.stdout
    assert "forward pass" in run.stdout


def test_map_from_an_unknown_layer_lists_what_the_donor_has(tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli("transplant", K2_LSTM, K3_LSTM, "-o", out, "--map", "lstm=bidirectional/forward")
    assert run.exit_code == 2 and "no layer 'lstm'" in run.stderr
    assert "Bidirectional: bidirectional" in run.stderr


def test_cudnn_donor_is_converted_like_keras_did(tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli("transplant", CUDNN, K3_LSTM, "-o", out, "--by", "order")
    assert run.exit_code == 0, run.stderr
    assert "converted from CuDNN" in run.stdout
    converted = np.load(FIXTURES / "cudnn_seq_lstm.converted.npz")
    new = _weights(out, "bidirectional")
    for (direction, role), values in new.items():
        assert np.array_equal(values, converted[f"bidirectional_1/{direction}/{role}"])


def test_shape_mismatch_names_both_layers_and_shapes(tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli("transplant", MIXED, K3_LSTM, "-o", out, "--map", "bi_gru_mul=bidirectional")
    assert run.exit_code == 3
    assert "bi_gru_mul" in run.stderr and "bidirectional" in run.stderr
    assert not out.exists()
    run = run_cli(
        "transplant",
        FIXTURES / "k3_functional_nested.keras",
        K3_LSTM,
        "-o",
        out,
        "--map",
        "top_bi=bidirectional",
    )
    assert run.exit_code == 3 and "shapes differ" in run.stderr and "(2, 8)" in run.stderr


def test_unmatched_names_are_a_usage_error_not_a_silent_no_op(tmp_path):
    run = run_cli("transplant", K3_TRAINED, K3_LSTM, "-o", tmp_path / "o.keras")
    assert run.exit_code == 2
    assert "--by order" in run.stderr and "bi_trained" in run.stderr


def test_map_naming_a_missing_layer(tmp_path):
    run = run_cli(
        "transplant", MIXED, MIXED, "-o", tmp_path / "o.keras", "--map", "nope=bi_lstm_ave"
    )
    assert run.exit_code == 2 and "no layer 'nope'" in run.stderr
    run = run_cli(
        "transplant", MIXED, MIXED, "-o", tmp_path / "o.keras", "--map", "bi_lstm_ave=nope"
    )
    assert run.exit_code == 2 and "available: bi_lstm_ave" in run.stderr


def test_settings_that_differ_are_reported(tmp_path):
    out = tmp_path / "o.keras"
    nested = FIXTURES / "k3_functional_backward_nobias.keras"
    run = run_cli(
        "transplant",
        nested,
        nested,
        "-o",
        out,
        "--map",
        "bi_custom_backward/backward=bi_custom_backward/forward",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert any("activation" in note for note in doc["notes"])


def test_dry_run_shows_the_plan_and_writes_nothing(donor, tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli("transplant", donor, MIXED, "-o", out, "--dry-run")
    assert run.exit_code == 0 and not out.exists()
    assert "from bi_lstm_ave/forward" in run.stdout and "dry run" in run.stdout


def test_nonfinite_donor_refused_unless_allowed(tmp_path):
    import h5py

    bad = tmp_path / "bad.h5"
    bad.write_bytes(K2_LSTM.read_bytes())
    with h5py.File(bad, "r+") as f:
        name = run_cli("inspect", K2_LSTM, "--json").json()["layers"][0]["weights"][0]["dataset"]
        data = f[name][()]
        data[0, 0] = np.nan
        f[name][...] = data
    assert (
        run_cli("inspect", bad, "--json").json()["layers"][0]["weights"][0]["stats"]["finite"]
        is False
    )
    out = tmp_path / "o.keras"
    run = run_cli("transplant", bad, K3_LSTM, "-o", out)
    assert run.exit_code == 3 and "--allow-nonfinite" in run.stderr and not out.exists()
    assert run_cli("transplant", bad, K3_LSTM, "-o", out, "--allow-nonfinite").exit_code == 0


def test_diff_per_gate_and_roles(tmp_path):
    out = tmp_path / "o.keras"
    assert (
        run_cli(
            "init",
            MIXED,
            "-o",
            out,
            "--layer",
            "bi_lstm_ave",
            "--init",
            "bias[f]=ones",
            "--seed",
            "1",
        ).exit_code
        == 0
    )
    doc = run_cli("diff", MIXED, out, "--gates", "--json").json()
    layers = {x["name"]: x for x in doc["layers"]}
    assert layers["bi_gru_mul"]["status"] == "same"
    rows = [w for w in layers["bi_lstm_ave"]["weights"] if w["role"] == "bias" and w["gate"]]
    assert {w["gate"]: w["equal"] for w in rows if w["direction"] == "forward"} == {
        "i": True,
        "f": False,
        "c": True,
        "o": True,
    }
    only_kernel = run_cli("diff", MIXED, out, "--role", "kernel")
    assert only_kernel.exit_code == 0
    assert run_cli("diff", MIXED, out, "--role", "bias[f]", "--layer", "bi_lstm_ave").exit_code == 1
    assert run_cli("diff", MIXED, out, "--role", "bias[i]", "--layer", "bi_lstm_ave").exit_code == 0
    wrong = run_cli("diff", MIXED, out, "--role", "bias[f]")
    assert wrong.exit_code == 2 and "GRU has gates z, r, h" in wrong.stderr


def test_diff_lists_layers_present_in_one_file_only():
    run = run_cli("diff", MIXED, K3_LSTM, "--json")
    assert run.exit_code == 1
    statuses = {x["name"]: x["status"] for x in run.json()["layers"]}
    assert statuses["bi_lstm_ave"] == "only in A" and statuses["bidirectional"] == "only in B"


def test_diff_unreadable_file_is_exit_3(tmp_path):
    bad = tmp_path / "x.keras"
    bad.write_text("nope")
    assert run_cli("diff", MIXED, bad).exit_code == 3


@pytest.mark.parametrize("donor", ["k3_plain_lstm_lm.keras", "k2_plain_lstm_lm.h5"])
def test_plain_lstm_donor_fills_one_direction(donor, tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli(
        "transplant",
        FIXTURES / donor,
        K3_LSTM,
        "-o",
        out,
        "--map",
        "lm=bidirectional/forward",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert [p["donor"] for p in doc["pairs"]] == ["lm"]
    forward = [c for c in doc["checks"] if c["check"] == "forward pass"]
    assert forward and forward[0]["ok"] and "difference 0" in forward[0]["detail"]
    old, new = _weights(K3_LSTM, "bidirectional"), _weights(out, "bidirectional")
    for role in ("kernel", "recurrent_kernel", "bias"):
        assert np.array_equal(new[("backward", role)], old[("backward", role)])
        assert not np.array_equal(new[("forward", role)], old[("forward", role)])
    # A plain layer has no direction of its own, and fills exactly one.
    bad = run_cli(
        "transplant", FIXTURES / donor, K3_LSTM, "-o", out, "--force", "--map", "lm=bidirectional"
    )
    assert bad.exit_code == 2 and "lm=bidirectional/forward" in bad.stderr
    gru = run_cli(
        "transplant",
        FIXTURES / donor,
        K3_LSTM,
        "-o",
        out,
        "--force",
        "--map",
        "lm_gru=bidirectional/forward",
    )
    assert gru.exit_code == 3 and "GRU" in gru.stderr and not (tmp_path / "x").exists()


def _donor_with(tmp_path, value, dtype, everywhere=False):
    """K2_LSTM with its first kernel rewritten as ``dtype`` holding ``value`` in one place
    (or ``everywhere``)."""
    import h5py

    bad = tmp_path / f"donor_{dtype}.h5"
    bad.write_bytes(K2_LSTM.read_bytes())
    name = run_cli("inspect", K2_LSTM, "--json").json()["layers"][0]["weights"][0]["dataset"]
    with h5py.File(bad, "r+") as f:
        data = f[name][()].astype(dtype)
        if everywhere:
            data[...] = value
        else:
            data[0, 0] = value
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=data)
        f[name].attrs.update(attrs)
    return bad


def _bilstm(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "bilstm_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("value", [np.inf, np.finfo(np.float32).max])
def test_extreme_donor_values_run_the_check_without_warnings(tmp_path, value):
    bad = _donor_with(tmp_path, value, np.float32, everywhere=True)
    run = _bilstm("transplant", bad, K3_LSTM, "-o", tmp_path / "o.keras", "--allow-nonfinite")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # the forward pass overflows to inf/NaN quietly
    assert "forward pass" in run.stdout


def test_donor_values_beyond_the_target_dtype_are_one_error_line(tmp_path):
    bad = _donor_with(tmp_path, 1e300, np.float64)
    out = tmp_path / "o.keras"
    run = _bilstm("transplant", bad, K3_LSTM, "-o", out)
    assert run.returncode == 3 and not out.exists()
    assert run.stderr.count("\n") == 1 and "beyond the range" in run.stderr, run.stderr


def test_plan_is_shown_with_the_result_and_not_when_writing_fails(tmp_path, monkeypatch):
    import bilstm_cli.formats.staging as writer
    from bilstm_cli.errors import OutputError

    args = ("--role", "recurrent_kernel[f]", "--role", "kernel")
    out = tmp_path / "o.keras"
    run = run_cli("transplant", K2_LSTM, K3_LSTM, "-o", out, *args)
    assert run.exit_code == 0
    assert run.stdout.startswith(f"plan: {K2_LSTM} → {K3_LSTM}")
    for direction in ("forward", "backward"):
        assert f"bidirectional/{direction}" in run.stdout
    assert "kernel, recurrent_kernel[f]" in run.stdout

    def refuse(self, dataset, values):
        raise OutputError("no space left (simulated)")

    monkeypatch.setattr(writer.StagedWrite, "write", refuse)
    failed = run_cli("transplant", K2_LSTM, K3_LSTM, "-o", tmp_path / "p.keras", *args)
    assert failed.exit_code == 4 and not (tmp_path / "p.keras").exists()
    assert failed.stdout == ""


def test_plan_in_json_is_part_of_the_one_document(tmp_path):
    run = run_cli("transplant", K2_LSTM, K3_LSTM, "-o", tmp_path / "o.keras", "--json")
    doc = run.json()  # the whole of stdout is one JSON document
    assert [p["moves"] for p in doc["pairs"]] == [["kernel", "recurrent_kernel", "bias"]] * 2
