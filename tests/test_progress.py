"""The progress bar: on stderr, on a terminal only, and gone when the work is done."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from conftest import FIXTURES, ROOT

MODEL = FIXTURES / "k3_functional_mixed.keras"


def _run(args: list[str], stderr_tty: bool, delay: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BILSTM_PROGRESS_AFTER": delay}
    env.pop("NO_COLOR", None)
    cmd = [sys.executable, "-m", "bilstm_cli", *args]
    if not stderr_tty:
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        return run.returncode, run.stdout, run.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: the command is done
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_is_drawn_on_a_terminal(tmp_path):
    code, out, err = _run(
        ["init", str(MODEL), "-o", str(tmp_path / "o.keras"), "--seed", "1"], True, "0"
    )
    assert code == 0
    assert "writing" in err and "verifying" in err
    assert "writing" not in out and "wrote" in out  # data stays on stdout, the bar off it


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    code, out, err = _run(
        ["init", str(MODEL), "-o", str(tmp_path / "o.keras"), "--seed", "1"], False, "0"
    )
    assert code == 0 and err == ""


def test_no_progress_for_quick_work_by_default(tmp_path):
    code, _, err = _run(
        ["init", str(MODEL), "-o", str(tmp_path / "o.keras"), "--seed", "1"], True, "3600"
    )
    assert code == 0 and "writing" not in err


def test_inspect_of_several_files_shows_progress_and_keeps_data_on_stdout():
    files = [str(MODEL), str(FIXTURES / "k2_seq_lstm.h5"), str(FIXTURES / "k2_nested.h5")]
    code, out, err = _run(["inspect", *files, "--json"], True, "0")
    assert code == 0
    assert "files" in err
    assert len(out.splitlines()) == 3  # one JSON document per file, nothing else


def test_inspect_of_one_file_shows_progress_per_weight():
    code, out, err = _run(["inspect", str(MODEL), "--json"], True, "0")
    assert code == 0 and "reading" in err and out.startswith("{")
