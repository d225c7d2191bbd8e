"""`bilstm inspect A B C`: one result per readable file, one error line per bad one."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl

GOOD = [
    str(FIXTURES / "k2_seq_lstm.h5"),
    str(FIXTURES / "k3_functional_mixed.keras"),
    str(FIXTURES / "k2_functional_mixed_weights_only.h5"),
]


def _lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture
def bad_files(tmp_path):
    missing = tmp_path / "missing.h5"
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("just some text\n")
    return str(missing), str(not_a_model)


def test_text_of_several_files_is_each_file_in_turn():
    singles = [run_cli("inspect", f, "--gates") for f in GOOD]
    assert all(s.exit_code == 0 for s in singles)
    run = run_cli("inspect", *GOOD, "--gates")
    assert run.exit_code == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout == "\n".join(s.stdout for s in singles)


def test_json_of_several_files_is_one_compact_document_per_line():
    run = run_cli("inspect", *GOOD, "--json")
    assert run.exit_code == 0, run.stderr
    lines = _lines(run.stdout)
    assert len(lines) == len(GOOD)
    for line, path in zip(lines, GOOD):
        assert line == json.dumps(json.loads(line), separators=(",", ":"))
        assert json.loads(line) == bl.inspect(path).to_dict()


def test_the_same_file_twice_is_listed_twice():
    run = run_cli("inspect", GOOD[0], GOOD[0], "--json")
    assert run.exit_code == 0
    first, second = _lines(run.stdout)
    assert first == second


def test_bad_files_are_reported_and_the_others_still_listed(bad_files):
    missing, not_a_model = bad_files
    args = [GOOD[0], missing, GOOD[1], not_a_model]
    run = run_cli("inspect", *args, "--json")
    assert run.exit_code == 3
    errors = _lines(run.stderr)
    assert errors == [f"Error: {missing}: no such file", errors[1]]
    assert errors[1].startswith(f"Error: {not_a_model}: not a Keras model file")
    docs = [json.loads(line) for line in _lines(run.stdout)]
    assert [d["file"] for d in docs] == [GOOD[0], GOOD[1]]

    text = run_cli("inspect", *args)
    assert text.exit_code == 3
    assert _lines(text.stderr) == errors
    singles = [run_cli("inspect", f).stdout for f in (GOOD[0], GOOD[1])]
    assert text.stdout == "\n".join(singles)


def test_all_files_bad_prints_only_errors(bad_files):
    missing, not_a_model = bad_files
    for extra in ([], ["--json"]):
        run = run_cli("inspect", missing, not_a_model, *extra)
        assert run.exit_code == 3
        assert run.stdout == ""
        errors = _lines(run.stderr)
        assert len(errors) == 2
        assert errors[0].startswith(f"Error: {missing}: ")
        assert errors[1].startswith(f"Error: {not_a_model}: ")


def test_a_file_without_bidirectional_layers_is_listed_and_fine():
    plain = str(FIXTURES / "k2_plain_lstm_lm.h5")
    run = run_cli("inspect", plain, GOOD[0], "--json")
    assert run.exit_code == 0
    docs = [json.loads(line) for line in _lines(run.stdout)]
    assert [d["file"] for d in docs] == [plain, GOOD[0]] and docs[0]["layers"] == []


def test_a_layer_glob_needs_to_match_in_one_file_only():
    mixed, nested = GOOD[1], str(FIXTURES / "k3_functional_nested.keras")
    run = run_cli("inspect", mixed, nested, GOOD[0], "--layer", "bi_gru*", "--json")
    assert run.exit_code == 0, run.stderr
    docs = [json.loads(line) for line in _lines(run.stdout)]
    # Files in which no glob matches are left out.
    assert [d["file"] for d in docs] == [mixed]
    assert [x["name"] for x in docs[0]["layers"]] == ["bi_gru_mul"]

    two = run_cli("inspect", mixed, nested, "--layer", "bi_gru*", "--layer", "*inner*", "--json")
    assert two.exit_code == 0
    docs = [json.loads(line) for line in _lines(two.stdout)]
    assert [[x["name"] for x in d["layers"]] for d in docs] == [
        ["bi_gru_mul"],
        ["encoder_seq/inner_bi_lstm", "encoder_fn/inner_bi_gru"],
    ]


def test_a_layer_glob_matching_in_no_file_is_a_usage_error():
    run = run_cli("inspect", *GOOD, "--layer", "bi_gru*", "--layer", "nothing_*")
    assert run.exit_code == 2
    assert run.stdout == ""
    (line,) = _lines(run.stderr)
    assert line.startswith("Error: --layer 'nothing_*' matches no Bidirectional layer in any")


def test_an_unreadable_file_outranks_a_glob_matching_nowhere(bad_files):
    missing, _ = bad_files
    run = run_cli("inspect", GOOD[0], missing, "--layer", "nothing_*")
    assert run.exit_code == 3
    assert run.stdout == ""
    errors = _lines(run.stderr)
    assert errors[0] == f"Error: {missing}: no such file"
    assert errors[1].startswith("Error: --layer 'nothing_*' matches no Bidirectional layer")


@pytest.mark.parametrize("path", GOOD)
def test_one_file_prints_the_indented_document_as_before(path):
    run = run_cli("inspect", path, "--json")
    assert run.exit_code == 0
    assert run.stdout == json.dumps(bl.inspect(path).to_dict(), indent=2, allow_nan=False) + "\n"


def test_one_bad_file_fails_as_before(bad_files):
    missing, _ = bad_files
    run = run_cli("inspect", missing)
    assert (run.exit_code, run.stdout, run.stderr) == (3, "", f"Error: {missing}: no such file\n")
    glob = run_cli("inspect", GOOD[0], "--layer", "nothing_*")
    assert glob.exit_code == 2 and glob.stdout == ""
    assert glob.stderr == (
        f"Error: --layer 'nothing_*' matches no Bidirectional layer in {GOOD[0]} "
        "(available: bidirectional)\n"
    )


def test_help_describes_several_files():
    run = run_cli("inspect", "--help")
    assert "MODEL..." in run.stdout
    assert "JSON Lines" in " ".join(run.stdout.split())
