"""Model folders (``save_model(zipped=False)``): read like a ``.keras`` archive, written as a
new folder built beside the target and renamed in; ``--force`` replaces a model folder only."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli.formats import keras_dir

DIR = FIXTURES / "sharded" / "bi_dir"
ARCHIVE = FIXTURES / "sharded" / "bi.keras"


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error(run, code: int, *words: str) -> str:
    assert run.exit_code == code, (run.exit_code, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert run.stdout == ""
    return lines[0]


def test_inspect_reads_a_folder_as_its_archive():
    folder, archive = run_cli("inspect", DIR, "--json"), run_cli("inspect", ARCHIVE, "--json")
    assert folder.exit_code == archive.exit_code == 0, folder.stderr
    a, b = folder.json(), archive.json()
    assert a["format"] == "keras-dir" and b["format"] == "keras"
    assert a["keras_version"] == "3.15.1"
    assert a["layers"] == b["layers"]
    assert [(x["name"], x["cell"], x["units"]) for x in a["layers"]] == [
        ("bi_lstm", "LSTM", 3),
        ("bi_gru", "GRU", 2),
    ]


def test_init_writes_a_new_folder_with_everything_else_copied(tmp_path):
    before = tree(DIR)
    out = tmp_path / "new_model"
    run = run_cli("init", DIR, "-o", out, "--layer", "bi_gru", "--init", "bias=zeros", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["verified"] is True
    assert tree(DIR) == before
    after = tree(out)
    assert sorted(after) == sorted(before)
    assert after["config.json"] == before["config.json"]
    assert after["metadata.json"] == before["metadata.json"]
    assert after["model.weights.h5"] != before["model.weights.h5"]
    with bl.open_model(str(out)) as new, bl.open_model(str(DIR)) as old:
        for a, b in zip(new.layers, old.layers):
            for wa, wb in zip(a.weights, b.weights):
                if a.name == "bi_gru" and wa.role == "bias":
                    assert not wa.read().any()
                else:
                    np.testing.assert_array_equal(wa.read(), wb.read())
    assert [p.name for p in tmp_path.iterdir()] == ["new_model"]


def test_assets_are_copied_too(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DIR, src)
    (src / "assets").mkdir(exist_ok=True)  # Keras writes it empty; git keeps no empty folder
    (src / "assets" / "empty").mkdir()
    (src / "assets" / "vocab.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    assert run_cli("init", src, "-o", out, "--init", "kernel=zeros").exit_code == 0
    assert (out / "assets" / "vocab.txt").read_text() == "a\nb\n"
    assert (out / "assets" / "empty").is_dir()


def test_force_replaces_a_model_folder_only_after_the_new_one_verified(tmp_path, monkeypatch):
    out = tmp_path / "m"
    assert run_cli("init", DIR, "-o", out, "--init", "kernel=zeros").exit_code == 0
    one_error(run_cli("init", DIR, "-o", out, "--init", "kernel=ones"), 4, "--force")
    # A verification that fails leaves the old folder as it was.
    old = tree(out)
    monkeypatch.setattr(keras_dir, "same_bytes", lambda a, b: False)
    run = run_cli("init", DIR, "-o", out, "--init", "kernel=ones", "--force")
    assert run.exit_code == 1 and "changed" in run.stderr
    assert tree(out) == old
    monkeypatch.undo()
    run = run_cli("init", DIR, "-o", out, "--init", "kernel=ones", "--force")
    assert run.exit_code == 0, run.stderr
    with bl.open_model(str(out)) as model:
        assert (model.layers[0].weight("forward", "kernel").read() == 1).all()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # nothing set aside is left


def test_force_never_replaces_a_folder_that_is_not_a_model(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    one_error(
        run_cli("init", DIR, "-o", other, "--init", "kernel=zeros", "--force"),
        4,
        "not a Keras model folder",
    )
    assert (other / "cat.jpg").read_bytes() == b"\xff\xd8"
    (tmp_path / "file").write_text("x")
    one_error(run_cli("init", DIR, "-o", tmp_path / "file", "--force"), 4, "not a folder")
    one_error(run_cli("init", DIR, "-o", tmp_path / "x.keras"), 4, ".keras")


def test_transplant_between_a_folder_and_sharded_weights(tmp_path):
    donor = tmp_path / "donor"
    assert run_cli("init", DIR, "-o", donor, "--init", "recurrent_kernel=zeros").exit_code == 0
    out = tmp_path / "o.weights.json"
    sharded = FIXTURES / "sharded" / "bi.weights.json"
    run = run_cli("transplant", donor, sharded, "-o", out, "--layer", "bi_lstm")
    assert run.exit_code == 0, run.stderr
    assert run_cli("diff", donor, out, "--layer", "bi_lstm").exit_code == 0
    assert run_cli("diff", donor, out, "--layer", "bi_gru").exit_code == 1


def copy_dir(tmp_path: Path) -> Path:
    dest = tmp_path / "in"
    shutil.copytree(DIR, dest)
    return dest


def test_a_folder_without_config_or_with_pickled_weights_is_refused(tmp_path):
    src = copy_dir(tmp_path)
    os.remove(src / "config.json")
    one_error(run_cli("inspect", src), 3, "no config.json")
    src = copy_dir(tmp_path / "b")
    os.rename(src / "model.weights.h5", src / "model.weights.npz")
    one_error(run_cli("inspect", src), 3, "pickled")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(run_cli("inspect", empty), 3, "directory")


def test_weights_linked_from_outside_the_folder_are_refused(tmp_path):
    src = copy_dir(tmp_path)
    outside = tmp_path / "elsewhere.h5"
    os.rename(src / "model.weights.h5", outside)
    os.symlink(outside, src / "model.weights.h5")
    out = tmp_path / "out"
    one_error(run_cli("init", src, "-o", out, "--init", "kernel=zeros"), 3, "outside the folder")
    assert not out.exists()


def test_a_shape_that_disagrees_with_the_config_is_one_line_exit_3(tmp_path):
    src = copy_dir(tmp_path)
    config = json.loads((src / "config.json").read_text())
    lstm = next(x for x in config["config"]["layers"] if x["class_name"] == "Bidirectional")
    assert lstm["class_name"] == "Bidirectional"
    lstm["config"]["layer"]["config"]["units"] = 4
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    one_error(run_cli("init", src, "-o", out, "--init", "kernel=zeros"), 3, "bi_lstm", "4 units")
    assert not out.exists()


@pytest.mark.parametrize("member", ["config.json", "metadata.json"])
def test_bad_json_in_a_folder_is_one_line_exit_3(tmp_path, member):
    src = copy_dir(tmp_path)
    (src / member).write_text("{not json")
    one_error(run_cli("inspect", src), 3, member, "not valid JSON")
