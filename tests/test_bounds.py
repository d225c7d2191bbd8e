"""Resources bounded by what a file really holds, and exit codes that stay true at the edges.

The hostile files declare gigabytes but hold kilobytes (tests/hostile.py builds them). Each run
is a child process under an address-space limit and a timeout: generous hang guards, not
timing assertions. A run that tried to materialise what the file declares would die of the
limit (and fail the exit-code assertion) instead of exhausting the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import hostile
import numpy as np
import pytest
from fuzzing import run_main

ROOT = Path(__file__).resolve().parent.parent
LEGACY = hostile.LEGACY
KERAS = hostile.KERAS
MEMORY_LIMIT = 1536 * 1024**2
KERNEL = "model_weights/bidirectional/bidirectional/forward_lstm/lstm_cell/kernel:0"


def _limits(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def cli(*args: object, memory: int = MEMORY_LIMIT, timeout: float = 120, **kw: object):
    """``bilstm ARGS`` in a child process with an address-space limit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.run(
        [sys.executable, "-c", "from bilstm_cli.cli.entry import run; run()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=lambda: _limits(memory),
        **kw,
    )


def one_error(run: subprocess.CompletedProcess, code: int, *words: str) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == code, run.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert run.stdout == ""
    return lines[0]


# --- datasets that declare more than the file stores ---------------------------------------


@pytest.fixture(scope="module")
def unallocated(tmp_path_factory) -> Path:
    path = hostile.unallocated_h5(tmp_path_factory.mktemp("unalloc") / "unallocated.h5")
    assert path.stat().st_size < 100_000  # it declares 8 GB
    return path


@pytest.mark.parametrize("command", ["inspect", "init", "diff", "transplant"])
def test_unwritten_chunks_are_refused_before_reading(tmp_path, unallocated, command):
    out = tmp_path / "out.h5"
    args = {
        "inspect": ("inspect", unallocated),
        "init": ("init", unallocated, "-o", out, "--init", "zeros"),
        "diff": ("diff", unallocated, unallocated),
        "transplant": ("transplant", LEGACY, unallocated, "-o", out, "--by", "order"),
    }[command]
    line = one_error(cli(*args), 3, "unallocated.h5", "kernel:0", "unwritten chunks")
    assert "4000000000 bytes" in line
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_large_dataset_with_one_chunk_unwritten_is_refused(tmp_path):
    path = tmp_path / "partial.h5"
    hostile.unallocated_h5(path, rows=40_000)
    with h5py.File(path, "r+") as f:
        for direction in ("forward_lstm", "backward_lstm"):
            name = f"model_weights/bidirectional/bidirectional/{direction}/lstm_cell/kernel:0"
            del f[name]
            ds = f.create_dataset(name, (40_000, 32), "f4", chunks=(1000, 32), compression="gzip")
            ds[:39_000] = 0.5  # every chunk but the last
    assert path.stat().st_size < 100_000
    one_error(cli("inspect", path), 3, "partial.h5", "40 chunks", "stores 39")


def test_fully_written_chunked_and_compressed_weights_are_read(tmp_path):
    path = hostile.chunked_h5(tmp_path / "chunked.h5")
    with h5py.File(path, "r") as f:
        assert f[KERNEL].chunks and f[KERNEL].compression == "gzip"
    run = cli("diff", LEGACY, path)
    assert run.returncode == 0, run.stderr
    assert "identical" in run.stdout


def test_large_compressed_zeros_fully_written_are_honest(tmp_path):
    """Zeros deflate ~1000:1: a ratio cannot tell them from a bomb, storage can."""
    path = tmp_path / "zeros.h5"
    hostile.unallocated_h5(path, rows=40_000)
    with h5py.File(path, "r+") as f:
        for direction in ("forward_lstm", "backward_lstm"):
            name = f"model_weights/bidirectional/bidirectional/{direction}/lstm_cell/kernel:0"
            del f[name]
            f.create_dataset(name, data=np.zeros((40_000, 32), "f4"), chunks=(1000, 32),
                             compression="gzip")
    assert path.stat().st_size < 100_000
    run = cli("inspect", path, "--json")
    assert run.returncode == 0, run.stderr


def test_memory_error_while_reading_is_exit_3(monkeypatch):
    def fail(self, key):
        raise MemoryError

    monkeypatch.setattr(h5py.Dataset, "__getitem__", fail)
    outcome = run_main("inspect", LEGACY)
    assert outcome.code == 3, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and "k2_seq_lstm.h5" in lines[0] and "memory" in lines[0]


def test_memory_error_anywhere_else_is_exit_3_not_1(monkeypatch):
    import bilstm_cli.ops.inspect as inspect_op

    def fail(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(inspect_op, "inspect", fail)
    outcome = run_main("inspect", LEGACY)
    assert outcome.code == 3, outcome.stderr
    assert outcome.stderr.startswith("Error: ") and "unexpected" not in outcome.stderr


# --- diff: values, not byte order; its answer survives a closed stdout -----------------------


def test_diff_compares_values_not_byte_order(tmp_path):
    swapped = hostile.byte_swapped_h5(tmp_path / "swapped.h5")
    with h5py.File(swapped, "r") as f:
        assert f[KERNEL].dtype.byteorder == ">"
    run = cli("diff", LEGACY, swapped, "--json")
    assert run.returncode == 0, run.stderr
    assert '"identical": true' in run.stdout.replace(" ", " ")


@pytest.mark.parametrize("reader", ["close", "one_line"])
def test_diff_answer_survives_a_closed_stdout(reader):
    other = ROOT / "fixtures" / "k3_functional_mixed.keras"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from bilstm_cli.cli.entry import run; run()",
         "diff", str(LEGACY), str(other), "--by", "order"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    if reader == "one_line":
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1, err
    assert b"Traceback" not in err and b"Error" not in err


# --- special files are refused at once --------------------------------------------------------


@pytest.mark.parametrize("spec", ["npy:{}", "npz:{}:kernel"])
def test_fifo_as_init_source_is_refused_at_once(tmp_path, spec):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = tmp_path / "out.h5"
    run = cli("init", LEGACY, "-o", out, "--init", "kernel=" + spec.format(fifo), timeout=60)
    one_error(run, 3, "pipe", "FIFO")
    assert not out.exists()


def test_device_as_init_source_is_refused(tmp_path):
    run = cli("init", LEGACY, "-o", tmp_path / "o.h5", "--init", "kernel=npy:/dev/zero")
    one_error(run, 3, "/dev/zero", "device")


def test_fifo_as_donor_is_refused_at_once(tmp_path):
    fifo = tmp_path / "donor.h5"
    os.mkfifo(fifo)
    run = cli("transplant", fifo, LEGACY, "-o", tmp_path / "o.h5", timeout=60)
    one_error(run, 3, "donor.h5")


# --- compressed archive members: inflated only as far as the weights need -------------------


@pytest.mark.parametrize("end", [None, 2**40], ids=["padding", "lying-header"])
@pytest.mark.parametrize("command", ["inspect", "init"])
def test_deflate_bomb_is_refused_while_inflating(tmp_path, end, command):
    # 80 MiB of zeros beyond the real weights: past the superblock's end, or (when the
    # header lies) past the 64 MiB margin over what the configuration's weights need.
    bomb = hostile.deflate_bomb_keras(tmp_path / "bomb.keras", 80 * 1024**2, end=end)
    assert bomb.stat().st_size < 200_000
    out = tmp_path / "out" / "o.keras"
    out.parent.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ("inspect", bomb) if command == "inspect" else ("init", bomb, "-o", out)
    run = cli(*args, env={"TMPDIR": str(tmp)})
    one_error(run, 3, "bomb.keras", "decompression bomb")
    assert os.listdir(out.parent) == [] and os.listdir(tmp) == []


def test_honest_deflated_archive_reads_and_writes(tmp_path):
    deflated = hostile.deflated_keras(tmp_path / "deflated.keras")
    run = cli("diff", KERAS, deflated)
    assert run.returncode == 0 and "identical" in run.stdout, run.stderr
    run = cli("init", deflated, "-o", tmp_path / "o.keras", "--init", "zeros")
    assert run.returncode == 0, run.stderr


def test_compressed_member_needs_room_in_the_temp_directory(tmp_path, monkeypatch):
    import shutil as shutil_module

    deflated = hostile.deflated_keras(tmp_path / "deflated.keras")
    real = shutil_module.disk_usage

    def full(path):
        return real(path)._replace(free=1000)

    monkeypatch.setattr(shutil_module, "disk_usage", full)
    outcome = run_main("inspect", deflated)
    assert outcome.code == 3, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and "deflated.keras" in lines[0] and "temporary space" in lines[0]


# --- --force keeps the replaced file's permissions; a symlink is written through -------------


def test_force_keeps_the_replaced_files_permission_bits(tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(LEGACY.read_bytes())
    out.chmod(0o640)
    outcome = run_main("init", LEGACY, "-o", out, "--init", "zeros", "--force")
    assert outcome.code == 0, outcome.stderr
    assert out.stat().st_mode & 0o777 == 0o640
    with h5py.File(out, "r") as f:
        assert not f[KERNEL][()].any()


def test_force_over_a_symlink_replaces_the_file_it_points_to(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.h5"
    target.write_bytes(LEGACY.read_bytes())
    target.chmod(0o600)
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    outcome = run_main("init", LEGACY, "-o", link, "--init", "zeros", "--force")
    assert outcome.code == 0, outcome.stderr
    assert link.is_symlink() and link.resolve() == target
    assert target.stat().st_mode & 0o777 == 0o600
    with h5py.File(target, "r") as f:
        assert not f[KERNEL][()].any()
    assert sorted(os.listdir(tmp_path / "real")) == ["model.h5"]


def test_force_over_a_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "missing.h5")
    outcome = run_main("init", LEGACY, "-o", link, "--init", "zeros", "--force")
    assert outcome.code == 4
    assert "symbolic link" in outcome.stderr and not (tmp_path / "missing.h5").exists()


# --- configurations beyond sane limits --------------------------------------------------------


def test_thousands_of_bidirectional_layers_are_refused_at_once(tmp_path):
    from fuzzing import edit_config

    def repeat(config):
        layers = config["config"]["layers"]
        bi = next(x for x in layers if x["class_name"] == "Bidirectional")
        layers.extend([bi] * 5000)
        return config

    path = tmp_path / "many.keras"
    edit_config(KERAS, path, repeat)
    one_error(cli("diff", path, path), 3, "many.keras", "more than 1024 Bidirectional")


def test_hundreds_of_layers_are_handled(tmp_path):
    path = hostile.many_layers_keras(tmp_path / "two_hundred.keras", 200)
    run = cli("diff", path, path, "--json")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count('"status": "same"') == 200


def test_a_shard_with_unwritten_chunks_is_refused_when_read(tmp_path):
    """Sharded weights are inferred from an in-memory outline of their shards; the shards'
    own datasets are held to the storage rule when their values are read."""
    import shutil

    src = ROOT / "fixtures" / "sharded"
    for f in src.glob("bi*.weights.*"):
        shutil.copy(f, tmp_path / f.name)
    for direction in ("forward", "backward"):
        name = f"layers/bidirectional/{direction}_layer/cell/vars/0"
        for shard in sorted(tmp_path.glob("bi_*.weights.h5")):
            with h5py.File(shard, "r+") as f:
                if name in f:
                    del f[name]
                    f.create_dataset(name, (1_000_000, 12), "f4", chunks=(10_000, 12))
                    break
        else:
            raise AssertionError(f"no shard holds {name}")
    assert shard.stat().st_size < 100_000
    line = one_error(cli("inspect", tmp_path / "bi.weights.json"), 3, "vars/0", "unwritten chunks")
    assert "bi.weights.json" in line
