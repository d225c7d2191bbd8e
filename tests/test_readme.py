"""Every `$ bilstm …` line in README.md runs as written, from a checkout, in order."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, ROOT

README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", README, flags=re.S)
    return [
        line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ bilstm")
    ]


def test_readme_has_the_documented_recipes():
    commands = readme_commands()
    assert len(commands) >= 10
    for word in ("inspect", "init", "transplant", "diff"):
        assert any(c.startswith(f"bilstm {word}") for c in commands)


def test_readme_starts_with_the_two_setup_commands():
    first_block = re.search(r"```\n(.*?)```", README, flags=re.S).group(1).splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]


def test_readme_commands_run(tmp_path):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    exe = Path(sys.executable).parent / "bilstm"
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in readme_commands():
        args = shlex.split(command)
        run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        allowed = (0, 1) if args[1] == "diff" else (0,)
        assert run.returncode in allowed, f"{command}\n{run.stderr}"
        assert "Traceback" not in run.stderr
    # The recipes produced what they say.
    assert (tmp_path / "m2.keras").exists() and (tmp_path / "ready.keras").exists()
    assert not (tmp_path / "m5.keras").exists()  # the --dry-run recipe


def test_every_command_has_help_text():
    from conftest import run_cli

    top = run_cli("--help")
    assert top.exit_code == 0
    for command in ("inspect", "init", "transplant", "diff"):
        assert command in top.stdout
        run = run_cli(command, "--help")
        assert run.exit_code == 0 and "Usage: " in run.stdout
        assert len(run.stdout.splitlines()) > 5
    assert run_cli("--version").stdout.startswith("bilstm, version ")
