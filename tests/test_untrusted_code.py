"""Nothing a model file names is ever imported, unmarshalled, called or loaded.

A configuration may name modules (custom layers' ``module`` and ``registered_name``,
serialized activations and initializers) and may carry marshalled bytecode (``Lambda``
layers). Real modules of those names are planted on ``PYTHONPATH`` (importing one leaves a
marker file), the bytecode would leave a marker when run, and an audit hook watches for
unmarshalling it, for unpickling and for starting processes, while ``inspect`` and ``init``
read such files in a fresh interpreter. An HDF5 filter a file asks for must not make the
library load shared objects from its plugin path either.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from fuzzing import FIXTURES, edit_config, edit_h5, weight_datasets

PLANTED = ("bilstm_planted", "custom_objects", "keras", "tensorflow", "tf_keras")
SUBMODULES = ("keras.layers", "keras.src", "keras.src.models", "keras.src.models.functional",
              "keras.initializers", "keras.saving", "tensorflow.keras")

WATCHER = r"""
import sys
payload = bytes.fromhex(sys.argv[1])
planted = set(sys.argv[2].split(","))
seen = []

def hook(event, args):
    if event in ("marshal.loads", "marshal.load") and args and payload in bytes(args[0] or b""):
        seen.append("unmarshalled the Lambda bytecode")
    elif event == "exec" and args and getattr(args[0], "co_name", "") == "planted_payload":
        seen.append("executed the Lambda bytecode")
    elif event == "pickle.find_class":
        seen.append(f"unpickled {args}")
    elif event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "ctypes.dlopen"):
        seen.append(f"{event} {args!r:.100}")
    elif event == "import" and args and args[0].split(".")[0] in planted:
        seen.append(f"import {args[0]}")

# Libraries do things of their own when imported (h5py asks `uname -p`, NumPy loads the C
# library through ctypes): import everything first, then watch what reading a file does.
import bilstm_cli.ops.plan_init, bilstm_cli.ops.inspect, bilstm_cli.cli.render  # noqa: E401,F401
from bilstm_cli.cli import main
sys.addaudithook(hook)
try:
    main(sys.argv[3:])
finally:
    if seen:
        sys.stderr.write("AUDIT: " + "; ".join(seen) + "\n")
"""


@pytest.fixture
def planted(tmp_path):
    """Importable modules named like those in model configs; each import leaves a mark."""
    site = tmp_path / "site"
    marker = tmp_path / "MARKER"
    for name in (*PLANTED, *SUBMODULES):
        package = site.joinpath(*name.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write('imported {name}\\n')\n"
            "def __getattr__(name):\n"
            f"    open({str(marker)!r}, 'a').write('used ' + name + '\\n')\n"
            "    return lambda *a, **k: None\n"
        )
    return site, marker


def payload(marker: Path) -> bytes:
    """Marshalled bytecode of a function that leaves a mark when called."""
    source = (
        "def planted_payload(x=None):\n"
        f"    open({str(marker)!r}, 'a').write('ran the Lambda bytecode\\n')\n"
        "    return x\n"
    )
    namespace: dict = {}
    exec(compile(source, "<model file>", "exec"), namespace)
    return marshal.dumps(namespace["planted_payload"].__code__)


def _named(module: str, class_name: str, config) -> dict:
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": f"{module}>{class_name}"}


def _bidirectionals(config):
    stack, found = [config], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Bidirectional":
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def hostile_keras(tmp_path: Path, code: bytes) -> Path:
    """A Keras 3 archive whose config names planted modules and carries a Lambda payload."""
    b64 = base64.b64encode(code).decode()

    def edit(config):
        layers = config["config"]["layers"]
        for entry in layers:
            if entry.get("module") == "custom_objects":
                entry["module"] = "bilstm_planted"
                entry["registered_name"] = "bilstm_planted>ScaleShift"
        lam = {"module": "keras.layers", "class_name": "Lambda", "name": "planted_lambda",
               "registered_name": None, "inbound_nodes": [],
               "config": {"name": "planted_lambda", "function": {
                   "class_name": "__lambda__",
                   "config": {"code": b64, "defaults": None, "closure": None}},
                   "arguments": {}, "output_shape": None}}
        layers.append(lam)
        layers.append(_named("bilstm_planted", "Evil", {"name": "evil", "trainable": True}))
        for bi in _bidirectionals(config):
            wrapped = bi["config"]["layer"]
            wrapped["module"] = "bilstm_planted"
            wrapped["config"]["activation"] = _named("bilstm_planted", "function", "boom")
            wrapped["config"]["kernel_initializer"] = _named("bilstm_planted", "Init", {})
            wrapped["config"]["dtype"] = _named("bilstm_planted", "Policy", {"name": "float32"})
        return config

    out = tmp_path / "hostile.keras"
    edit_config(FIXTURES / "k3_custom_layer.keras", out, edit)
    return out


def hostile_h5(tmp_path: Path, code: bytes) -> Path:
    """A Keras 2 HDF5 model whose Lambda is the payload and whose config names modules."""
    b64 = base64.b64encode(code).decode()

    def edit(config):
        for entry in config["config"]["layers"]:
            if entry.get("class_name") == "Lambda":
                entry["config"]["function"] = [b64, None, None]
                entry["config"]["function_type"] = "lambda"
                entry["config"]["module"] = "bilstm_planted"
        config["config"]["layers"].append(_named("tf_keras", "Evil", {"name": "evil"}))
        for bi in _bidirectionals(config):
            bi["config"]["layer"]["config"]["activation"] = _named("tensorflow", "f", "boom")
        return config

    out = tmp_path / "hostile.h5"
    edit_config(FIXTURES / "k2_lambda_custom.h5", out, edit)
    import h5py

    with h5py.File(out, "r+") as f:
        f.attrs["training_config"] = json.dumps(
            {"loss": _named("bilstm_planted", "Loss", {}), "optimizer_config":
             _named("keras", "Adam", {"learning_rate": 0.001})}
        )
    return out


def run_watched(
    site: Path, code: bytes, *args: str | Path, env=None
) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", WATCHER, code.hex(), ",".join(PLANTED), *map(str, args)],
        capture_output=True, text=True, timeout=120, env=environment, cwd=site.parent,
    )


def test_the_planted_modules_and_payload_are_live(planted, tmp_path):
    """Controls: importing a planted module, or running the payload, does leave a mark."""
    site, marker = planted
    code = payload(marker)
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", "import bilstm_planted, keras.layers"], env=env,
                   check=True, timeout=60)
    # The control: rebuilding and calling the function is what must never happen.
    types.FunctionType(marshal.loads(code), {})(None)
    text = marker.read_text()
    assert "imported bilstm_planted" in text and "imported keras" in text
    assert "ran the Lambda bytecode" in text


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_nothing_named_in_a_config_is_imported_or_run(planted, tmp_path, kind):
    site, marker = planted
    code = payload(marker)
    model = (hostile_keras if kind == "keras" else hostile_h5)(tmp_path, code)
    out = tmp_path / f"out.{kind}"
    commands = [
        ("inspect", model),
        ("inspect", model, "--json", "--gates"),
        ("init", model, "--dry-run", "--init", "recurrent_kernel=orthogonal", "--seed", "3"),
        ("init", model, "-o", out, "--init", "zeros", "--seed", "1"),
    ]
    for args in commands:
        run = run_watched(site, code, *args)
        assert run.returncode == 0, (args, run.stderr)
        assert "AUDIT" not in run.stderr, run.stderr
        assert not marker.exists(), marker.read_text()
    # The written file carries the configuration over untouched, payload included.
    again = run_watched(site, code, "inspect", out, "--json")
    assert again.returncode == 0 and "AUDIT" not in again.stderr
    assert not marker.exists()


def test_a_module_key_naming_a_module_on_the_path_is_not_imported_on_errors(planted, tmp_path):
    """Also when the file is otherwise broken and the command fails."""
    site, marker = planted
    code = payload(marker)

    def edit(config):
        for bi in _bidirectionals(config):
            bi["config"]["layer"] = _named("bilstm_planted", "PlantedRNN", {"units": 3})
        return config

    model = tmp_path / "custom_rnn.keras"
    edit_config(FIXTURES / "k3_seq_input_lstm_concat.keras", model, edit)
    for args in (("inspect", model), ("init", model, "-o", tmp_path / "o.keras")):
        run = run_watched(site, code, *args)
        assert run.returncode in (0, 3), run.stderr
        assert "Traceback" not in run.stderr and "AUDIT" not in run.stderr, run.stderr
        assert not marker.exists()


# --- HDF5 filter plugins -----------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path):
    """A directory holding a shared object whose initialiser leaves a mark when loaded."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a planted HDF5 plugin")
    d = tmp_path / "plugins"
    d.mkdir()
    marker = tmp_path / "PLUGIN_LOADED"
    source = tmp_path / "planted.c"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'    FILE *f = fopen("{marker}", "a"); if (f) {{ fputs("loaded\\n", f); fclose(f); }}\n'
        "}\n"
    )
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(d / "libplanted.so"), str(source)],
                   check=True, capture_output=True, timeout=60)
    return d, marker


def _filtered(tmp_path: Path, which: str) -> Path:
    """A legacy model with one dataset compressed by filter 32001 (a plugin's number)."""

    def edit(f):
        weights = weight_datasets(f)
        path = weights[0] if which == "weight" else "model_weights/dense/seq_lstm/dense/kernel"
        shape = f[path].shape
        del f[path]
        ds = f.create_dataset(path, shape=shape, dtype="f4", chunks=shape, compression=32001,
                              allow_unknown_filter=True)
        ds.id.write_direct_chunk((0,) * len(shape), np.zeros(shape, "f4").tobytes())

    out = tmp_path / f"filtered_{which}.h5"
    edit_h5(FIXTURES / "k3_legacy_seq_lstm.h5", out, edit)
    return out


def test_reading_an_unknown_filter_loads_plugins_without_the_guard(tmp_path, plugin_dir):
    """Control: plain h5py does load every library in the plugin path for such a file."""
    plugins, marker = plugin_dir
    model = _filtered(tmp_path, "weight")
    script = (
        "import h5py, sys\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "try:\n    f[sys.argv[2]][()]\nexcept OSError:\n    pass\n"
    )
    import h5py

    with h5py.File(model, "r") as f:
        path = weight_datasets(f)[0]
    subprocess.run([sys.executable, "-c", script, str(model), path], timeout=60,
                   env={**os.environ, "HDF5_PLUGIN_PATH": str(plugins)}, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("which", ["weight", "other"])
def test_a_filter_named_by_the_file_loads_no_plugin(tmp_path, plugin_dir, planted, which):
    plugins, marker = plugin_dir
    site, _ = planted
    model = _filtered(tmp_path, which)
    env = {"HDF5_PLUGIN_PATH": str(plugins)}
    code = b"unused"
    inspect = run_watched(site, code, "inspect", model, env=env)
    init = run_watched(site, code, "init", model, "-o", tmp_path / "o.h5", "--init", "zeros",
                       "--seed", "1", env=env)
    if which == "weight":
        assert inspect.returncode == 3 and "filter 32001" in inspect.stderr, inspect.stderr
    else:
        assert inspect.returncode == 0, inspect.stderr  # the Dense kernel is never read
    assert init.returncode == 3 and "filter 32001" in init.stderr, init.stderr
    for run in (inspect, init):
        assert len(run.stderr.splitlines()) <= 1 and "Traceback" not in run.stderr
    assert not marker.exists(), "a plugin library was loaded because the file asked for it"
    assert not (tmp_path / "o.h5").exists()


def test_npz_weights_member_is_refused_without_unpickling(tmp_path):
    """Keras can store a .keras model's weights as model.weights.npz, Python objects pickled
    by numpy.save: reading them would run what the pickle names, so the file is refused."""
    import io
    import pickle
    import zipfile

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = io.BytesIO()
    pickle.dump({"layers/bidirectional/forward_layer/cell/vars/0": Payload()}, blob)
    source = FIXTURES / "k3_seq_input_lstm_concat.keras"
    model = tmp_path / "npz.keras"
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(model, "w") as out:
        for name in ("metadata.json", "config.json"):
            out.writestr(name, z.read(name))
        out.writestr("model.weights.npz", blob.getvalue())
    for args in (["inspect", model], ["init", model, "-o", tmp_path / "o.keras"]):
        run = run_cli(*args)
        assert run.exit_code == 3 and run.stdout == ""
        assert "model.weights.npz" in run.stderr and "pickled" in run.stderr
        assert "never loaded" in run.stderr
    assert not marker.exists() and not (tmp_path / "o.keras").exists()
