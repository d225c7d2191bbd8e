"""`bilstm init` end to end: strategies, targets, determinism, safe writing, every format."""

from __future__ import annotations

import hashlib
import io
import zipfile

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, fixture_ids, manifest, run_cli

# Fixtures whose Bidirectional layers the tool can change (CuDNN layers are donors only).
WRITABLE = [
    e
    for e in manifest()
    if e["bidirectional"]
    and all(b["cell"] in ("LSTM", "GRU", "SimpleRNN") for b in e["bidirectional"])
]
MIXED = FIXTURES / "k3_functional_mixed.keras"
LSTM_KERAS = FIXTURES / "k3_seq_input_lstm_concat.keras"
K2_H5 = FIXTURES / "k2_trained_adam.h5"


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def weights_file(path):
    """The HDF5 weights of a model file, opened read-only (in memory for archives)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    return h5py.File(path, "r")


def all_datasets(path) -> dict[str, np.ndarray]:
    out = {}
    with weights_file(path) as f:
        f.visititems(
            lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


@pytest.mark.parametrize("entry", WRITABLE, ids=fixture_ids(WRITABLE))
def test_round_trip_changes_exactly_the_selected_weights(entry, tmp_path):
    src = FIXTURES / entry["file"]
    before_hash = sha(src)
    out = tmp_path / ("out.keras" if entry["format"] == "keras" else "out.h5")
    run = run_cli("init", src, "-o", out, "--init", "normal:stddev=0.5", "--seed", "11", "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] is True and doc["output"] == str(out)
    assert sha(src) == before_hash, "the input was modified"
    changed = {c["dataset"] for c in doc["changes"]}
    expected = {
        w["dataset"]
        for layer in run_cli("inspect", src, "--json").json()["layers"]
        for w in layer["weights"]
    }
    assert changed == expected
    old, new = all_datasets(src), all_datasets(out)
    assert old.keys() == new.keys()
    drawn = []
    for name in old:
        if name in changed:
            assert not np.array_equal(old[name], new[name]), name
            assert new[name].dtype == old[name].dtype and new[name].shape == old[name].shape
            drawn.append(new[name].ravel())
        else:
            assert np.array_equal(old[name], new[name]), f"{name} changed but was not selected"
    pooled = np.concatenate(drawn).astype(np.float64)
    assert pooled.size > 40 and abs(pooled.std() - 0.5) < 0.15
    if entry["format"] == "keras":
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
            assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
            for x, y in zip(a.infolist(), b.infolist()):
                assert x.date_time == y.date_time
                if x.filename != "model.weights.h5":
                    assert a.read(x) == b.read(y)


def test_same_seed_gives_byte_identical_output(tmp_path):
    args = ["--init", "truncated_normal:stddev=0.05", "--seed", "7"]
    for name in ("a.keras", "b.keras"):
        assert run_cli("init", MIXED, "-o", tmp_path / name, *args).exit_code == 0
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    assert (
        run_cli(
            "init",
            MIXED,
            "-o",
            tmp_path / "c.keras",
            "--init",
            "truncated_normal:stddev=0.05",
            "--seed",
            "8",
        ).exit_code
        == 0
    )
    assert (tmp_path / "a.keras").read_bytes() != (tmp_path / "c.keras").read_bytes()


def test_no_seed_prints_the_seed_that_repeats_the_run(tmp_path):
    run = run_cli("init", LSTM_KERAS, "-o", tmp_path / "a.keras", "--init", "glorot_uniform")
    assert run.exit_code == 0
    seed = run.stdout.split("used --seed ")[1].split()[0]
    again = run_cli(
        "init", LSTM_KERAS, "-o", tmp_path / "b.keras", "--init", "glorot_uniform", "--seed", seed
    )
    assert again.exit_code == 0
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()


def _weights(path, layer):
    doc = run_cli("inspect", path, "--json", "--layer", layer).json()
    with weights_file(path) as f:
        return {
            (w["direction"], w["role"]): f[w["dataset"]][()] for w in doc["layers"][0]["weights"]
        }


def test_later_options_override_earlier_ones_per_gate(tmp_path):
    out = tmp_path / "o.keras"
    run = run_cli(
        "init",
        MIXED,
        "-o",
        out,
        "--layer",
        "bi_lstm_ave",
        "--direction",
        "backward",
        "--init",
        "kernel=glorot_uniform",
        "--init",
        "recurrent_kernel=orthogonal",
        "--init",
        "bias=zeros",
        "--init",
        "bias[f]=ones",
        "--seed",
        "3",
    )
    assert run.exit_code == 0, run.stderr
    new, old = _weights(out, "bi_lstm_ave"), _weights(MIXED, "bi_lstm_ave")
    u = 3
    bias = new[("backward", "bias")]
    assert np.all(bias[u : 2 * u] == 1.0)
    assert np.all(np.delete(bias, np.s_[u : 2 * u]) == 0.0)
    rk = new[("backward", "recurrent_kernel")].astype(np.float64)
    for k in range(4):
        block = rk[:, k * u : (k + 1) * u]
        assert np.allclose(block.T @ block, np.eye(u), atol=1e-5)
    limit = np.sqrt(6 / (4 + 12))
    assert np.abs(new[("backward", "kernel")]).max() <= limit
    for role in ("kernel", "recurrent_kernel", "bias"):  # forward untouched
        assert np.array_equal(new[("forward", role)], old[("forward", role)])
    # Other layers untouched.
    assert np.array_equal(
        _weights(out, "bi_gru_mul")[("forward", "kernel")],
        _weights(MIXED, "bi_gru_mul")[("forward", "kernel")],
    )


def test_dry_run_writes_nothing_and_predicts_the_result(tmp_path):
    out = tmp_path / "never.keras"
    run = run_cli("init", LSTM_KERAS, "-o", out, "--init", "keras_default", "--dry-run", "--json")
    assert run.exit_code == 0
    doc = run.json()
    assert doc["dry_run"] is True and doc["verified"] is False
    assert not out.exists() and list(tmp_path.iterdir()) == []
    biases = [c for c in doc["changes"] if c["role"] == "bias"]
    assert biases and all(c["after"]["mean"] == pytest.approx(0.25) for c in biases)
    dry = run_cli(
        "init", LSTM_KERAS, "--init", "keras_default", "--dry-run", "--seed", "4", "--json"
    ).json()
    real = run_cli(
        "init", LSTM_KERAS, "-o", out, "--init", "keras_default", "--seed", "4", "--json"
    ).json()
    assert [c["after"] for c in dry["changes"]] == [c["after"] for c in real["changes"]]


def test_json_document_has_the_documented_keys(tmp_path):
    doc = run_cli("init", LSTM_KERAS, "-o", tmp_path / "o.keras", "--seed", "1", "--json").json()
    assert {"input", "output", "verified", "changes"} <= set(doc)
    for change in doc["changes"]:
        assert {"layer", "direction", "role", "gates", "source", "before", "after"} <= set(change)
        assert set(change["after"]) == {"mean", "std", "min", "max", "l2", "finite", "nonfinite"}
    assert all(check["ok"] for check in doc["checks"])


def test_table_shows_before_after_checks_and_destination(tmp_path):
    out = tmp_path / "o.h5"
    run = run_cli("init", K2_H5, "-o", out, "--init", "bias=chrono:tmax=200", "--seed", "1")
    assert run.exit_code == 0, run.stderr
    assert "before → after" in run.stdout
    assert "everything else unchanged" in run.stdout
    assert f"wrote {out} (verified)" in run.stdout
    assert "optimizer state" in run.stdout  # the file was compiled and trained


def test_chrono_lstm_bias(tmp_path):
    out = tmp_path / "o.h5"
    assert (
        run_cli("init", K2_H5, "-o", out, "--init", "bias=chrono:tmax=200", "--seed", "1").exit_code
        == 0
    )
    b = _weights(out, "bi_trained")[("forward", "bias")]
    u = b.shape[0] // 4
    f, i = b[u : 2 * u], b[:u]
    assert np.all(f >= 0) and np.all(f <= np.log(199) + 1e-6)
    assert np.array_equal(i, -f)
    assert np.all(b[2 * u :] == 0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--init", "bogus"], "bogus"),
        (["--init", "bias[=zeros"], "bias["),
        (["--init", "bias["], "a target needs a strategy after '='"),
        (["--init", "recurrent_kernel"], "recurrent_kernel=zeros"),
        (["--init", "foo=zeros"], "foo"),
        (["--layer", "bi_gru_mul", "--init", "bias[f]=ones"], "GRU has gates z, r, h"),
        (["--layer", "bi_lstm_ave", "--init", "kernel=identity"], "identity"),
        (["--layer", "nothing*"], "available: bi_lstm_ave"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    out = tmp_path / "o.keras"
    run = run_cli("init", MIXED, "-o", out, *args)
    assert run.exit_code == 2, run.stderr
    assert message in run.stderr
    assert run.stderr.startswith("Error: ") and run.stderr.count("\n") == 1
    assert not out.exists()


def test_fit_is_judged_on_the_effective_plan(tmp_path):
    # identity alone does not fit the kernel, but a later option takes the kernel over.
    run = run_cli(
        "init",
        LSTM_KERAS,
        "-o",
        tmp_path / "o.keras",
        "--init",
        "identity",
        "--init",
        "kernel=glorot_uniform",
        "--init",
        "bias=zeros",
        "--seed",
        "2",
    )
    assert run.exit_code == 0, run.stderr
    rk = _weights(tmp_path / "o.keras", "bidirectional")[("forward", "recurrent_kernel")]
    assert np.array_equal(rk, np.tile(np.eye(3, dtype=np.float32), (1, 4)))


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "o.keras"
    out.write_bytes(b"keep me")
    run = run_cli("init", LSTM_KERAS, "-o", out, "--seed", "1")
    assert run.exit_code == 4 and "--force" in run.stderr
    assert out.read_bytes() == b"keep me"
    assert run_cli("init", LSTM_KERAS, "-o", out, "--seed", "1", "--force").exit_code == 0
    assert zipfile.is_zipfile(out)


def test_output_naming_the_input_needs_force(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(LSTM_KERAS.read_bytes())
    before = sha(model)
    run = run_cli("init", model, "-o", model, "--seed", "1")
    assert run.exit_code == 4 and "input" in run.stderr
    assert sha(model) == before
    assert run_cli("init", model, "-o", model, "--seed", "1", "--force").exit_code == 0
    assert sha(model) != before
    assert run_cli("inspect", model).exit_code == 0


def test_output_in_a_missing_directory(tmp_path):
    run = run_cli("init", LSTM_KERAS, "-o", tmp_path / "no" / "o.keras", "--seed", "1")
    assert run.exit_code == 4 and "does not exist" in run.stderr


def test_output_must_keep_the_input_format(tmp_path):
    run = run_cli("init", LSTM_KERAS, "-o", tmp_path / "o.h5", "--seed", "1")
    assert run.exit_code == 4 and ".keras" in run.stderr


def test_model_without_bidirectional_layers_is_an_input_error(tmp_path):
    src = tmp_path / "dense.keras"
    with zipfile.ZipFile(LSTM_KERAS) as zin, zipfile.ZipFile(src, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                data = b'{"class_name": "Sequential", "config": {"name": "s", "layers": []}}'
            zout.writestr(info, data)
    run = run_cli("init", src, "-o", tmp_path / "o.keras", "--seed", "1")
    assert run.exit_code == 3 and "no Bidirectional layer" in run.stderr


def test_npy_strategy_writes_the_exact_array(tmp_path):
    arr = np.arange(36, dtype=np.float32).reshape(3, 12) / 100
    np.save(tmp_path / "rk.npy", arr)
    out = tmp_path / "o.keras"
    run = run_cli(
        "init", LSTM_KERAS, "-o", out, "--init", f"recurrent_kernel=npy:{tmp_path / 'rk.npy'}"
    )
    assert run.exit_code == 0, run.stderr
    w = _weights(out, "bidirectional")
    assert np.array_equal(w[("forward", "recurrent_kernel")], arr)
    assert np.array_equal(w[("backward", "recurrent_kernel")], arr)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2), dtype=np.float32))
    run = run_cli(
        "init", LSTM_KERAS, "-o", tmp_path / "x.keras", "--init", f"recurrent_kernel=npy:{bad}"
    )
    assert run.exit_code == 2 and "(2, 2)" in run.stderr


def test_weights_only_files_can_be_initialized(tmp_path):
    for name in ("k3_functional_mixed.weights.h5", "k2_functional_mixed_weights_only.h5"):
        out = tmp_path / name
        run = run_cli(
            "init", FIXTURES / name, "-o", out, "--init", "zeros", "--seed", "1", "--json"
        )
        assert run.exit_code == 0, run.stderr
        doc = run_cli("inspect", out, "--json").json()
        assert all(w["stats"]["max"] == 0 for layer in doc["layers"] for w in layer["weights"])


def test_init_does_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom bilstm_cli.cli import main\n"
        "try:\n"
        f"    main(['init', {str(MIXED)!r}, '-o', {str(tmp_path / 'o.keras')!r}, '--seed', '1'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'jax', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
