"""The output of ``init`` is complete or absent, whatever happens while it is written.

Refused outputs (missing or read-only directory, an existing file, the input itself) exit 4
before anything is written; a full disk, Ctrl-C, SIGTERM or SIGKILL in the middle of a write
never leaves a truncated file at the output path, and the first three leave no temporary
file either. Two writers racing for the same path leave one of their two complete files.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzzing import (
    FIXTURES,
    edit_config,
    edit_h5,
    run_main,
    sha256,
    suffix_of,
    temp_leftovers,
    weight_datasets,
)

from bilstm_cli.errors import InputError

KERAS = FIXTURES / "k3_seq_input_lstm_concat.keras"
LEGACY = FIXTURES / "k3_legacy_seq_lstm.h5"
BIG_UNITS = 1024  # about 34 MB of weights: long enough to interrupt, quick to write
# A busy machine can let a whole write pass between two looks of the test: rounds of signals
# at the same moments are tried until one lands mid-write, this many at most.
ROUNDS = 4


def one_error_line(stderr: str, code: int, expected_code: int, *words: str) -> str:
    assert code == expected_code, (code, stderr)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def init_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["init", str(model), "-o", str(out), "--init", "zeros", "--seed", "1", *extra]


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bilstm_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finished(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _grow(units: int):
    rng = np.random.default_rng(units)

    def edit(f: h5py.File) -> None:
        for path in weight_datasets(f):
            if "/dense" in path:
                continue
            role = path.rsplit("/", 1)[-1]
            index = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}.get(role, None)
            index = int(role) if index is None else index
            shape = [(4, 4 * units), (units, 4 * units), (4 * units,)][index]
            attrs = dict(f[path].attrs)
            del f[path]
            ds = f.create_dataset(path, data=rng.standard_normal(shape, np.float32) * 0.05)
            for k, v in attrs.items():
                ds.attrs[k] = v

    return edit


def _set_units(units: int):
    def edit(config):
        stack = [config]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("class_name") == "LSTM" and isinstance(node.get("config"), dict):
                    node["config"]["units"] = units
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return config

    return edit


def make_big(source: Path, dest: Path, units: int = BIG_UNITS) -> Path:
    """A copy of a one-layer LSTM fixture with ``units`` units (written with h5py)."""
    staged = dest.with_name("grown" + suffix_of(source))
    edit_h5(source, staged, _grow(units))
    edit_config(staged, dest, _set_units(units))
    staged.unlink()
    return dest


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    return {
        ".h5": make_big(LEGACY, d / "big.h5"),
        ".keras": make_big(KERAS, d / "big.keras"),
    }


@pytest.fixture(scope="module")
def reference(big, tmp_path_factory):
    """What a single, undisturbed run writes for each big model and seed."""
    d = tmp_path_factory.mktemp("reference")
    done = {}
    for suffix, model in big.items():
        for seed in ("1", "2"):
            out = d / f"seed{seed}{suffix}"
            outcome = run_main("init", model, "-o", out, "--init", "glorot_uniform",
                               "--seed", seed)
            assert outcome.code == 0, outcome.stderr
            done[suffix, seed] = sha256(out)
    return done


# --- outputs refused before anything is written ------------------------------------------------


def test_output_directory_missing(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "out.keras"
    outcome = run_main(*init_args(KERAS, out))
    one_error_line(outcome.stderr, outcome.code, 4, str(out), "does not exist")
    assert not out.parent.exists()


def test_output_is_a_directory(tmp_path):
    out = tmp_path / "out.keras"
    out.mkdir()
    outcome = run_main(*init_args(KERAS, out))
    one_error_line(outcome.stderr, outcome.code, 4, "directory")
    assert out.is_dir() and list(out.iterdir()) == []


def test_existing_output_without_force(tmp_path):
    out = tmp_path / "out.keras"
    out.write_bytes(b"precious")
    outcome = run_main(*init_args(KERAS, out))
    one_error_line(outcome.stderr, outcome.code, 4, str(out), "--force")
    assert out.read_bytes() == b"precious"
    assert temp_leftovers(tmp_path) == []


def test_output_that_is_a_pipe_is_not_replaced_even_with_force(tmp_path):
    out = tmp_path / "out.h5"
    os.mkfifo(out)
    outcome = run_main(*init_args(LEGACY, out, "--force"))
    one_error_line(outcome.stderr, outcome.code, 4, str(out), "not a file")
    assert out.is_fifo()
    assert temp_leftovers(tmp_path) == []

@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_is_the_input_without_force(tmp_path, spelling):
    model = tmp_path / "model.keras"
    shutil.copyfile(KERAS, model)
    before = sha256(model)
    out = {
        "same": model,
        "dotted": tmp_path / "." / "model.keras",
        "symlink": tmp_path / "alias.keras",
    }[spelling]
    if spelling == "symlink":
        out.symlink_to(model)
    outcome = run_main(*init_args(model, out))
    one_error_line(outcome.stderr, outcome.code, 4, "input", "--force")
    assert sha256(model) == before
    assert temp_leftovers(tmp_path) == []


def test_output_is_the_input_with_force_replaces_it_whole(tmp_path):
    model = tmp_path / "model.h5"
    shutil.copyfile(LEGACY, model)
    outcome = run_main(*init_args(model, model, "--force"))
    assert outcome.code == 0, outcome.stderr
    doc = run_main("inspect", model, "--json")
    assert doc.code == 0 and '"max": 0.0' in doc.stdout
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["/proc", "/sys"])
def test_output_in_a_place_nobody_can_write(where):
    """Kernel file systems refuse new files even to root: an honest unwritable directory."""
    if not os.path.isdir(where):
        pytest.skip(f"{where} is not mounted")
    out = Path(where) / "bilstm-out.h5"
    outcome = run_main(*init_args(LEGACY, out))
    one_error_line(outcome.stderr, outcome.code, 4, str(out))
    assert not out.exists()


def _in_private_mounts(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace (root only), or skip."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) to mount a file system privately")
    probe = subprocess.run([unshare, "-m", "--propagation", "private", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mount namespaces are not available here")
    return subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def test_read_only_directory(tmp_path):
    """A directory made read-only by a bind mount: root's writes fail there too (EROFS)."""
    target = tmp_path / "ro"
    target.mkdir()
    out = target / "out.h5"
    if os.geteuid() != 0:
        target.chmod(0o555)
        outcome = run_main(*init_args(LEGACY, out))
        one_error_line(outcome.stderr, outcome.code, 4, str(out), "not writable")
        return
    script = (
        f"mount --bind '{target}' '{target}' && mount -o remount,ro,bind '{target}' && "
        f"exec '{sys.executable}' -m bilstm_cli {' '.join(init_args(LEGACY, out))}"
    )
    run = _in_private_mounts(script)
    one_error_line(run.stderr, run.returncode, 4, str(out), "not writable")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_disk_full_on_a_small_file_system(tmp_path, big, suffix):
    """A 20 MB tmpfs cannot hold the 34 MB output: ENOSPC, exit 4, nothing left there."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / f"out{suffix}"
    script = (
        f"mount -t tmpfs -o size=20m tmpfs '{mnt}' && "
        f"'{sys.executable}' -m bilstm_cli {' '.join(init_args(big[suffix], out))}; "
        f"code=$?; ls -A '{mnt}' >&2; exit $code"
    )
    run = _in_private_mounts(script)
    one_error_line(run.stderr, run.returncode, 4, str(out), "no space left")  # ls printed nothing


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _weights_member_size(model: Path) -> int:
    with zipfile.ZipFile(model) as z:
        return z.getinfo("model.weights.h5").file_size


@pytest.mark.parametrize(
    ("suffix", "stage"),
    [(".h5", "copy"), (".keras", "extract"), (".keras", "archive")],
)
def test_disk_full_by_file_size_limit(tmp_path, big, suffix, stage):
    """RLIMIT_FSIZE makes writes past a size fail with EFBIG, at the stage chosen: copying
    the input, extracting an archive's weights, or writing the new archive."""
    model = big[suffix]
    if stage == "archive":
        limit = _weights_member_size(model) + 64  # the weights fit, the archive does not
    else:
        limit = 5 * 1024 * 1024
    out = tmp_path / f"out{suffix}"
    proc = cli(*init_args(model, out), preexec_fn=_limit_file_size(limit))
    code, err = finished(proc)
    one_error_line(err, code, 4, str(out), "no space left")
    assert not out.exists()
    assert temp_leftovers(tmp_path) == []


# --- interrupted writes ------------------------------------------------------------------------


def _start_and_wait_for_staging(args: list[str], directory: Path) -> subprocess.Popen | None:
    """Start the command; return it once its temporary file exists (None if it finished)."""
    proc = cli(*args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if temp_leftovers(directory):
            return proc
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the command never staged its output")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_sigkill_leaves_output_absent_or_complete(tmp_path, big, reference, suffix):
    killed_mid_write = 0
    for k, delay in enumerate(ROUNDS * (0.0, 0.03, 0.1)):
        if k % 3 == 0 and killed_mid_write:
            break  # a round that landed is enough; another is tried only when none did
        out = tmp_path / f"out{k}{suffix}"
        args = ["init", str(big[suffix]), "-o", str(out), "--init", "glorot_uniform",
                "--seed", "1"]
        proc = _start_and_wait_for_staging(args, tmp_path)
        if proc is not None:
            time.sleep(delay)
            proc.kill()
            proc.communicate()
            killed_mid_write += proc.returncode == -signal.SIGKILL and not out.exists()
        if out.exists():
            assert sha256(out) == reference[suffix, "1"], "a truncated or different output"
        for name in temp_leftovers(tmp_path):  # SIGKILL cannot be cleaned up after
            (tmp_path / name).unlink()
    assert killed_mid_write >= 1, "no kill landed during the write; the model is too small"


def _interrupt_at_staging(tmp_path: Path, model: Path, suffix: str, signum: int) -> int:
    """Send ``signum`` at several moments of a write; each run must end interrupted (130,
    one line, nothing left) or, if it won the race, complete. Returns how many were hit."""
    hit = 0
    for k, delay in enumerate(ROUNDS * (0.0, 0.01, 0.04, 0.1)):
        if k % 4 == 0 and hit:
            break  # a round that landed is enough; another is tried only when none did
        out = tmp_path / f"out{k}{suffix}"
        proc = _start_and_wait_for_staging(init_args(model, out), tmp_path)
        if proc is not None:
            time.sleep(delay)
            proc.send_signal(signum)
            code, err = finished(proc)
        else:
            code, err = 0, ""
        if code == 0:
            assert out.exists() and run_main("inspect", out).code == 0
            continue
        hit += 1
        one_error_line(err, code, 130, "interrupted")
        assert not out.exists()
        assert temp_leftovers(tmp_path) == []
    return hit


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_ctrl_c_exits_130_and_cleans_up(tmp_path, big, suffix):
    """Also when the signal lands inside h5py reading an archive member, which used to turn
    it into 'the HDF5 data cannot be opened' (exit 3)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("Ctrl-C is ignored here (started in the background), and so by the tool")
    if _interrupt_at_staging(tmp_path, big[suffix], suffix, signal.SIGINT) == 0:
        pytest.skip("every write finished before the signal arrived")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_sigterm_cleans_up(tmp_path, big, suffix):
    if _interrupt_at_staging(tmp_path, big[suffix], suffix, signal.SIGTERM) == 0:
        pytest.skip("every write finished before the signal arrived")


def _swallowing(signum: int):
    """A stand-in for a library that catches the exception a signal raises inside it and
    reports a failure of its own instead (h5py does so in its file-object callbacks)."""

    def verify(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(1)
        except BaseException:
            raise InputError("the HDF5 data cannot be opened (seek of closed file)") from None
        raise AssertionError("the signal never arrived")

    return verify


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_swallowed_by_a_library_is_still_an_interruption(tmp_path, monkeypatch, signum):
    from dataclasses import replace

    from bilstm_cli import formats

    real = formats.writer_for
    monkeypatch.setattr(
        formats,
        "writer_for",
        lambda model: replace(real(model), unchanged_except=_swallowing(signum)),
    )
    out = tmp_path / "out.keras"
    # A test run started in the background (`make test &`) inherits an ignored SIGINT, which
    # the command rightly leaves ignored; this test is about the default disposition.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcome = run_main(*init_args(KERAS, out))
    finally:
        signal.signal(signal.SIGINT, previous)
    one_error_line(outcome.stderr, outcome.code, 130, "interrupted")
    assert not out.exists() and temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_two_writers_racing_for_one_output(tmp_path, big, reference, suffix):
    out = tmp_path / f"out{suffix}"
    for _ in range(2):
        procs = [
            cli("init", str(big[suffix]), "-o", str(out), "--init", "glorot_uniform",
                "--seed", seed, "--force")
            for seed in ("1", "2")
        ]
        for proc in procs:
            code, err = finished(proc)
            assert code == 0, err
        assert sha256(out) in {reference[suffix, "1"], reference[suffix, "2"]}
        assert temp_leftovers(tmp_path) == []


# --- damaged structure found only when writing -------------------------------------------------


def _chunked_copy(src: Path, dest: Path) -> None:
    """The same weights file with every dataset stored chunked, so that it cannot be edited
    in place and goes through HDF5's own writer."""
    import h5py

    with h5py.File(src, "r") as fin, h5py.File(dest, "w") as fout:
        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                g = fout.require_group(name)
            else:
                g = fout.create_dataset(name, data=obj[()], chunks=True)
            for k, v in obj.attrs.items():
                g.attrs[k] = v

        for k, v in fin.attrs.items():
            fout.attrs[k] = v
        fin.visititems(copy)


def _bogus_driver_info(p: Path) -> None:
    data = bytearray(p.read_bytes())
    assert data[48:56] == b"\xff" * 8  # superblock v0: driver information block address
    data[55] = 0x7B
    p.write_bytes(bytes(data))


def test_damage_found_when_writing_back_is_an_input_error(tmp_path):
    """A weights file whose superblock names an impossible driver-info address reads fine but
    cannot be closed after HDF5 edits it: the input is damaged (exit 3), nothing is left."""
    p = tmp_path / "model.weights.h5"
    _chunked_copy(FIXTURES / "k3_functional_mixed.weights.h5", p)
    _bogus_driver_info(p)
    before = sha256(p)
    assert run_main("inspect", p).code == 0
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "out.weights.h5"
    outcome = run_main(*init_args(p, out))
    one_error_line(outcome.stderr, outcome.code, 3, str(p), "damaged")
    assert not out.exists() and temp_leftovers(outdir) == []
    assert sha256(p) == before


def test_in_place_editing_leaves_the_rest_of_the_file_alone(tmp_path):
    """Contiguous weights are overwritten where they lie, so even a superblock HDF5 could not
    write back is carried over byte for byte, and the copy reads exactly as the input did."""
    p = tmp_path / "model.weights.h5"
    p.write_bytes((FIXTURES / "k3_functional_mixed.weights.h5").read_bytes())
    _bogus_driver_info(p)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "out.weights.h5"
    outcome = run_main(*init_args(p, out))
    assert outcome.code == 0, outcome.stderr
    a, b = p.read_bytes(), out.read_bytes()
    assert len(a) == len(b) and a[:56] == b[:56]
    assert run_main("inspect", out).code == 0 and temp_leftovers(outdir) == []


@pytest.mark.parametrize("source", [LEGACY, KERAS], ids=lambda p: p.name)
def test_longest_output_name_still_has_room_for_the_staged_file(tmp_path, source):
    """The staged name adds a prefix and suffix; a valid 250-character output name must not
    make it too long for the file system."""
    suffix = suffix_of(source)
    out = tmp_path / ("m" * (250 - len(suffix)) + suffix)
    outcome = run_main(*init_args(source, out))
    assert outcome.code == 0, outcome.stderr
    assert out.exists() and temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["init", "transplant"])
def test_interrupted_while_a_helper_thread_starts(tmp_path, monkeypatch, command):
    """A signal can land inside Thread.start(), before the thread is known to have started;
    such a thread must not be waited for on the way out (Python refuses: "cannot join thread
    before it is started"). The command still ends as an interruption and cleans up."""
    import threading

    from bilstm_cli import concurrency

    def interrupted_start(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrency, "_idle", [])  # no helper kept from earlier work
    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    out = tmp_path / "out.keras"
    if command == "init":
        outcome = run_main(*init_args(KERAS, out))
    else:
        outcome = run_main("transplant", FIXTURES / "k2_seq_lstm.h5", KERAS, "-o", out)
    one_error_line(outcome.stderr, outcome.code, 130, "interrupted")
    assert not out.exists() and temp_leftovers(tmp_path) == []
