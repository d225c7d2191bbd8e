"""Shell completion: Click's protocol, driven the way the shells' scripts drive it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.shell_completion import get_completion_class
from conftest import FIXTURES, ROOT

from bilstm_cli.cli import cli
from bilstm_cli.strategies import STRATEGY_USAGE

MIXED = str(FIXTURES / "k3_functional_mixed.keras")
NESTED = str(FIXTURES / "k3_functional_nested.keras")
MIXED_LAYERS = ["bi_lstm_ave", "bi_gru_mul", "my_bi"]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def bash(words: list[str], cword: int | None = None) -> list[str]:
    """What `bilstm` answers bash for the words (bash's own split; the last one is being
    completed unless ``cword`` says otherwise)."""
    cword = len(words) - 1 if cword is None else cword
    run = subprocess.run(
        [sys.executable, "-m", "bilstm_cli"],
        env=_env(
            _BILSTM_COMPLETE="bash_complete",
            COMP_WORDS=" ".join(words),
            COMP_CWORD=str(cword),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return [line.split(",", 1)[1] for line in run.stdout.splitlines() if line.startswith("plain,")]


def in_process(shell: str, args: list[str], incomplete: str) -> list[str]:
    comp_cls = get_completion_class(shell)
    assert comp_cls is not None
    comp = comp_cls(cli, {}, "bilstm", "_BILSTM_COMPLETE")
    return [item.value for item in comp.get_completions(args, incomplete)]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_has_a_script(shell):
    run = subprocess.run(
        [sys.executable, "-m", "bilstm_cli"],
        env=_env(_BILSTM_COMPLETE=f"{shell}_source"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0
    assert "_BILSTM_COMPLETE" in run.stdout and "bilstm" in run.stdout


def test_init_completes_strategy_names():
    got = bash(["bilstm", "init", MIXED, "--init", "glorot_"])
    assert got == ["glorot_uniform", "glorot_normal"]
    every = bash(["bilstm", "init", MIXED, "--init", ""])
    assert every == list(STRATEGY_USAGE) and "orthogonal" in every


def test_init_completes_after_a_target():
    # Bash splits `recurrent_kernel=orth` at '=' and replaces only the part after it.
    assert bash(["bilstm", "init", MIXED, "--init", "recurrent_kernel", "=", "orth"]) == [
        "orthogonal"
    ]
    assert "unit_forget_bias" in bash(["bilstm", "init", MIXED, "--init", "bias[f]", "="])
    assert bash(["bilstm", "init", MIXED, "--init", "=", "orth"]) == ["orthogonal"]
    # Zsh and fish keep the word whole, and so does the completion.
    for shell in ("zsh", "fish"):
        got = in_process(shell, ["init", MIXED, "--init"], "recurrent_kernel=orth")
        assert got == ["recurrent_kernel=orthogonal"]


def test_init_offers_nothing_inside_strategy_arguments():
    assert bash(["bilstm", "init", MIXED, "--init", "truncated_normal", ":", "std"]) == []


def test_layer_completes_the_names_in_the_model_file():
    assert bash(["bilstm", "inspect", MIXED, "--layer", ""]) == MIXED_LAYERS
    assert bash(["bilstm", "init", MIXED, "--layer", "bi_"]) == ["bi_lstm_ave", "bi_gru_mul"]
    assert bash(["bilstm", "inspect", MIXED, NESTED, "--gates", "--layer", "inner"]) == [
        "inner_bi_lstm",
        "inner_bi_gru",
    ]
    for shell in ("zsh", "fish"):
        assert in_process(shell, ["diff", MIXED, MIXED, "--layer"], "my") == ["my_bi"]
    # transplant's --layer selects layers of MODEL, not of DONOR.
    assert bash(["bilstm", "transplant", NESTED, MIXED, "--layer", ""]) == MIXED_LAYERS


def test_layer_offers_nothing_for_a_file_it_cannot_read(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert bash(["bilstm", "inspect", str(junk), "--layer", ""]) == []
    assert bash(["bilstm", "inspect", str(tmp_path / "missing.h5"), "--layer", ""]) == []
    assert bash(["bilstm", "inspect", "--layer", ""]) == []


def test_role_completes_the_three_roles():
    assert bash(["bilstm", "diff", MIXED, MIXED, "--role", ""]) == [
        "kernel",
        "recurrent_kernel",
        "bias",
    ]
    assert bash(["bilstm", "transplant", MIXED, MIXED, "--role", "rec"]) == ["recurrent_kernel"]


def test_commands_still_complete():
    assert bash(["bilstm", "in"]) == ["init", "inspect"]
