"""The Python library under the command: what a notebook or a CI script gets from
``import bilstm_cli``, and that it matches what the command prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl

LSTM_H5 = FIXTURES / "k2_seq_lstm.h5"
KERAS = FIXTURES / "k3_seq_input_lstm_concat.keras"


def _python(code: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=FIXTURES.parent
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_import_loads_nothing_heavy_and_changes_nothing():
    out = _python(
        "import json, os, sys\n"
        "env = dict(os.environ)\n"
        "import bilstm_cli\n"
        "heavy = ['numpy', 'h5py', 'click', 'rich', 'tensorflow', 'keras', 'torch']\n"
        "print(json.dumps({'loaded': [m for m in heavy if m in sys.modules],\n"
        "                  'env_same': env == dict(os.environ)}))\n"
    )
    assert json.loads(out) == {"loaded": [], "env_same": True}


def test_library_calls_change_no_process_setting_and_import_no_cli():
    out = _python(
        "import json, os, sys\n"
        "import h5py, numpy as np\n"
        "h5py.h5pl.append(b'/nonexistent/plugins')\n"
        "def plugins(): return [h5py.h5pl.get(i).decode() for i in range(h5py.h5pl.size())]\n"
        "before = (dict(os.environ), plugins(), np.geterr())\n"
        "import bilstm_cli as bl\n"
        "bl.inspect('fixtures/k2_seq_lstm.h5', gates=True)\n"
        "bl.diff('fixtures/k2_seq_lstm.h5', 'fixtures/k3_seq_input_lstm_concat.keras')\n"
        "bl.plan_init('fixtures/k2_seq_lstm.h5', seed=1).preview()\n"
        "after = (dict(os.environ), plugins(), np.geterr())\n"
        "print(json.dumps({'same': before == after, 'plugins': after[1],\n"
        "                  'cli': [m for m in ('click', 'rich') if m in sys.modules]}))\n"
    )
    doc = json.loads(out)
    assert doc["same"] and "/nonexistent/plugins" in doc["plugins"]
    assert doc["cli"] == []


def test_plugin_search_path_is_empty_while_a_file_is_open():
    import h5py

    h5py.h5pl.append(b"/nonexistent/plugins")
    try:
        with bl.open_model(str(LSTM_H5)) as model:
            assert h5py.h5pl.size() == 0
            model.layers[0].weights[0].read()
        paths = [h5py.h5pl.get(i) for i in range(h5py.h5pl.size())]
        assert b"/nonexistent/plugins" in paths
    finally:
        while h5py.h5pl.size():
            h5py.h5pl.remove(0)


def test_open_model_reads_weights_inside_its_block_only():
    with bl.open_model(str(LSTM_H5)) as model:
        layer = model.layers[0]
        assert (layer.name, layer.cell, layer.units, layer.merge_mode) == (
            "bidirectional",
            "LSTM",
            3,
            "concat",
        )
        assert layer.settings["backward"].go_backwards is True
        forward, backward = layer.directions
        assert forward.name == "forward" and [w.role for w in forward.weights] == [
            "kernel",
            "recurrent_kernel",
            "bias",
        ]
        kernel = forward.weights[0]
        values = kernel.read()
        assert values.shape == kernel.shape == (4, 12) and values.dtype == np.float32
    with pytest.raises(bl.UsageError, match="closed"):
        kernel.read()


def test_errors_carry_the_exit_code_and_the_line_the_command_prints(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(bl.InputError) as caught:
        bl.inspect(missing)
    assert caught.value.exit_code == 3
    run = run_cli("inspect", missing)
    assert run.exit_code == 3 and run.stderr == f"Error: {caught.value.message}\n"
    with pytest.raises(bl.UsageError) as usage:
        bl.plan_init(str(LSTM_H5), init=["no_such_strategy"])
    assert usage.value.exit_code == 2
    assert isinstance(usage.value, bl.BilstmError)


def test_inspect_to_dict_is_the_json_document():
    report = bl.inspect(str(LSTM_H5), gates=True)
    assert report.to_dict() == run_cli("inspect", LSTM_H5, "--gates", "--json").json()


def test_diff_to_dict_is_the_json_document():
    delta = bl.diff(str(LSTM_H5), str(KERAS), gates=True)
    run = run_cli("diff", LSTM_H5, KERAS, "--gates", "--json")
    assert run.exit_code == 1 and not delta.identical
    assert delta.to_dict() == run.json()


def _without_timings(doc):
    doc.pop("timings")
    return doc


def test_plan_apply_and_dry_run_match_the_command(tmp_path):
    plan = bl.plan_init(str(KERAS), init=["recurrent_kernel=orthogonal", "bias[f]=ones"], seed=3)
    preview = _without_timings(plan.to_dict())
    dry = run_cli(
        "init",
        KERAS,
        "--init",
        "recurrent_kernel=orthogonal",
        "--init",
        "bias[f]=ones",
        "--seed",
        "3",
        "--dry-run",
        "--json",
    )
    assert preview == _without_timings(dry.json())

    result = bl.apply(plan, str(tmp_path / "lib.keras"))
    assert result.verified and result.output == str(tmp_path / "lib.keras")
    cli = run_cli(
        "init",
        KERAS,
        "-o",
        tmp_path / "cli.keras",
        "--init",
        "recurrent_kernel=orthogonal",
        "--init",
        "bias[f]=ones",
        "--seed",
        "3",
        "--json",
    )
    assert (tmp_path / "lib.keras").read_bytes() == (tmp_path / "cli.keras").read_bytes()
    lib_doc, cli_doc = _without_timings(result.to_dict()), _without_timings(cli.json())
    assert {**lib_doc, "output": None} == {**cli_doc, "output": None}


def test_a_plan_is_applied_once_per_output_and_refuses_a_changed_input(tmp_path):
    src = tmp_path / "m.h5"
    src.write_bytes(LSTM_H5.read_bytes())
    plan = bl.plan_transplant(str(FIXTURES / "cudnn_seq_lstm.h5"), str(src), by="order")
    assert [p["target"] for p in plan.result.extra["pairs"]] == [
        "bidirectional/forward",
        "bidirectional/backward",
    ]
    out = tmp_path / "out.h5"
    assert bl.apply(plan, str(out)).verified
    with pytest.raises(bl.OutputError, match="already exists"):
        bl.apply(plan, str(out))
    os.utime(src, ns=(0, 0))
    with pytest.raises(bl.InputError, match="changed since the plan was made"):
        bl.apply(plan, str(out), force=True)


def test_a_failed_verification_is_a_verify_error_and_writes_nothing(tmp_path, monkeypatch):
    from bilstm_cli import strategies

    monkeypatch.setattr(strategies, "facts", lambda *a, **k: [("orthogonal blocks", False, "off")])
    plan = bl.plan_init(str(LSTM_H5), init=["recurrent_kernel=orthogonal"], seed=1)
    with pytest.raises(bl.VerifyError) as caught:
        bl.apply(plan, str(tmp_path / "out.h5"))
    assert caught.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_the_library_never_prints(capfd, tmp_path):
    bl.inspect(str(KERAS), gates=True)
    plan = bl.plan_transplant(str(LSTM_H5), str(KERAS))
    bl.apply(plan, str(tmp_path / "t.keras"))
    bl.diff(str(LSTM_H5), str(tmp_path / "t.keras"))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_every_public_name_is_exported_and_documented():
    for name in bl.__all__:
        if name == "__version__":
            continue
        value = getattr(bl, name)
        assert value.__doc__ and value.__doc__.strip(), name
    assert sorted(bl.__all__) == sorted(["__version__", *bl._EXPORTS])


@pytest.mark.parametrize(
    ("name", "part"),
    [("bi.weights.json", "bi_00003.weights.h5"), ("bi_dir", "model.weights.h5")],
)
def test_a_plan_refuses_a_shard_or_folder_file_changed_since_planning(tmp_path, name, part):
    """A sharded JSON or a model folder is more than one file: each of them is watched."""
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "sharded", src, ignore=shutil.ignore_patterns("*.keras", "k310*"))
    plan = bl.plan_init(str(src / name), init=["bias=zeros"], seed=1)
    changed = src / part if name.endswith(".json") else src / name / part
    os.utime(changed, ns=(0, 0))
    with pytest.raises(bl.InputError, match="changed since the plan was made"):
        bl.apply(plan, str(tmp_path / ("out.weights.json" if name.endswith(".json") else "out")))
    assert not list(tmp_path.glob("out*"))
