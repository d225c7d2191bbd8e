"""How an archive's CRC-32 is checked without reading a large member more than once.

A write checks the input member's CRC in the same pass as its copy and derives the output's
CRC from the pieces it kept and the bytes it wrote; a read-only command checks it whole up to
a size and says so beyond it; a dry run, which copies nothing, checks it itself.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bilstm_cli as bl
from bilstm_cli.errors import InputError
from bilstm_cli.formats import archive

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KERAS = FIXTURES / "k3_functional_mixed.keras"
DONOR = FIXTURES / "k3_functional_mixed.keras"
WEIGHTS = "model.weights.h5"


def _bitrot(tmp_path: Path, name: str = "bitrot.keras") -> Path:
    """A copy of KERAS with one bit flipped inside its stored weight values."""
    data = bytearray(KERAS.read_bytes())
    with zipfile.ZipFile(KERAS) as z:
        member = z.read(WEIGHTS)
    start = bytes(data).find(member)
    data[start + len(member) - 100] ^= 0x40
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return p


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bilstm_cli", *args], capture_output=True, text=True, timeout=300
    )


def test_write_checks_the_input_crc_while_copying(tmp_path):
    p = _bitrot(tmp_path)
    out = tmp_path / "out.keras"
    run = _run("init", str(p), "-o", str(out), "--init", "kernel=zeros")
    assert run.returncode == 3, run.stderr
    assert "CRC mismatch" in run.stderr and len(run.stderr.splitlines()) == 1
    assert not out.exists() and [x.name for x in tmp_path.iterdir()] == [p.name]


def test_dry_run_checks_the_crc_it_put_off(tmp_path):
    p = _bitrot(tmp_path)
    run = _run("init", str(p), "--dry-run", "--init", "kernel=zeros")
    assert run.returncode == 3, run.stderr
    assert "CRC mismatch" in run.stderr


def test_transplant_checks_both_files(tmp_path):
    p = _bitrot(tmp_path)
    out = tmp_path / "out.keras"
    into = _run("transplant", str(DONOR), str(p), "-o", str(out))
    assert into.returncode == 3 and "CRC mismatch" in into.stderr, into.stderr
    from_ = _run("transplant", str(p), str(KERAS), "-o", str(out))
    assert from_.returncode == 3 and "CRC mismatch" in from_.stderr, from_.stderr
    assert not out.exists()


def test_written_archive_crc_is_derived_exactly(tmp_path):
    """The output's CRC, computed from the kept pieces and the written bytes, is the one
    zipfile computes from the whole member."""
    out = tmp_path / "out.keras"
    bl.apply(bl.plan_init(str(KERAS), init=["recurrent_kernel=orthogonal"], seed=3), str(out))
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        assert z.getinfo(WEIGHTS).CRC != zipfile.ZipFile(KERAS).getinfo(WEIGHTS).CRC


def test_read_only_commands_check_a_small_member_whole(tmp_path):
    p = _bitrot(tmp_path)
    for args in (["inspect", str(p)], ["diff", str(p), str(KERAS)], ["check", str(p)]):
        run = _run(*args)
        assert run.returncode == 3 and "CRC mismatch" in run.stderr, (args, run.stderr)
        assert run.stdout == "", args  # the check is made beside the reading, before reporting


def test_read_only_commands_say_when_a_large_member_was_read_in_part(tmp_path, monkeypatch):
    """Beyond the limit, inspect reads only the weights it lists and says the CRC was not
    checked; check, a write and the default library reader still check it."""
    monkeypatch.setattr(archive, "READ_ONLY_CRC_BYTES", 1000)
    p = _bitrot(tmp_path)
    result = bl.inspect(str(p))
    assert any("CRC-32 of model.weights.h5" in n and "not checked" in n for n in result.model.notes)
    assert "not checked" in str(result.to_dict()["notes"])
    differences = bl.diff(str(p), str(KERAS))
    assert any("not checked" in n for n in differences.notes)
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.check(str(p))
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.open_model(str(p)).close()
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.apply(bl.plan_init(str(p), init=["kernel=zeros"]), str(tmp_path / "o.keras"))
    clean = bl.inspect(str(KERAS))
    assert any("not checked" in n for n in clean.model.notes)  # said even when intact


GZIP = FIXTURES / "dtypes" / "f32_lstm_gzip.keras"  # gzip-filtered datasets: HDF5 rewrites them


def test_general_writer_relies_on_the_crc_its_extraction_checked(tmp_path, monkeypatch):
    """Weights HDF5 must rewrite are edited in a copy zipfile extracts, checking the CRC as
    it reads to the member's end; that check is not made a second time, and damage is
    still refused."""
    again = []  # the input's CRC checked once more, after the extraction
    real = archive.check_member_crc
    monkeypatch.setattr(archive, "check_member_crc", lambda *a: again.append(a[0]) or real(*a))
    with zipfile.ZipFile(GZIP) as z:
        assert z.getinfo(WEIGHTS).compress_type == zipfile.ZIP_STORED
    result = bl.apply(bl.plan_init(str(GZIP), init=["kernel=zeros"]), str(tmp_path / "o.keras"))
    assert result.verified and again == []
    data = bytearray(GZIP.read_bytes())
    with zipfile.ZipFile(GZIP) as z:
        member = z.read(WEIGHTS)
    start = bytes(data).find(member)
    data[start + len(member) // 2] ^= 0x40
    bad = tmp_path / "bitrot_gzip.keras"
    bad.write_bytes(bytes(data))
    run = _run("init", str(bad), "-o", str(tmp_path / "p.keras"), "--init", "kernel=zeros")
    assert run.returncode == 3 and "damaged" in run.stderr, run.stderr
    assert not (tmp_path / "p.keras").exists()


def test_a_crc_taken_beside_the_reading_still_refuses(tmp_path, monkeypatch):
    """Members from a few MiB up have their CRC taken on a helper thread while the command
    reads (read-only commands, a transplant's donor): it is settled before anything is
    reported or written."""
    monkeypatch.setattr(archive, "_BESIDE_BYTES", 0)
    p = _bitrot(tmp_path)
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.inspect(str(p))
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.diff(str(p), str(KERAS))
    out = tmp_path / "out.keras"
    with pytest.raises(InputError, match="CRC mismatch"):
        bl.apply(bl.plan_transplant(str(p), str(KERAS)), str(out))
    assert not out.exists()
    # and a sound file goes through the same path
    assert bl.diff(str(KERAS), str(KERAS)).identical


def test_an_input_changed_while_its_crc_is_taken_is_refused(tmp_path, monkeypatch):
    """The input's CRC is taken beside the work; if the file changes meanwhile, what was read
    for it may not be what was copied, so the write is refused and nothing is left."""
    import os
    import shutil

    from bilstm_cli.formats import staging

    p = tmp_path / "in.keras"
    shutil.copyfile(KERAS, p)
    real = staging.piece_crcs

    def touched(path, parts):
        crcs = real(path, parts)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return crcs

    monkeypatch.setattr(staging, "piece_crcs", touched)
    out = tmp_path / "out.keras"
    with pytest.raises(InputError, match="changed while it was being copied"):
        bl.apply(bl.plan_init(str(p), init=["kernel=zeros"], seed=1), str(out))
    assert not out.exists()
    assert [q.name for q in tmp_path.iterdir()] == ["in.keras"]
