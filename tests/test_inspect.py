"""`bilstm inspect` on every committed fixture, through the command line."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, fixture_entries, fixture_ids, manifest, run_cli

ALL = manifest()
ROLE_COUNT = {True: 3, False: 2}


@pytest.mark.parametrize("entry", ALL, ids=fixture_ids(ALL))
def test_json_lists_the_layers_the_manifest_records(entry):
    run = run_cli("inspect", FIXTURES / entry["file"], "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["format"] == entry["format"]
    got = [(layer["name"], layer["cell"], layer["units"]) for layer in doc["layers"]]
    want = [(b["name"], b["cell"], b["units"]) for b in entry["bidirectional"]]
    if doc["config_known"]:
        assert got == want
    else:
        # Without a config, names come from groups: compare cells and units in order.
        assert [g[1:] for g in got] == [w[1:] for w in want]
    for layer, expected in zip(doc["layers"], entry["bidirectional"]):
        if doc["config_known"]:
            assert layer["merge_mode"] == expected["merge_mode"]
        per_direction = ROLE_COUNT[expected["use_bias"]]
        assert len(layer["weights"]) == 2 * per_direction
        assert [w["direction"] for w in layer["weights"]] == ["forward"] * per_direction + [
            "backward"
        ] * per_direction
        for w in layer["weights"]:
            assert set(w["stats"]) == {"mean", "std", "min", "max", "l2", "finite", "nonfinite"}
            assert w["stats"]["finite"] is True


def _dataset_values(path, dataset):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as raw:
            import io

            with h5py.File(io.BytesIO(raw.read()), "r") as f:
                return f[dataset][()]
    with h5py.File(path, "r") as f:
        return f[dataset][()]


@pytest.mark.parametrize("entry", ALL, ids=fixture_ids(ALL))
def test_stats_are_those_of_the_named_dataset(entry):
    path = FIXTURES / entry["file"]
    doc = run_cli("inspect", path, "--json").json()
    for layer in doc["layers"]:
        for w in layer["weights"]:
            values = _dataset_values(path, w["dataset"]).astype(np.float64)
            assert list(values.shape) == w["shape"]
            assert math.isclose(w["stats"]["mean"], values.mean(), rel_tol=1e-12, abs_tol=1e-15)
            assert math.isclose(w["stats"]["std"], values.std(), rel_tol=1e-12, abs_tol=1e-15)
            assert w["stats"]["min"] == values.min() and w["stats"]["max"] == values.max()
            assert math.isclose(w["stats"]["l2"], np.linalg.norm(values), rel_tol=1e-12)


def test_table_output_names_every_layer_and_role():
    entry = fixture_entries(file="k3_functional_mixed.keras")[0]
    run = run_cli("inspect", FIXTURES / entry["file"])
    assert run.exit_code == 0
    for b in entry["bidirectional"]:
        assert f"{b['name']}: Bidirectional({b['cell']}" in run.stdout
    assert "recurrent_kernel" in run.stdout
    # Piped output is plain text: no box drawing, no colour codes.
    assert "\x1b[" not in run.stdout and "━" not in run.stdout


def test_gates_adds_a_row_per_gate_with_orthogonality():
    path = FIXTURES / "k3_seq_input_lstm_concat.keras"
    layer = run_cli("inspect", path, "--gates", "--json").json()["layers"][0]
    assert layer["gates"] == ["i", "f", "c", "o"]
    u = layer["units"]
    for w in layer["weights"]:
        assert [g["gate"] for g in w["gate_stats"]] == ["i", "f", "c", "o"]
        values = _dataset_values(path, w["dataset"]).astype(np.float64)
        for k, g in enumerate(w["gate_stats"]):
            block = values[..., k * u : (k + 1) * u]
            assert math.isclose(g["mean"], block.mean(), rel_tol=1e-12, abs_tol=1e-15)
            if w["role"] == "recurrent_kernel":
                gram = block.T @ block - np.eye(u)
                assert math.isclose(g["orth_error"], np.linalg.norm(gram), rel_tol=1e-9)
                assert math.isclose(
                    g["max_singular"], np.linalg.svd(block, compute_uv=False)[0], rel_tol=1e-9
                )
            else:
                assert "orth_error" not in g
    table = run_cli("inspect", FIXTURES / "k3_seq_input_lstm_concat.keras", "--gates").stdout
    assert "‖QᵀQ−I‖" in table and "σmax" in table


def test_layer_glob_narrows_and_reaches_nested_layers():
    path = FIXTURES / "k3_functional_nested.keras"
    names = [x["name"] for x in run_cli("inspect", path, "--json").json()["layers"]]
    nested = [n for n in names if "/" in n]
    assert nested, names
    inner = nested[0].rsplit("/", 1)[1]
    only = run_cli("inspect", path, "--json", "--layer", inner).json()["layers"]
    assert [x["name"] for x in only] == [nested[0]]
    assert [
        x["name"] for x in run_cli("inspect", path, "--json", "--layer", nested[0]).json()["layers"]
    ] == [nested[0]]


def test_layer_glob_matching_nothing_is_a_usage_error():
    run = run_cli("inspect", FIXTURES / "k3_functional_mixed.keras", "--layer", "nope*")
    assert run.exit_code == 2
    assert "nope*" in run.stderr and "available:" in run.stderr
    assert "Traceback" not in run.stderr


def test_weights_only_files_say_settings_are_inferred():
    for entry in fixture_entries(format="weights.h5"):
        run = run_cli("inspect", FIXTURES / entry["file"])
        assert run.exit_code == 0
        assert "no configuration" in run.stdout
        doc = run_cli("inspect", FIXTURES / entry["file"], "--json").json()
        assert doc["config_known"] is False
        assert all(x["merge_mode"] is None for x in doc["layers"])


def test_model_without_bidirectional_layers(tmp_path):
    src = FIXTURES / "k3_seq_input_lstm_concat.keras"
    # Same archive, with a config that has only a Dense layer.
    out = tmp_path / "dense_only.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                data = (
                    b'{"class_name": "Sequential", "config": {"name": "s", "layers": '
                    b'[{"class_name": "Dense", "config": {"name": "d", "units": 1}}]}}'
                )
            zout.writestr(info, data)
    run = run_cli("inspect", out)
    assert run.exit_code == 0
    assert "no Bidirectional layers" in run.stdout
    assert run_cli("inspect", out, "--json").json()["layers"] == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"hello, this is text\n", "not a Keras model file"),
        (bytes(range(256)) * 10, "not a Keras model file"),
    ],
)
def test_files_that_are_not_models(tmp_path, content, message):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    run = run_cli("inspect", path)
    assert run.exit_code == 3
    assert message in run.stderr and str(path) in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_truncated_archive_is_an_input_error(tmp_path):
    data = (FIXTURES / "k3_functional_mixed.keras").read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[: len(data) // 2])
    run = run_cli("inspect", path)
    assert run.exit_code == 3 and run.stderr.startswith("Error: ")


def test_hdf5_that_is_not_a_model(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3.0)
    run = run_cli("inspect", path)
    assert run.exit_code == 3
    assert "not a Keras model" in run.stderr


def test_inspect_does_not_import_tensorflow_or_keras():
    code = (
        "import sys\n"
        "from bilstm_cli.cli import main\n"
        "try:\n"
        f"    main(['inspect', {str(FIXTURES / 'k3_functional_mixed.keras')!r}, '--gates'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_starts_no_other_process():
    # Importing h5py asks platform.uname() for a field that Python fills in by running
    # `uname -p`; the command declares it undetermined first, so no process is started.
    code = (
        "import sys\n"
        "def hook(event, args):\n"
        "    if event in ('subprocess.Popen', 'os.posix_spawn', 'os.fork', 'os.exec'):\n"
        "        sys.stderr.write('started: ' + event + '\\n'); sys.stderr.flush()\n"
        "sys.addaudithook(hook)\n"
        f"sys.argv = ['bilstm', 'inspect', {str(FIXTURES / 'k3_functional_mixed.keras')!r}]\n"
        "from bilstm_cli.cli.entry import run\n"
        "run()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "started:" not in out.stderr and "bi_gru_mul" in out.stdout


def test_a_keras_file_loads_no_reader_of_other_frameworks():
    # Start-up cost: every file is asked whether it is a PyTorch, safetensors, .npz or ONNX
    # file, but the readers of those load only when one is found.
    readers = ("foreign", "foreign_layout", "tensors", "torch_zip", "onnx_tensors")
    code = (
        "import sys\n"
        "from bilstm_cli.cli import main\n"
        "def run(args):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "def loaded():\n"
        f"    return sorted(m for m in {readers!r} if 'bilstm_cli.formats.' + m in sys.modules)\n"
        f"run(['inspect', {str(FIXTURES / 'k3_functional_mixed.keras')!r}, '--gates'])\n"
        "print('loaded:', loaded())\n"
        f"run(['inspect', {str(FIXTURES / 'foreign' / 'lstm_bi2.pt')!r}])\n"
        "print('loaded:', loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("loaded: ")]
    keras_only, after_torch = (line.removeprefix("loaded: ") for line in lines)
    assert keras_only == "[]"
    assert after_torch == "['foreign', 'foreign_layout', 'tensors', 'torch_zip']"


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "bilstm_cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "bilstm" in out.stdout


def test_console_script_is_installed():
    exe = shutil.which("bilstm") or str(
        __import__("pathlib").Path(sys.executable).parent / "bilstm"
    )
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("inspect",):
        assert command in out.stdout


def test_statistics_taken_beside_the_reading_are_the_same(monkeypatch):
    import bilstm_cli as bl
    from bilstm_cli.ops import inspect as inspect_op

    path = str(FIXTURES / "k3_functional_mixed.keras")
    inline = bl.inspect(path, gates=True).to_dict()
    monkeypatch.setattr(inspect_op, "_BESIDE", 0)  # every weight on the helper thread
    assert bl.inspect(path, gates=True).to_dict() == inline

    def broken(values):
        raise RuntimeError("statistics failed")

    monkeypatch.setattr(inspect_op, "weight_stats", broken)
    with pytest.raises(RuntimeError, match="statistics failed"):
        bl.inspect(path)
