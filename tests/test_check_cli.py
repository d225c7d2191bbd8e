"""``bilstm check`` on the command line: exit codes, JSON (Lines), --set, --fail-on, --hist,
several files, and ``--check`` on init and transplant."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest
from conftest import FIXTURES, run_cli

TRAINED = FIXTURES / "check" / "trained_lstm_gru.h5"
FRESH = FIXTURES / "check" / "fresh_lstm_gru.keras"
NAN_DS = "model_weights/bi_lstm/bi_lstm/forward_lstm/lstm_cell/bias"


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "nan.h5"
    shutil.copyfile(TRAINED, path)
    with h5py.File(path, "r+") as f:
        a = f[NAN_DS][()]
        a[9] = float("nan")
        f[NAN_DS][...] = a
    return path


def test_healthy_passes_and_says_so():
    run = run_cli("check", TRAINED)
    assert run.exit_code == 0, run.stderr
    assert "OK: nothing reaches --fail-on error" in run.stdout and run.stderr == ""


def test_nan_fails_with_its_place(broken):
    run = run_cli("check", broken)
    assert run.exit_code == 1
    assert "nonfinite" in run.stdout and "bi_lstm/forward/bias[f]" in run.stdout
    assert "FAILED: 1 finding(s)" in run.stdout
    doc = run_cli("check", broken, "--json").json()
    assert doc["ok"] is False and doc["counts"] == {"error": 1, "warning": 0}
    (finding,) = doc["findings"]
    assert {k: finding[k] for k in ("code", "layer", "direction", "role", "gate")} == {
        "code": "nonfinite",
        "layer": "bi_lstm",
        "direction": "forward",
        "role": "bias",
        "gate": "f",
    }
    assert finding["value"] == 1 and finding["why"]


def test_fresh_model_fails_and_severity_can_be_lowered():
    assert run_cli("check", FRESH).exit_code == 1
    run = run_cli("check", FRESH, "--set", "init.fresh.severity=warning")
    assert run.exit_code == 0 and "4 warning(s)" in run.stdout
    assert (
        run_cli(
            "check", FRESH, "--set", "init.fresh.severity=warning", "--fail-on", "warning"
        ).exit_code
        == 1
    )
    run = run_cli("check", FRESH, "--set", "init.fresh.severity=off", "--json")
    assert run.exit_code == 0 and run.json()["findings"] == []
    assert run.json()["thresholds"]["init.fresh"]["severity"] == "off"


@pytest.mark.parametrize(
    "setting",
    ["bogus.count=1", "units.dead.limit=2", "units.dead.count=many", "units.dead", "x=1"],
)
def test_bad_set_is_a_usage_error(setting):
    run = run_cli("check", TRAINED, "--set", setting)
    assert run.exit_code == 2 and run.stdout == ""
    assert run.stderr.startswith("Error: ") and len(run.stderr.splitlines()) == 1


def test_threshold_changes_the_verdict():
    # Blocks of the trained model reach σ_max ≈ 2.1: a limit of 1 makes them explode.
    run = run_cli("check", TRAINED, "--set", "recurrent.exploding.max_singular=1", "--json")
    assert run.exit_code == 1
    assert {f["code"] for f in run.json()["findings"]} == {"recurrent.exploding"}
    assert all(f["threshold"] == 1 for f in run.json()["findings"])


def test_unreadable_input_is_exit_3(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model at all")
    run = run_cli("check", bad)
    assert run.exit_code == 3 and run.stdout == "" and str(bad) in run.stderr


def test_several_files_json_lines(tmp_path, broken):
    bad = tmp_path / "missing.keras"
    run = run_cli("check", TRAINED, broken, bad, "--json")
    assert run.exit_code == 3  # the worst: one unreadable, one failing
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [d["file"] for d in docs] == [str(TRAINED), str(broken)]
    assert [d["ok"] for d in docs] == [True, False]
    assert run.stderr.count("Error:") == 1 and str(bad) in run.stderr
    run = run_cli("check", TRAINED, broken)
    assert run.exit_code == 1 and run.stdout.count("layer(s) checked") == 2


def test_layer_glob(broken):
    run = run_cli("check", broken, "--layer", "bi_gru", "--json")
    assert run.exit_code == 0 and run.json()["layers"] == ["bi_gru"]
    run = run_cli("check", broken, "--layer", "nothing*")
    assert run.exit_code == 2 and run.stdout == ""
    run = run_cli("check", broken, TRAINED, "--layer", "nothing*")
    assert run.exit_code == 2 and run.stdout == ""


def test_hist_on_check_and_inspect_fits_80_columns():
    for args in (("check", TRAINED, "--hist"), ("inspect", TRAINED, "--hist")):
        run = run_cli(*args)
        assert run.exit_code == 0
        lines = run.stdout.split("histograms (24 bins")[1].splitlines()
        spark = [
            x for x in lines if x.startswith(("  recurrent_kernel f  ", "  bias             z  "))
        ]
        assert len(spark) == 4  # both layers, both directions
        assert all(len(x) <= 80 for x in lines)
        assert any(ch in "".join(spark) for ch in "▁▂▃▄▅▆▇█")
    doc = run_cli("inspect", TRAINED, "--hist", "--json").json()
    hist = doc["histograms"][0]
    assert set(hist) == {"layer", "direction", "role", "gate", "counts", "min", "max", "nonfinite"}
    assert len(doc["histograms"]) == 2 * 2 * 3 * 4 - 2 * 3 * 1  # LSTM 4 gates, GRU 3
    assert sum(hist["counts"]) == 3 * 8  # kernel (3, 32): 3 × 8 values per gate
    plain = run_cli("inspect", TRAINED, "--json").json()
    assert "histograms" not in plain


def test_init_check_before_after(tmp_path):
    out = tmp_path / "fresh.h5"
    args = ["init", TRAINED, "-o", out, "--layer", "bi_gru", "--seed", "1"]
    args += ["--init", "recurrent_kernel=orthogonal", "--init", "bias=zeros", "--check"]
    run = run_cli(*args, "--json")
    assert run.exit_code == 0, run.stderr
    check = run.json()["check"]
    assert check["layers"] == ["bi_gru"] and check["before"]["ok"] is True
    assert check["after"]["ok"] is False and check["fixed"] == []
    assert {(f["code"], f["direction"]) for f in check["caused"]} == {
        ("init.fresh", "forward"),
        ("init.fresh", "backward"),
    }
    text = run_cli(*args[:-1], "--check", "--force").stdout
    assert "check of the changed layers" in text and "caused" in text
    # Without --check nothing of it.
    assert "check" not in run_cli(*args[:-1], "--force", "--json").json()


def test_transplant_check_fixes(tmp_path, broken):
    out = tmp_path / "fixed.h5"
    run = run_cli("transplant", TRAINED, broken, "-o", out, "--check", "--json")
    assert run.exit_code == 0, run.stderr
    check = run.json()["check"]
    assert [f["code"] for f in check["fixed"]] == ["nonfinite"] and check["caused"] == []
    assert check["after"]["ok"] is True
    dry = run_cli("transplant", TRAINED, broken, "--dry-run", "--check", "--json").json()
    assert dry["check"]["after"] is None


@pytest.mark.parametrize("width", (80, 100))
def test_findings_and_histograms_fit_the_terminal(width):
    from test_terminal import check_screen, on_terminal

    from bilstm_cli.cli.render import num

    doc = run_cli("check", FRESH, "--json").json()
    code, screen = on_terminal(width, "check", str(FRESH), "--hist")
    assert code == 1
    strings = {f["detail"] for f in doc["findings"]} | {f["why"] for f in doc["findings"]}
    strings |= {f"{f['layer']}/{f['direction']}/{f['role']}" for f in doc["findings"]}
    numbers = {num(f["value"]) for f in doc["findings"]} | {
        num(f["threshold"]) for f in doc["findings"]
    }
    headers = ["severity", "code", "value", "threshold"]
    check_screen(screen, width, headers, strings | {"init.fresh"}, numbers)
    assert screen.count("recurrent_kernel f") == 2 and "FAILED" in screen


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_file_is_one_error_line(tmp_path, keep):
    data = TRAINED.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * keep)])
    run = run_cli("check", cut, "--hist", "--json")
    assert run.exit_code == 3 and run.stdout == ""
    assert run.stderr.startswith("Error: ") and len(run.stderr.splitlines()) == 1


def test_bench_has_the_check_job():
    from test_bench import load_runner

    runner = load_runner()
    assert runner.JOB_KEYS["check"] == ("check .keras",)
    (job,) = [j for j in runner.RATIO_JOBS if j.name == "check .keras"]
    assert job.command[0] == "check" and job.baseline[:1] == ["inspect"]
    assert "--gates" in job.baseline and job.max_ratio == 3.0
    for argv in (job.command, job.baseline):
        assert run_cli(argv[0], "--help").exit_code == 0
        assert all(a in run_cli(argv[0], "--help").stdout for a in argv if a.startswith("--"))
