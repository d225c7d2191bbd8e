"""Sharded weights (``.weights.json`` + shards, Keras 3.10+): read with roles inferred, written
with Keras' shard naming and the input's shard plan, refused cleanly when the JSON is bad."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, ROOT, run_cli

import bilstm_cli as bl
from bilstm_cli.formats import sharded_write

SHARDED = FIXTURES / "sharded"
LISTS = SHARDED / "bi.weights.json"  # groups split over shards, list form
STRINGS = SHARDED / "k310.weights.json"  # one shard per group, 3.10 string form
SINGLE = SHARDED / "bi_dir" / "model.weights.h5"  # the same values in one file


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def one_error(run, code: int, *words: str) -> str:
    assert run.exit_code == code, (run.exit_code, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert run.stdout == ""
    return lines[0]


def copy_set(json_path: Path, dest: Path) -> Path:
    """A copy of a weights JSON and its shards in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    base = json_path.name[: -len(".weights.json")]
    for p in json_path.parent.glob(f"{base}*"):
        if p.is_file() and (p.name.startswith(base + "_") or p == json_path):
            shutil.copy(p, dest / p.name)
    return dest / json_path.name


def edit_map(json_path: Path, change) -> None:
    doc = json.loads(json_path.read_text())
    change(doc["weight_map"])
    json_path.write_text(json.dumps(doc, indent=4))


@pytest.mark.parametrize("path", [LISTS, STRINGS], ids=["lists", "strings"])
def test_inspect_infers_roles_and_reads_the_same_values_as_one_file(path):
    with bl.open_model(str(path)) as model, h5py.File(SINGLE) as single:
        assert model.format == "weights.json" and not model.config_known
        got = [(layer.name, layer.cell, layer.units) for layer in model.layers]
        assert got == [("bi_lstm", "LSTM", 3), ("bi_gru", "GRU", 2)]
        assert model.layers[1].forward.reset_after is True
        for layer in model.layers:
            assert [w.role for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"] * 2
            for w in layer.weights:
                np.testing.assert_array_equal(w.read(), single[w.location][()])


def test_a_group_split_over_shards_is_read_from_each_of_its_shards():
    # The forward LSTM's kernel is in bi_00002, its recurrent kernel and bias in bi_00003.
    doc = json.loads(LISTS.read_text())
    assert doc["weight_map"]["/layers/bidirectional/forward_layer/cell/vars"] == [
        "bi_00002.weights.h5",
        "bi_00003.weights.h5",
    ]
    with bl.open_model(str(LISTS)) as model:
        lstm = model.layers[0]
        for role, shard in (("kernel", 2), ("recurrent_kernel", 3), ("bias", 3)):
            w = lstm.weight("forward", role)
            with h5py.File(SHARDED / f"bi_0000{shard}.weights.h5") as f:
                np.testing.assert_array_equal(w.read(), f[w.location][()])


def test_init_writes_shards_named_after_the_output_keeping_the_plan(tmp_path):
    before = digests(SHARDED)
    out = tmp_path / "fresh.weights.json"
    run = run_cli(
        "init", LISTS, "-o", out, "--layer", "bi_lstm", "--direction", "backward",
        "--init", "recurrent_kernel=zeros", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    assert digests(SHARDED) == before  # the input is never modified
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fresh.weights.json"] + [f"fresh_0000{i}.weights.h5" for i in range(6)]
    doc = json.loads(out.read_text())
    original = json.loads(LISTS.read_text())
    assert doc["metadata"] == original["metadata"]
    assert list(doc["weight_map"]) == list(original["weight_map"])
    for group, value in original["weight_map"].items():
        assert doc["weight_map"][group] == [v.replace("bi_", "fresh_") for v in value]
    # Only the shard holding the backward recurrent kernel changed; the rest are byte copies.
    for i in range(6):
        same = (SHARDED / f"bi_0000{i}.weights.h5").read_bytes() == (
            tmp_path / f"fresh_0000{i}.weights.h5"
        ).read_bytes()
        assert same == (i != 1), i
    with bl.open_model(str(out)) as new, bl.open_model(str(LISTS)) as old:
        for a, b in zip(new.layers, old.layers):
            for wa, wb in zip(a.weights, b.weights):
                if (a.name, wa.direction, wa.role) == ("bi_lstm", "backward", "recurrent_kernel"):
                    assert not wa.read().any()
                else:
                    np.testing.assert_array_equal(wa.read(), wb.read())


def test_the_string_form_stays_the_string_form(tmp_path):
    out = tmp_path / "o.weights.json"
    run = run_cli("init", STRINGS, "-o", out, "--init", "bias=ones", "--seed", "1")
    assert run.exit_code == 0, run.stderr
    doc = json.loads(out.read_text())
    assert doc["weight_map"] == {
        k: v.replace("k310_", "o_")
        for k, v in json.loads(STRINGS.read_text())["weight_map"].items()
    }
    with bl.open_model(str(out)) as model:
        for layer in model.layers:
            for direction in ("forward", "backward"):
                assert (layer.weight(direction, "bias").read() == 1).all()


def test_transplant_into_and_from_sharded_and_diff(tmp_path):
    donor = tmp_path / "donor.keras"
    assert (
        run_cli("init", SHARDED / "bi.keras", "-o", donor, "--init", "kernel=zeros").exit_code == 0
    )
    out = tmp_path / "t.weights.json"
    run = run_cli("transplant", donor, LISTS, "-o", out, "--layer", "bi_gru", "--role", "kernel")
    assert run.exit_code == 0, run.stderr
    with bl.open_model(str(out)) as model:
        assert not model.layers[1].weight("forward", "kernel").read().any()
        assert model.layers[0].weight("forward", "kernel").read().any()
    # A sharded file as the donor, into a .keras target: back to the original values.
    back = tmp_path / "back.keras"
    run = run_cli("transplant", LISTS, donor, "-o", back)
    assert run.exit_code == 0, run.stderr
    assert run_cli("diff", back, STRINGS).exit_code == 0
    changed = run_cli("diff", out, STRINGS, "--json")
    assert changed.exit_code == 1


def test_writing_over_the_input_needs_force_and_replaces_the_set(tmp_path):
    path = copy_set(LISTS, tmp_path / "work")
    run = run_cli("init", path, "-o", path, "--init", "kernel=zeros")
    one_error(run, 4, "pass --force")
    run = run_cli("init", path, "-o", path, "--init", "kernel=zeros", "--force")
    assert run.exit_code == 0, run.stderr
    with bl.open_model(str(path)) as model:
        assert all(not w.read().any() for layer in model.layers for w in layer.weights
                   if w.role == "kernel")  # fmt: skip
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_an_existing_shard_at_the_output_needs_force(tmp_path):
    (tmp_path / "o_00003.weights.h5").write_bytes(b"mine")
    run = run_cli("init", LISTS, "-o", tmp_path / "o.weights.json", "--init", "kernel=zeros")
    one_error(run, 4, "o_00003.weights.h5", "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o_00003.weights.h5"]
    run = run_cli("init", LISTS, "-o", tmp_path / "o.h5", "--init", "kernel=zeros")
    one_error(run, 4, ".weights.json")


def test_a_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded_write, "same_bytes", lambda a, b: False)
    run = run_cli("init", LISTS, "-o", tmp_path / "o.weights.json", "--init", "kernel=zeros")
    assert run.exit_code == 1, run.stderr
    assert "holds no written weight" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_one_shard_alone_points_to_its_json(tmp_path):
    run = run_cli("inspect", SHARDED / "bi_00001.weights.h5")
    one_error(run, 3, "one shard", "bi.weights.json")
    alone = tmp_path / "bi_00004.weights.h5"
    shutil.copy(SHARDED / alone.name, alone)
    one_error(run_cli("inspect", alone), 3, "bi.weights.json is not beside it")
    # A complete weights file that only happens to be named like a shard is read as usual.
    named = tmp_path / "run_00001.weights.h5"
    shutil.copy(FIXTURES / "k3_functional_mixed.weights.h5", named)
    assert run_cli("inspect", named).exit_code == 0


BAD_NAMES = {
    "parent": "../x.weights.h5",
    "absolute": "/tmp/x.weights.h5",
    "subfolder": "sub/x.weights.h5",
    "missing": "bi_00009.weights.h5",
}


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_a_bad_shard_name_is_one_line_exit_3_and_nothing_written(tmp_path, kind):
    path = copy_set(LISTS, tmp_path / "in")
    group = "/layers/bidirectional_1/forward_layer/cell/vars"
    edit_map(path, lambda m: m.__setitem__(group, BAD_NAMES[kind]))
    out = tmp_path / "out"
    out.mkdir()
    for args in (("inspect", path), ("init", path, "-o", out / "o.weights.json")):
        run = run_cli(*args)
        line = one_error(run, 3, str(path), BAD_NAMES[kind])
        assert ("missing" in line) == (kind == "missing")
    assert list(out.iterdir()) == []


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    path = copy_set(LISTS, tmp_path / "in")
    outside = tmp_path / "outside.h5"
    shutil.copy(SHARDED / "bi_00005.weights.h5", outside)
    os.remove(path.parent / "bi_00005.weights.h5")
    os.symlink(outside, path.parent / "bi_00005.weights.h5")
    one_error(run_cli("inspect", path), 3, "outside the folder")


def test_nothing_outside_the_folder_is_opened(tmp_path):
    # A FIFO blocks whoever opens it for reading: a run that opened it would never end.
    path = copy_set(LISTS, tmp_path / "in")
    os.mkfifo(tmp_path / "x.weights.h5")
    os.remove(path.parent / "bi_00005.weights.h5")
    os.symlink(tmp_path / "x.weights.h5", path.parent / "bi_00005.weights.h5")
    group = "/layers/dense/vars"
    for name in ("../x.weights.h5", "bi_00005.weights.h5"):
        edit_map(path, lambda m, n=name: m.__setitem__(group, n))
        done = subprocess.run(
            [sys.executable, "-m", "bilstm_cli", "inspect", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1 and "refused" in done.stderr


def test_a_shape_that_disagrees_is_one_line_exit_3(tmp_path):
    path = copy_set(STRINGS, tmp_path / "in")
    with h5py.File(path.parent / "k310_00000.weights.h5", "r+") as f:
        name = "layers/bidirectional/backward_layer/cell/vars/2"
        del f[name]
        f[name] = np.zeros(13, "float32")
    out = tmp_path / "o.weights.json"
    one_error(run_cli("init", path, "-o", out, "--init", "kernel=zeros"), 3, "bias", "(13,)")
    assert not out.exists()


def test_a_dataset_in_two_shards_or_a_group_missing_from_its_shard_is_refused(tmp_path):
    path = copy_set(STRINGS, tmp_path / "in")
    edit_map(path, lambda m: m.__setitem__("/layers/dense/vars", "k310_00000.weights.h5"))
    one_error(run_cli("inspect", path), 3, "'/layers/dense/vars'", "no such group")
    path = copy_set(STRINGS, tmp_path / "in2")
    with h5py.File(path.parent / "k310_00001.weights.h5", "r+") as f:
        f["layers/bidirectional/forward_layer/cell/vars/0"] = np.zeros((4, 12), "float32")
    edit_map(
        path,
        lambda m: m.__setitem__(
            "/layers/bidirectional/forward_layer/cell/vars",
            ["k310_00000.weights.h5", "k310_00001.weights.h5"],
        ),
    )
    one_error(run_cli("inspect", path), 3, "also in shard")


@pytest.mark.parametrize(
    "text, words",
    [
        ("{}", "no weight_map"),
        ('{"weight_map": {}}', "empty"),
        ('{"weight_map": {"/layers/x/vars": 3}}', "not a shard name"),
        ('{"weight_map": {"layers": "a.h5"}}', "not a variable group path"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_a_json_that_is_not_a_weights_map_is_one_line_exit_3(tmp_path, text, words):
    path = tmp_path / "m.weights.json"
    path.write_text(text)
    one_error(run_cli("inspect", path), 3, words)


def big_sharded(folder: Path, units: int = 512, inputs: int = 256) -> Path:
    """A weights JSON with three shards: each direction of a large LSTM in its own, and a
    small Dense group in a third that a kernel re-initialization leaves alone."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    weight_map = {}
    groups = [
        ("layers/bidirectional/forward_layer/cell/vars", [(inputs, 4 * units), (units, 4 * units)]),
        (
            "layers/bidirectional/backward_layer/cell/vars",
            [(inputs, 4 * units), (units, 4 * units)],
        ),
        ("layers/dense/vars", [(2 * units, 2), (2,)]),
    ]
    for i, (group, shapes) in enumerate(groups):
        name = f"big_{i:05}.weights.h5"
        with h5py.File(folder / name, "w") as f:
            g = f.create_group(group)
            for k, shape in enumerate(shapes):
                g[str(k)] = rng.normal(size=shape).astype("float32")
        weight_map[f"/{group}"] = name
    path = folder / "big.weights.json"
    path.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_write_leaves_the_whole_set_or_nothing(tmp_path, signum):
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("Ctrl-C is ignored here (started in the background), and so by the tool")
    source = big_sharded(tmp_path / "in")
    hit = 0
    # A busy machine can let a whole write pass between two looks: more rounds if none landed.
    for k, delay in enumerate(3 * (0.0, 0.01, 0.05, 0.1, 0.2, 0.4)):
        if k % 6 == 0 and hit:
            break
        folder = tmp_path / f"out{k}"
        folder.mkdir()
        out = folder / "o.weights.json"
        args = ["init", str(source), "-o", str(out), "--init", "recurrent_kernel=orthogonal"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "bilstm_cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        while proc.poll() is None and not any(folder.iterdir()):
            time.sleep(0.002)  # until the staging folder appears
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
        names = sorted(p.name for p in folder.iterdir())
        if proc.returncode == 0:
            assert names == ["o.weights.json"] + [f"o_0000{i}.weights.h5" for i in range(3)]
            continue
        hit += 1
        assert proc.returncode in (130, -signal.SIGTERM, -signal.SIGINT), err
        assert "Traceback" not in err
        assert names == [], names  # no shard, no JSON, no staging folder
    if hit == 0:
        pytest.skip("every write finished before the signal arrived")


def test_few_shards_are_open_at_once_and_every_value_is_still_read(monkeypatch):
    from bilstm_cli.formats import sharded

    monkeypatch.setattr(sharded, "MAX_OPEN_SHARDS", 2)
    with bl.open_model(str(LISTS)) as model, h5py.File(SINGLE) as single:
        reader = model.reader
        for _ in range(2):  # shards are closed and opened again in turn
            for layer in model.layers:
                for w in layer.weights:
                    np.testing.assert_array_equal(w.read(), single[w.location][()])
                    assert len(reader._files) <= 2


def test_a_shard_linked_to_a_missing_file_is_exit_3(tmp_path):
    path = copy_set(LISTS, tmp_path / "in")
    os.remove(path.parent / "bi_00002.weights.h5")
    os.symlink(path.parent / "gone.h5", path.parent / "bi_00002.weights.h5")
    one_error(run_cli("inspect", path), 3, "bi_00002.weights.h5", "missing")
