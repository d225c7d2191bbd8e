"""Tables on a real terminal: at 80, 100 and 120 columns nothing is dropped or cut.

Each command runs under a pseudo-terminal whose window size is set with TIOCSWINSZ, so Rich
sees a TTY of that width exactly as in an interactive shell (CliRunner is not a TTY and only
exercises the piped text). What the screen must show is taken from the command's ``--json``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import tempfile
import termios
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from rich.cells import cell_len

from bilstm_cli.cli import render
from bilstm_cli.results import STAT_COLUMNS

# The checkout under test, so the child imports this code and not an installed copy.
ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (80, 100, 120)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# Variables that would override the terminal's own size or TTY detection.
OVERRIDES = (
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
)


def on_terminal(width: int, *args: str) -> tuple[int, str]:
    """Run ``bilstm ARGS`` with stdin and stdout on a pseudo-terminal ``width`` columns wide.

    Returns the exit status and the screen text without colour codes. Reading stops when the
    child has closed its side of the terminal (EIO or EOF), so nothing depends on timing.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, width, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    # The screen holds the tables alone: no progress bar, however slow the machine.
    env.update(PYTHONPATH=str(ROOT), TERM="xterm-256color", BILSTM_PROGRESS_AFTER="1e9")
    chunks = []
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bilstm_cli", *args],
                stdin=slave,
                stdout=slave,
                stderr=err,
                cwd=ROOT,
                env=env,
            )
        finally:
            os.close(slave)
        try:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child side of the terminal is closed
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
            code = proc.wait()
        err.seek(0)
        stderr = err.read().decode()
    assert "Traceback" not in stderr, stderr
    screen = b"".join(chunks).decode().replace("\r\n", "\n")
    return code, ANSI.sub("", screen)


def squash(text: str) -> str:
    return "".join(text.split())


def check_screen(
    screen: str, width: int, headers: list[str], strings: set[str], numbers: set[str]
) -> None:
    """Every line fits, nothing is cut, and every header, string and number is on screen.

    Strings (names, shapes, paths) may be wrapped over lines, so they are compared with
    whitespace removed; numbers must each appear as a whole word.
    """
    assert screen.strip(), "nothing was printed"
    for line in screen.splitlines():
        assert cell_len(line) <= width, f"{cell_len(line)} > {width}: {line!r}"
    assert "…" not in screen
    squashed, words = squash(screen), set(screen.split())
    for header in headers:
        for word in header.split():
            assert word in words, f"header {header!r} missing"
    missing = sorted(s for s in strings if squash(s) not in squashed)
    assert not missing, f"missing at {width} columns: {missing}\n{screen}"
    missing = sorted(n for n in numbers if n not in words)
    assert not missing, f"numbers missing at {width} columns: {missing}\n{screen}"


def stat_numbers(stats: dict[str, Any], keys: tuple[str, ...] = STAT_COLUMNS) -> set[str]:
    return {render.num(stats[k]) for k in keys}


# --- inspect ---------------------------------------------------------------------------------

INSPECT_HEADERS = ["direction", "role", "gate", "shape", "dtype", *STAT_COLUMNS, "finite"]
INSPECT_HEADERS += ["‖QᵀQ−I‖", "σmax", "dataset"]


def inspect_values(doc: dict[str, Any]) -> tuple[set[str], set[str]]:
    strings, numbers = {doc["file"]}, set()
    for layer in doc["layers"]:
        strings |= {layer["name"], layer["group"]}
        for w in layer["weights"]:
            strings |= {w["direction"], w["role"], w["dtype"], w["dataset"]}
            strings.add(render.shape_text(w["shape"]))
            numbers |= stat_numbers(w["stats"])
            for g in w.get("gate_stats", []):
                if g["gate"] is None:
                    continue
                strings.add(g["gate"])
                numbers |= stat_numbers(g)
                numbers |= {render.num(g[k]) for k in ("orth_error", "max_singular") if k in g}
    return strings, numbers


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(
    "fixture",
    [
        "fixtures/k3_functional_mixed.keras",
        "fixtures/k2_nested.h5",
        "fixtures/k2_functional_mixed_weights_only.h5",
    ],
)
def test_inspect_gates_fits_the_terminal(fixture, width):
    doc = run_cli("inspect", fixture, "--gates", "--json").json()
    code, screen = on_terminal(width, "inspect", fixture, "--gates")
    assert code == 0
    strings, numbers = inspect_values(doc)
    check_screen(screen, width, INSPECT_HEADERS, strings, numbers | {"yes"})


# --- init / transplant -----------------------------------------------------------------------

CHANGE_HEADERS = ["layer", "direction", "role", "gates", "source", "before", "after", "finite"]
CHANGE_HEADERS += ["mean", "std", "min", "max"]


def change_values(doc: dict[str, Any]) -> tuple[set[str], set[str]]:
    strings, numbers = {doc["input"]}, set()
    for c in doc["changes"]:
        strings |= {c["layer"], c["direction"], c["role"], c["source"]}
        strings.add(",".join(c["gates"]) if c["gates"] else "all")
        for side in ("before", "after"):
            numbers |= stat_numbers(c[side], ("mean", "std", "min", "max"))
    return strings, numbers


@pytest.mark.parametrize("width", WIDTHS)
def test_init_dry_run_fits_the_terminal(width, tmp_path):
    args = ["init", "fixtures/k3_functional_mixed.keras", "-o", str(tmp_path / "m.keras")]
    args += ["--init", "truncated_normal:stddev=0.05", "--seed", "7", "--dry-run"]
    doc = run_cli(*args, "--json").json()
    code, screen = on_terminal(width, *args)
    assert code == 0
    strings, numbers = change_values(doc)
    check_screen(screen, width, CHANGE_HEADERS, strings, numbers | {"yes"})
    assert "dry run: nothing was written" in screen
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("width", WIDTHS)
def test_transplant_fits_the_terminal(width, tmp_path):
    args = ["transplant", "fixtures/k2_seq_lstm.h5", "fixtures/k3_seq_input_lstm_concat.keras"]
    doc = run_cli(*args, "-o", str(tmp_path / "plan.keras"), "--dry-run", "--json").json()
    out = tmp_path / "ready.keras"
    code, screen = on_terminal(width, *args, "-o", str(out))
    assert code == 0 and out.exists()
    strings, numbers = change_values(doc)
    for pair in doc["pairs"]:
        strings |= {pair["donor"], pair["target"], *pair["moves"], *pair["differences"]}
    headers = [*CHANGE_HEADERS, "donor", "target", "moves", "notes", "checks"]
    check_screen(screen, width, headers, strings, numbers | {"yes"})
    assert squash(f"wrote {out} (verified)") in squash(screen)


# --- diff --------------------------------------------------------------------------------------

DIFF_HEADERS = ["direction", "role", "gate", "equal", "max |A−B|", "max rel"]
DIFF_HEADERS += ["mean A → B", "std A → B"]


@pytest.mark.parametrize("width", WIDTHS)
def test_diff_gates_fits_the_terminal(width):
    args = ["diff", "fixtures/k2_seq_lstm.h5", "fixtures/k3_seq_input_lstm_concat.keras", "--gates"]
    doc = run_cli(*args, "--json").json()
    code, screen = on_terminal(width, *args)
    assert code == 1
    strings, numbers = {doc["a"], doc["b"]}, set()
    for layer in doc["layers"]:
        strings.add(layer["name"])
        for w in layer["weights"]:
            strings |= {w["direction"], w["role"], w["gate"] or ""}
            numbers |= {render.num(w["max_abs_diff"]), render.num(w["max_rel_diff"])}
            for side in ("a", "b"):
                numbers |= stat_numbers(w[side], ("mean", "std"))
    check_screen(screen, width, DIFF_HEADERS, strings, numbers | {"NO"})
    assert screen.rstrip().endswith("different")


# --- non-finite counts and narrow widths -------------------------------------------------------


def test_finite_column_counts_nonfinite_entries_on_a_terminal_only(tmp_path):
    import shutil

    import h5py
    import numpy as np

    path = tmp_path / "nan.h5"
    shutil.copy(ROOT / "fixtures/k2_seq_lstm.h5", path)
    doc = run_cli("inspect", str(path), "--json").json()
    dataset = doc["layers"][0]["weights"][0]["dataset"]
    with h5py.File(path, "r+") as f:
        values = f[dataset][...]
        values[0, [0, 3, 4]] = [np.nan, np.inf, -np.inf]  # gate i gets one, gate f two
        f[dataset][...] = values
    code, screen = on_terminal(80, "inspect", str(path), "--gates")
    assert code == 0
    assert {"(3)", "(1)", "(2)"} <= set(screen.split())  # the weight, then gates i and f
    assert screen.count("NO (") == 3
    piped = run_cli("inspect", str(path), "--gates").stdout
    assert " NO " in piped and "NO (" not in piped


def test_every_width_keeps_every_cell():
    """From very narrow to wide, with a long name and path: lines fit, nothing is lost."""
    from bilstm_cli.cli.layout import lay_out

    name = "encoder_with_a_rather_long_name/inner_bidirectional_layer"
    columns = [("layer", False), ("direction", False), ("role", False), ("gate", False)]
    columns += [("mean A → B", True), ("max |A−B|", True), ("finite", False), ("dataset", False)]
    path = f"model_weights/{name}/forward_lstm/lstm_cell/recurrent_kernel:0"
    rows = [
        [name, "forward", "recurrent_kernel", "", "-0.001839 → -0.03579", "0.871", "NO (3)", path],
        ["", "", "", "i", "-0.04329 → 0.04484", "1.234e-05", "yes", ""],
    ]
    for width in range(24, 200, 3):
        lines = [text for text, _ in lay_out("title of the table", columns, rows, width)]
        screen = "\n".join(lines)
        assert all(cell_len(line) <= width for line in lines), (width, screen)
        words = set(screen.split())
        for cell in ["-0.001839", "-0.03579", "0.871", "-0.04329", "0.04484", "1.234e-05"]:
            assert cell in words, (width, cell, screen)
        for cell in [name, path, "recurrent_kernel", "NO (3)", "forward"]:
            assert squash(cell) in squash(screen), (width, cell, screen)
        for header, _ in columns:
            assert all(word in words for word in header.split()), (width, header, screen)
