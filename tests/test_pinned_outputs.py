"""What the CLI writes and prints for a given seed, pinned byte for byte.

Each case runs a command on shipped fixtures with relative paths (so nothing depends on where
the test runs) and compares the SHA-256 of the written file, of the ``--json`` document with
its ``timings`` removed, and of the plain text output with those recorded when the values were
first pinned. A change to any of them changes what users get from the same ``--seed``; if that
is intended, say so where the change is made and update the value here.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import FIXTURES, run_cli


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _json_sha(stdout: str) -> str:
    doc = json.loads(stdout)
    doc.pop("timings", None)
    return _sha(json.dumps(doc, sort_keys=True).encode())


# (name, command arguments, output file, file hash, json hash, text hash)
CASES = [
    (
        "init-keras-truncated-normal",
        [
            "init",
            "fixtures/k3_functional_mixed.keras",
            "-o",
            "out.keras",
            "--init",
            "truncated_normal:stddev=0.05",
            "--seed",
            "7",
        ],
        "out.keras",
    ),
    (
        "init-keras-recipe-nested-backward",
        [
            "init",
            "fixtures/k3_functional_nested.keras",
            "-o",
            "out.keras",
            "--init",
            "kernel=glorot_uniform",
            "--init",
            "recurrent_kernel=orthogonal",
            "--init",
            "bias=zeros",
            "--init",
            "bias[f]=ones",
            "--layer",
            "encoder_seq/*",
            "--direction",
            "backward",
            "--seed",
            "3",
        ],
        "out.keras",
    ),
    (
        "init-h5-chrono",
        [
            "init",
            "fixtures/k2_trained_adam.h5",
            "-o",
            "out.h5",
            "--init",
            "bias=chrono:tmax=200",
            "--seed",
            "1",
        ],
        "out.h5",
    ),
    (
        "init-h5-keras-default-gru",
        ["init", "fixtures/k3_legacy_functional_gru.h5", "-o", "out.h5", "--seed", "11"],
        "out.h5",
    ),
    (
        "init-weights-h5-mixed",
        [
            "init",
            "fixtures/k3_functional_mixed.weights.h5",
            "-o",
            "out.weights.h5",
            "--init",
            "he_normal:per_gate=true",
            "--init",
            "recurrent_kernel=identity",
            "--seed",
            "5",
        ],
        "out.weights.h5",
    ),
    (
        "init-pytorch-default-simple",
        [
            "init",
            "fixtures/k3_seq_noinput_gru_sum.keras",
            "-o",
            "out.keras",
            "--init",
            "pytorch_default",
            "--seed",
            "2",
        ],
        "out.keras",
    ),
    (
        "transplant-k2-into-k3",
        [
            "transplant",
            "fixtures/k2_seq_lstm.h5",
            "fixtures/k3_seq_input_lstm_concat.keras",
            "-o",
            "out.keras",
        ],
        "out.keras",
    ),
    (
        "transplant-cudnn-partial",
        [
            "transplant",
            "fixtures/cudnn_seq_lstm.h5",
            "fixtures/k3_seq_input_lstm_concat.keras",
            "-o",
            "out.keras",
            "--by",
            "order",
            "--role",
            "recurrent_kernel[i,f]",
            "--role",
            "bias",
        ],
        "out.keras",
    ),
]

# Recorded from the CLI as it was when this test was written.
EXPECTED: dict[str, tuple[str, str, str]] = {
    "init-keras-truncated-normal": ("db55a8a670dcfa73", "13b137de1795f1b0", "3b050f6cba0ff6e4"),
    "init-keras-recipe-nested-backward": (
        "8e56f1852e33e615",
        "1fe606677bca7698",
        "f608b800c29f1e7a",
    ),
    "init-h5-chrono": ("342d47a73ed5cccf", "842d30bb253c719f", "9f6dbe8d0cdf9f61"),
    "init-h5-keras-default-gru": ("e902d7b444c86193", "b07c3fbb0b3f66c9", "183f79d2c72d6c30"),
    "init-weights-h5-mixed": ("4b0d3c99e4677b10", "50322063a213ac29", "c74b21e5792b792c"),
    "init-pytorch-default-simple": ("6023d829892f83a5", "321e30cda18d81b1", "bfab4482ab553129"),
    "transplant-k2-into-k3": ("e1257f6da316185c", "e5cc6d49d9bc945b", "796bb0495b75469f"),
    "transplant-cudnn-partial": ("9f375277b10acb59", "378eb753a0e62fb5", "c9787856a093e3b1"),
}


def _run(tmp_path, monkeypatch, args, output):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    text = run_cli(*args)
    assert text.exit_code == 0, text.stderr
    file_sha = _sha((tmp_path / output).read_bytes())
    (tmp_path / output).unlink()
    doc = run_cli(*args, "--json")
    assert doc.exit_code == 0, doc.stderr
    assert _sha((tmp_path / output).read_bytes()) == file_sha
    return file_sha, _json_sha(doc.stdout), _sha(text.stdout.encode())


@pytest.mark.parametrize("name,args,output", CASES, ids=[c[0] for c in CASES])
def test_seeded_output_is_pinned(tmp_path, monkeypatch, name, args, output):
    got = _run(tmp_path, monkeypatch, args, output)
    assert got == EXPECTED[name]


def test_dry_run_document_is_pinned(tmp_path, monkeypatch):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    run = run_cli(
        "init",
        "fixtures/k3_seq_input_lstm_concat.keras",
        "--init",
        "keras_default",
        "--seed",
        "4",
        "--dry-run",
        "--json",
    )
    assert run.exit_code == 0
    assert _json_sha(run.stdout) == EXPECTED_DRY_RUN


EXPECTED_DRY_RUN = "e80a9afb1beafa89"


READ_ONLY = [
    ("inspect-keras-gates", ["inspect", "fixtures/k3_functional_mixed.keras", "--gates"]),
    ("inspect-h5-nested", ["inspect", "fixtures/k2_nested.h5", "--gates"]),
    ("inspect-weights-only", ["inspect", "fixtures/k2_functional_mixed_weights_only.h5"]),
    ("inspect-cudnn", ["inspect", "fixtures/cudnn_seq_lstm.h5"]),
    (
        "diff-gates",
        ["diff", "fixtures/k2_seq_lstm.h5", "fixtures/k3_seq_input_lstm_concat.keras", "--gates"],
    ),
    (
        "diff-roles",
        [
            "diff",
            "fixtures/k3_functional_mixed.keras",
            "fixtures/k3_functional_mixed.weights.h5",
            "--role",
            "bias[f]",
            "--layer",
            "bi_lstm_ave",
        ],
    ),
]

EXPECTED_READ_ONLY: dict[str, tuple[int, str, str]] = {
    "inspect-keras-gates": (0, "00cae5801f7d88e6", "2ba5a86f1d47e26e"),
    "inspect-h5-nested": (0, "0bbecd184188b068", "1f7b00cf863865d1"),
    "inspect-weights-only": (0, "961e42b56b47a30a", "92a3738f1dc150d5"),
    "inspect-cudnn": (0, "a143ae037fa9ec73", "609b4149d3dbdd5a"),
    "diff-gates": (1, "0197d751a68191c3", "71eb229404923d47"),
    "diff-roles": (0, "7800ad293e783407", "d72326cdab0ba654"),
}


@pytest.mark.parametrize("name,args", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_read_only_output_is_pinned(tmp_path, monkeypatch, name, args):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    text = run_cli(*args)
    doc = run_cli(*args, "--json")
    assert text.exit_code == doc.exit_code
    got = (text.exit_code, _json_sha(doc.stdout), _sha(text.stdout.encode()))
    assert got == EXPECTED_READ_ONLY[name]
