"""Damaged, wrong and hostile input files, and bad options.

Each must give exactly one ``Error:`` line on stderr that names the file, the documented exit
code (3 for an input that cannot be read or does not fit, 2 for a usage error), no traceback,
no output file, no temporary file, and an input that is byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
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
    Outcome,
    edit_config,
    edit_h5,
    read_members,
    run_main,
    sha256,
    suffix_of,
    temp_leftovers,
    weight_datasets,
    write_members,
)

KERAS = FIXTURES / "k3_seq_input_lstm_concat.keras"
LEGACY = FIXTURES / "k3_legacy_seq_lstm.h5"
KERAS2 = FIXTURES / "k2_seq_lstm.h5"
WEIGHTS_ONLY = FIXTURES / "k3_functional_mixed.weights.h5"
GRU = FIXTURES / "k3_seq_noinput_gru_sum.keras"
CONFIGURED = [KERAS, LEGACY]


def assert_error(outcome: Outcome, code: int, file: str | Path | None, *words: str) -> str:
    """One ``Error:`` line naming ``file`` and holding ``words``; returns the line. Nothing
    on stdout."""
    assert outcome.code == code, (outcome.code, outcome.stderr)
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    assert line.startswith("Error: "), line
    assert not line.startswith("Error: unexpected "), line
    if file is not None:
        assert str(file) in line, line
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    assert outcome.stdout == ""
    return line


def refused_by_both(path: Path, tmp_path: Path, *words: str, code: int = 3) -> str:
    """``inspect`` and ``init`` both refuse ``path``; ``init`` leaves nothing behind."""
    before = sha256(path) if path.is_file() and os.access(path, os.R_OK) else None
    line = assert_error(run_main("inspect", path), code, path, *words)
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    output = outdir / f"out{suffix_of(path) or '.h5'}"
    assert_error(
        run_main("init", path, "-o", output, "--init", "zeros", "--seed", "1"), code, path, *words
    )
    assert not output.exists()
    assert temp_leftovers(outdir) == []
    if path.parent.is_dir():
        assert temp_leftovers(path.parent) == []
    if before is not None:
        assert sha256(path) == before
    return line


# --- files that are not model files ------------------------------------------------------------


def test_missing_file(tmp_path):
    refused_by_both(tmp_path / "nope.keras", tmp_path, "no such file")


def test_directory(tmp_path):
    d = tmp_path / "model.keras"
    d.mkdir()
    refused_by_both(d, tmp_path, "directory")


def test_named_pipe_does_not_hang(tmp_path):
    """Opening a FIFO waits for a writer that never comes; it is refused before that."""
    p = tmp_path / "model.h5"
    os.mkfifo(p)
    started = time.monotonic()
    refused_by_both(p, tmp_path, "pipe")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_device_is_not_a_model(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused_by_both(Path(device), tmp_path, "device")

def test_empty_file(tmp_path):
    p = tmp_path / "empty.keras"
    p.write_bytes(b"")
    refused_by_both(p, tmp_path, "empty")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_random_bytes(tmp_path, suffix):
    p = tmp_path / f"random{suffix}"
    p.write_bytes(np.random.default_rng(3).bytes(20_000))
    refused_by_both(p, tmp_path, "not a Keras model file")


def test_plain_text(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("model weights are somewhere else\n" * 50)
    refused_by_both(p, tmp_path, "not a Keras model file")


def test_zip_that_is_not_a_keras_archive(tmp_path):
    p = tmp_path / "photos.keras"
    write_members(p, [("a.jpg", b"\xff\xd8\xff" * 100), ("readme.txt", b"hello")])
    refused_by_both(p, tmp_path, "not a Keras model")


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.97])
def test_truncated_keras(tmp_path, fraction):
    data = KERAS.read_bytes()
    p = tmp_path / "cut.keras"
    p.write_bytes(data[: int(len(data) * fraction)])
    refused_by_both(p, tmp_path, "archive")


@pytest.mark.parametrize("source", [LEGACY, KERAS2, WEIGHTS_ONLY], ids=lambda p: p.name)
@pytest.mark.parametrize("fraction", [0.1, 0.6, 0.99])
def test_truncated_h5(tmp_path, source, fraction):
    data = source.read_bytes()
    p = tmp_path / f"cut{suffix_of(source)}"
    p.write_bytes(data[: int(len(data) * fraction)])
    refused_by_both(p, tmp_path)


def test_hdf5_file_that_is_not_a_model(tmp_path):
    p = tmp_path / "measurements.h5"
    with h5py.File(p, "w") as f:
        f["temperature"] = np.arange(10.0)
        f.create_group("station").attrs["name"] = "north"
    refused_by_both(p, tmp_path, "not a Keras model")


def _run_without_read_override(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as root but without the capabilities that let root read any file, so a
    file closed to its owner is closed to it too. Unlike switching to another user, this
    works wherever the checkout and its environment live (a private directory included)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is not available to drop capabilities")
    caps = "-dac_override,-dac_read_search"
    cmd = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}",
           sys.executable, "-m", "bilstm_cli", *args]
    probe = subprocess.run([*cmd[:3], "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {probe.stderr.strip()}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")


def _secret(tmp_path: Path) -> Path:
    p = tmp_path / "secret.keras"
    shutil.copyfile(KERAS, p)
    p.chmod(0o000)
    return p


def test_unreadable_file(tmp_path):
    p = _secret(tmp_path)
    if os.geteuid() != 0:
        outcome = run_main("inspect", p)
        assert_error(outcome, outcome.code, p, "readable" if outcome.code == 2 else "")
        return
    # Root reads anything, so the command runs without that power.
    run = _run_without_read_override("inspect", str(p))
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(p) in lines[0], run.stderr
    assert "readable" in lines[0] or "permission denied" in lines[0]


def test_unreadable_file_exits_3(tmp_path):
    p = _secret(tmp_path)
    if os.geteuid() == 0:
        code = _run_without_read_override("inspect", str(p)).returncode
    else:
        code = run_main("inspect", p).code
    assert code == 3


# --- archives: members missing, unsafe or oversized -------------------------------------------


def _archive_without(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"no_{name.replace('.', '_')}.keras"
    write_members(p, [(n, d) for n, d in read_members(KERAS) if n != name])
    return p


def test_archive_without_config(tmp_path):
    refused_by_both(_archive_without(tmp_path, "config.json"), tmp_path, "config.json")


def test_archive_without_weights(tmp_path):
    refused_by_both(_archive_without(tmp_path, "model.weights.h5"), tmp_path, "model.weights.h5")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/cron.d/evil", "assets/../../up.txt"])
def test_member_with_unsafe_path(tmp_path, name):
    p = tmp_path / "traversal.keras"
    write_members(p, [*read_members(KERAS), (name, b"* * * * * root true\n")])
    refused_by_both(p, tmp_path, "unsafe path")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "up.txt").exists()


def _declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a zip's headers declare for ``member``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(member).header_offset
    data[local + 22 : local + 26] = size.to_bytes(4, "little")
    end = data.rfind(b"PK\x05\x06")
    entry = int.from_bytes(data[end + 16 : end + 20], "little")  # start of the directory
    while data[entry : entry + 4] == b"PK\x01\x02":
        lengths = [int.from_bytes(data[entry + k : entry + k + 2], "little") for k in (28, 30, 32)]
        if data[entry + 46 : entry + 46 + lengths[0]] == member.encode():
            data[entry + 24 : entry + 28] = size.to_bytes(4, "little")
            break
        entry += 46 + sum(lengths)
    else:
        raise AssertionError(f"{member} not in the central directory")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_zip_bomb_member_is_refused_before_inflating(tmp_path, member):
    p = tmp_path / "bomb.keras"
    write_members(p, read_members(KERAS), zipfile.ZIP_DEFLATED)
    _declare_size(p, member, 0xFFFF0000)  # ~4 GB from a few kB
    with zipfile.ZipFile(p) as z:
        assert z.getinfo(member).file_size == 0xFFFF0000
    refused_by_both(p, tmp_path, "decompression bomb")


def test_zip_bomb_in_a_subprocess_with_little_memory(tmp_path):
    """The refusal costs no memory: it holds with the address space capped at 1 GB."""
    p = tmp_path / "bomb.keras"
    write_members(p, read_members(KERAS), zipfile.ZIP_DEFLATED)
    _declare_size(p, "model.weights.h5", 0xFFFF0000)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        "from bilstm_cli.cli import main; main(sys.argv[1:])"
    )
    run = subprocess.run([sys.executable, "-c", code, "inspect", str(p)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    assert run.stderr.startswith("Error: ") and len(run.stderr.splitlines()) == 1


def test_member_smaller_than_declared_is_a_clean_error(tmp_path):
    p = tmp_path / "liar.keras"
    write_members(p, read_members(KERAS), zipfile.ZIP_DEFLATED)
    _declare_size(p, "config.json", 100)  # the real config is longer
    refused_by_both(p, tmp_path)


def test_huge_config_json_is_refused(tmp_path):
    p = tmp_path / "huge.keras"
    members = read_members(KERAS)
    config = json.loads(dict(members)["config.json"])
    config["padding"] = " " * (65 * 1024 * 1024)
    raw = json.dumps(config).encode()
    write_members(
        p, [(n, raw if n == "config.json" else d) for n, d in members], zipfile.ZIP_DEFLATED
    )
    assert p.stat().st_size < 1024 * 1024
    refused_by_both(p, tmp_path, "config.json", "too large")


def test_archive_with_a_member_twice(tmp_path):
    """Readers differ on which copy of a duplicated member counts; such archives are refused
    (rewriting one also made zipfile print a warning)."""
    p = tmp_path / "twice.keras"
    members = read_members(KERAS)
    write_members(p, [*members, ("config.json", b'{"class_name": "Sequential"}')])
    refused_by_both(p, tmp_path, "config.json", "more than once")


def test_archive_needing_an_unknown_zip_version(tmp_path):
    """zipfile raises NotImplementedError for such an archive; it is reported like any
    other unreadable archive, and the file handle is not leaked."""
    data = bytearray(KERAS.read_bytes())
    entry = data.find(b"PK\x01\x02")
    data[entry + 6] = 210  # version needed to extract: 21.0
    p = tmp_path / "future.keras"
    p.write_bytes(bytes(data))
    line = refused_by_both(p, tmp_path, "not a readable .keras archive")
    assert "version" in line

def test_damaged_weights_member_is_reported_by_inspect_too(tmp_path):
    """A stored member whose bytes no longer match its CRC is damaged for every command."""
    p = tmp_path / "bitrot.keras"
    data = bytearray(KERAS.read_bytes())
    weights = dict(read_members(KERAS))["model.weights.h5"]
    start = bytes(data).find(weights)
    data[start + len(weights) - 100] ^= 0x40  # inside the weight values
    p.write_bytes(bytes(data))
    refused_by_both(p, tmp_path, "model.weights.h5", "damaged")


# --- configurations: not JSON, wrong shapes, wrong values --------------------------------------


def _bidirectional(config):
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Bidirectional":
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError("no Bidirectional in the fixture")


def _set_units(value):
    def edit(config):
        _bidirectional(config)["config"]["layer"]["config"]["units"] = value
        return config

    return edit


def _without_wrapped_layer(config):
    del _bidirectional(config)["config"]["layer"]
    return config


def _layers_not_a_list(config):
    config["config"]["layers"] = {"0": config["config"]["layers"]}
    return config


CONFIG_CASES = {
    "not_json": (lambda c: b"{'layers': [", "not valid JSON"),
    "not_utf8": (lambda c: b'{"class_name": "\xff\xfe"}', ""),
    "deeply_nested": (lambda c: "[" * 50_000 + "]" * 50_000, ""),
    "a_list": (lambda c: [c], "lists no layers"),
    "a_string": (lambda c: json.dumps("Sequential"), "lists no layers"),
    "null": (lambda c: None, "lists no layers"),
    "layers_not_a_list": (_layers_not_a_list, "lists no layers"),
    "bidirectional_without_layer": (_without_wrapped_layer, "wrapped layer"),
    "units_a_string": (_set_units("3"), "units"),
    "units_negative": (_set_units(-3), "units"),
    "units_zero": (_set_units(0), "units"),
    "units_a_bool": (_set_units(True), "units"),
    "units_not_the_file's": (_set_units(5), "units needs"),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
@pytest.mark.parametrize("source", CONFIGURED, ids=lambda p: p.name)
def test_bad_configuration(tmp_path, source, case):
    edit, words = CONFIG_CASES[case]
    p = tmp_path / f"bad_config{suffix_of(source)}"
    edit_config(source, p, edit)
    refused_by_both(p, tmp_path, words)


@pytest.mark.parametrize(
    "source",
    [FIXTURES / "k3_functional_backward_nobias.keras", FIXTURES / "k2_functional_mixed.h5"],
    ids=lambda p: p.name,
)
def test_custom_backward_layer_running_forwards(tmp_path, source):
    """Keras refuses a Bidirectional whose two layers run the same way; so does every
    command (transplant used to fail in its reference pass without naming the file)."""
    p = tmp_path / f"same_way{suffix_of(source)}"

    def same_direction(config):
        stack = [config]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("class_name") == "Bidirectional" and node["config"].get(
                    "backward_layer"
                ):
                    node["config"]["backward_layer"]["config"]["go_backwards"] = False
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return config

    edit_config(source, p, same_direction)
    refused_by_both(p, tmp_path, "go_backwards")
    outcome = run_main("transplant", p, source, "-o", tmp_path / f"t{suffix_of(source)}")
    assert_error(outcome, 3, p, "go_backwards")

def test_model_config_attribute_not_text(tmp_path):
    p = tmp_path / "binary_config.h5"
    shutil.copyfile(LEGACY, p)
    with h5py.File(p, "r+") as f:
        f.attrs["model_config"] = np.arange(12)
    refused_by_both(p, tmp_path, "model_config")


# --- weight datasets missing, misshapen or of the wrong kind -----------------------------------


def _drop_weight(f):
    del f[weight_datasets(f)[1]]


def _reshape_weight(f):
    path = weight_datasets(f)[1]
    rows, cols = f[path].shape
    del f[path]
    f[path] = np.zeros((rows + 1, cols), np.float32)


def _scalar_weight(f):
    path = weight_datasets(f)[1]
    del f[path]
    f[path] = np.float32(1)


def _integer_weight(f):
    path = weight_datasets(f)[1]
    values = f[path][()]
    del f[path]
    f[path] = values.astype(np.int32)


def _string_weight(f):
    path = weight_datasets(f)[1]
    shape = f[path].shape
    del f[path]
    f.create_dataset(path, data=np.full(shape, "w", dtype=object), dtype=h5py.string_dtype())


def _group_instead_of_weight(f):
    path = weight_datasets(f)[1]
    del f[path]
    f.create_group(path)


def _implausibly_large_weight(f):
    path = weight_datasets(f)[1]
    del f[path]
    # Declared, never written: a few bytes on disk, a terabyte if anyone read it.
    f.create_dataset(path, shape=(4, 10**11), dtype=np.float32, chunks=(1, 1024))


WEIGHT_CASES = {
    "missing": (_drop_weight, ""),
    "wrong_shape": (_reshape_weight, ""),
    "scalar": (_scalar_weight, ""),
    "integers": (_integer_weight, "not floating-point"),
    "strings": (_string_weight, "not floating-point"),
    "a_group": (_group_instead_of_weight, ""),
    "declared_terabyte": (_implausibly_large_weight, "implausible"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=list(WEIGHT_CASES))
@pytest.mark.parametrize("source", [KERAS, LEGACY, WEIGHTS_ONLY], ids=lambda p: p.name)
def test_bad_weight_dataset(tmp_path, source, case):
    edit, words = WEIGHT_CASES[case]
    p = tmp_path / f"bad_weight{suffix_of(source)}"
    edit_h5(source, p, edit)
    if source is WEIGHTS_ONLY and case in ("missing", "wrong_shape", "scalar", "a_group"):
        # Without a configuration a damaged pair is simply not recognised as a layer; the
        # command must still either succeed or refuse cleanly.
        outcome = run_main("inspect", p, "--json")
        if outcome.code == 0:
            json.loads(outcome.stdout)
            return
    refused_by_both(p, tmp_path, words)


def test_missing_weight_names_the_dataset(tmp_path):
    p = tmp_path / "missing.h5"
    edit_h5(LEGACY, p, _drop_weight)
    line = refused_by_both(p, tmp_path, "missing")
    assert "backward_lstm/lstm_cell" in line


def test_directions_reading_different_inputs(tmp_path):
    """A legacy file carries no input size: the two kernels must at least agree on it."""
    p = tmp_path / "disagree.h5"

    def widen_backward_kernel(f):
        path = next(n for n in weight_datasets(f) if "backward" in n and n.endswith("/kernel"))
        rows, cols = f[path].shape
        del f[path]
        f[path] = np.zeros((rows + 1, cols), np.float32)

    edit_h5(LEGACY, p, widen_backward_kernel)
    refused_by_both(p, tmp_path, "same input")


def test_float_type_with_damaged_bit_layout(tmp_path):
    """Writing to a float dataset whose declared bit layout is nonsense crashes HDF5; such a
    dataset is refused before anything is converted."""
    p = tmp_path / "odd_float.h5"
    shutil.copyfile(LEGACY, p)
    with h5py.File(p, "r") as f:
        path = weight_datasets(f)[0]
        header = h5py.h5o.get_info(f[path].id).addr
    data = bytearray(p.read_bytes())
    # The float datatype message of that dataset: class+version 0x11, then flags, size 4,
    # then the bit offset (2 bytes) that a damaged file sets to something impossible.
    at = data.find(b"\x11\x20\x1f\x00\x04\x00\x00\x00\x00\x00\x20\x00", header)
    assert at > 0
    data[at + 9] = 0x95
    p.write_bytes(bytes(data))
    refused_by_both(p, tmp_path, "non-IEEE")


def test_global_heap_that_would_hang_hdf5(tmp_path):
    """A global heap collection declaring more bytes than it holds makes HDF5 walk into a
    zero-sized free-space entry and loop forever while reading a string attribute (no signal
    stops it). Such heaps are walked and refused first."""
    source = FIXTURES / "k3_legacy_functional_gru.h5"
    data = bytearray(source.read_bytes())
    at = data.find(b"GCOL")
    assert data[at + 8 : at + 16] == (8192).to_bytes(8, "little")
    data[at + 9] = 0x49  # declares 18688 bytes
    p = tmp_path / "looping.h5"
    p.write_bytes(bytes(data))
    for command in (["inspect", str(p)], ["init", str(p), "-o", str(tmp_path / "o.h5")]):
        run = subprocess.run([sys.executable, "-m", "bilstm_cli", *command],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 3, run.stderr
        assert run.stderr.startswith(f"Error: {p}: global heap at byte {at}")
        assert len(run.stderr.splitlines()) == 1
    assert not (tmp_path / "o.h5").exists()

# --- links, virtual and external datasets ------------------------------------------------------


def _external_link_weight(f):
    path = weight_datasets(f)[0]
    del f[path]
    f[path] = h5py.ExternalLink("/etc/passwd", "/root")


def _soft_link_weight(f):
    path, other = weight_datasets(f)[:2]
    del f[path]
    f[path] = h5py.SoftLink("/" + other)


def _soft_link_group(f):
    group = weight_datasets(f)[0].rsplit("/", 1)[0]
    f.move(group, group + "_moved")
    f[group] = h5py.SoftLink("/" + group + "_moved")


def _external_link_group(f):
    group = weight_datasets(f)[0].rsplit("/", 2)[0]
    del f[group]
    f[group] = h5py.ExternalLink("other_model.h5", "/")


def _virtual_weight(f):
    path = weight_datasets(f)[0]
    shape = f[path].shape
    del f[path]
    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[...] = h5py.VirtualSource("/etc/other.h5", "data", shape=shape)
    f.create_virtual_dataset(path, layout, fillvalue=0)


def _external_storage_weight(f):
    path = weight_datasets(f)[0]
    shape = f[path].shape
    del f[path]
    f.create_dataset(path, shape=shape, dtype="f4",
                     external=[("/dev/zero", 0, h5py.h5f.UNLIMITED)])


LINK_CASES = {
    "external_link_dataset": (_external_link_weight, "external link"),
    "soft_link_dataset": (_soft_link_weight, "soft link"),
    "soft_link_group": (_soft_link_group, "soft link"),
    "external_link_group": (_external_link_group, "external link"),
    "virtual_dataset": (_virtual_weight, "virtual"),
    "external_storage": (_external_storage_weight, "external file"),
}


@pytest.mark.parametrize("case", LINK_CASES, ids=list(LINK_CASES))
@pytest.mark.parametrize("source", [KERAS, LEGACY, WEIGHTS_ONLY], ids=lambda p: p.name)
def test_links_and_data_from_elsewhere_are_refused(tmp_path, source, case):
    edit, words = LINK_CASES[case]
    p = tmp_path / f"linked{suffix_of(source)}"
    edit_h5(source, p, edit)
    if source is WEIGHTS_ONLY and case in ("soft_link_group", "external_link_group"):
        # Without a configuration nothing leads the reader through the link: the layer is
        # simply not found, which is also safe.
        outcome = run_main("inspect", p, "--json")
        assert outcome.code in (0, 3), outcome.stderr
        if outcome.code == 0:
            names = [w["dataset"] for la in json.loads(outcome.stdout)["layers"]
                     for w in la["weights"]]
            assert not any("_moved" in n for n in names)
            return
    refused_by_both(p, tmp_path, words)


def test_link_outside_the_weights_is_kept_and_never_followed(tmp_path):
    """A link in a part of the file the tool does not change is copied as a link."""
    p = tmp_path / "dense_linked.h5"

    def link_dense(f):
        f["model_weights/dense/elsewhere"] = h5py.ExternalLink("/etc/passwd", "/x")

    edit_h5(LEGACY, p, link_dense)
    out = tmp_path / "out.h5"
    outcome = run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1")
    assert outcome.code == 0, outcome.stderr
    with h5py.File(out, "r") as f:
        link = f["model_weights/dense"].get("elsewhere", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "/etc/passwd"


# --- values and layers that are unusual but valid ----------------------------------------------


@pytest.mark.parametrize("source", [KERAS, LEGACY], ids=lambda p: p.name)
def test_nan_and_inf_are_reported_not_refused(tmp_path, source):
    p = tmp_path / f"nonfinite{suffix_of(source)}"

    def poison(f):
        path = weight_datasets(f)[0]
        values = f[path][()]
        values.flat[0], values.flat[1], values.flat[2] = np.nan, np.inf, -np.inf
        f[path][...] = values

    edit_h5(source, p, poison)
    outcome = run_main("inspect", p, "--json")
    assert outcome.code == 0, outcome.stderr
    doc = json.loads(outcome.stdout)  # strict JSON: no NaN literals
    finite = [w["stats"]["finite"] for w in doc["layers"][0]["weights"]]
    assert finite.count(False) == 1 and finite.count(True) == len(finite) - 1
    table = run_main("inspect", p)
    assert table.code == 0 and "NO" in table.stdout
    out = tmp_path / f"clean{suffix_of(source)}"
    assert run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1").code == 0
    again = json.loads(run_main("inspect", out, "--json").stdout)
    assert all(w["stats"]["finite"] for w in again["layers"][0]["weights"])


def test_finite_weights_whose_squares_overflow(tmp_path):
    p = tmp_path / "enormous.h5"

    def enlarge(f):
        path = weight_datasets(f)[0]
        values = np.full(f[path].shape, 1e300)
        del f[path]
        f[path] = values

    edit_h5(LEGACY, p, enlarge)
    outcome = run_main("inspect", p, "--json")
    assert outcome.code == 0, outcome.stderr
    weight = _enlarged_weight(json.loads(outcome.stdout))
    stats = weight["stats"]
    assert stats["mean"] == pytest.approx(1e300) and stats["std"] <= 1e-12 * 1e300
    assert stats["l2"] == pytest.approx(1e300 * np.sqrt(np.prod(weight["shape"])), rel=1e-9)

@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_weights_at_the_float64_limit(tmp_path, sign):
    p = tmp_path / "limit.h5"
    top = np.finfo(np.float64).max

    def saturate(f):
        path = weight_datasets(f)[0]
        values = np.full(f[path].shape, sign * top)
        del f[path]
        f[path] = values

    edit_h5(LEGACY, p, saturate)
    outcome = run_main("inspect", p, "--json")
    assert outcome.code == 0, outcome.stderr
    json.loads(outcome.stdout)
    out = tmp_path / "out.h5"
    assert run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1").code == 0

def _enlarged_weight(doc):
    weights = [w for layer in doc["layers"] for w in layer["weights"]]
    return next(w for w in weights if w["stats"]["max"] == 1e300)


@pytest.mark.parametrize("source", CONFIGURED, ids=lambda p: p.name)
def test_model_without_bidirectional_layer(tmp_path, source):
    p = tmp_path / f"plain{suffix_of(source)}"

    def unwrap(config):
        _bidirectional(config)["class_name"] = "TimeDistributed"
        return config

    edit_config(source, p, unwrap)
    table = run_main("inspect", p)
    assert table.code == 0 and table.stderr == ""
    assert "no Bidirectional layer" in table.stdout
    doc = run_main("inspect", p, "--json")
    assert doc.code == 0 and json.loads(doc.stdout)["layers"] == []
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / f"out{suffix_of(p)}"
    outcome = run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1")
    assert_error(outcome, 3, p, "no Bidirectional layer")
    assert not out.exists() and temp_leftovers(outdir) == []


# --- bad options: exit 2, one line saying what was wrong and what was expected -----------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--init", "nosuch"], ["nosuch", "known:", "glorot_uniform"]),
        (["--init", "bias["], ["bias["]),
        (["--init", "bias[=zeros"], ["bias[", "expected", "kernel, recurrent_kernel or bias"]),
        (["--init", "foo=zeros"], ["foo", "expected", "kernel, recurrent_kernel or bias"]),
        (["--init", "bias[]=ones"], ["bias[]", "expected"]),
        (["--init", "kernel[i,q]=zeros"], ["'q'", "i, f, c, o"]),
        (["--init", "constant:abc"], ["abc", "expected"]),
        (["--layer", "zzz*"], ["zzz*", "available: bidirectional"]),
        (["--direction", "sideways"], ["sideways", "forward", "backward", "both"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--bogus"], ["--bogus", "bilstm init --help"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None,
)
def test_bad_init_options(tmp_path, args, words):
    out = tmp_path / "out.keras"
    outcome = run_main("init", KERAS, "-o", out, "--seed", "1", *args)
    assert_error(outcome, 2, None, *words)
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_gate_the_cell_lacks(tmp_path):
    out = tmp_path / "out.keras"
    outcome = run_main("init", GRU, "-o", out, "--init", "bias[f]=ones", "--seed", "1")
    assert_error(outcome, 2, None, "'f'", "GRU", "z, r, h")
    assert not out.exists()


def test_init_without_output(tmp_path):
    assert_error(run_main("init", KERAS, "--init", "zeros"), 2, None, "-o OUT")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["inspect", str(KERAS), "--layer", "enc*"], ["enc*", "available: bidirectional"]),
        (["inspect", str(KERAS), "--colour"], ["--colour", "bilstm inspect --help"]),
        (["inspect"], ["MODEL", "bilstm inspect --help"]),
        (["frobnicate", str(KERAS)], ["frobnicate", "bilstm --help"]),
    ],
)
def test_bad_inspect_options(args, words):
    assert_error(run_main(*args), 2, None, *words)



# --- hard links: cycles and aliases ------------------------------------------------------------


def _cycle_at_root(f):
    f.create_group("elsewhere")["loop"] = f["/"]  # a hard link back to the root


def _cycle_in_layer(f):
    group = weight_datasets(f)[0].split("/")[0]
    f[f"{group}/loop"] = f[group]


@pytest.mark.parametrize("edit", [_cycle_at_root, _cycle_in_layer], ids=["root", "layer"])
@pytest.mark.parametrize("source", [KERAS, LEGACY, WEIGHTS_ONLY], ids=lambda p: p.name)
def test_hard_link_cycles_are_walked_once(tmp_path, source, edit):
    """A group linked into itself made the weights-only search and the verification walk
    run for minutes (or report aliases as changed); each object is now visited once."""
    p = tmp_path / f"cyclic{suffix_of(source)}"
    edit_h5(source, p, edit)
    started = time.monotonic()
    outcome = run_main("inspect", p, "--json", timeout=30)
    assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["layers"]
    out = tmp_path / f"out{suffix_of(source)}"
    outcome = run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1", timeout=30)
    assert outcome.code == 0, outcome.stderr
    assert run_main("inspect", out).code == 0
    assert time.monotonic() - started < 20


def test_one_dataset_linked_as_two_weights(tmp_path):
    """Writing one name of a doubly linked dataset overwrites the other: never written out."""
    p = tmp_path / "aliased.h5"

    def alias(f):
        biases = [n for n in weight_datasets(f) if n.endswith("/bias") and "dense" not in n]
        del f[biases[1]]
        f[biases[1]] = f[biases[0]]

    edit_h5(LEGACY, p, alias)
    out = tmp_path / "out.h5"
    outcome = run_main("init", p, "-o", out, "--init", "glorot_uniform", "--seed", "1")
    assert_error(outcome, 1, out, "linked under two names", "nothing was written")
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_one_dataset_linked_as_two_weights_in_an_archive(tmp_path):
    """The same in a .keras archive, where the copy is made around the replaced weights: two
    names for one run of bytes are not copied around twice, and the verification says why."""
    p = tmp_path / "aliased.keras"

    def alias(f):
        names = weight_datasets(f)
        first = next(n for n in names if "forward" in n and n.endswith("vars/2"))
        second = first.replace("forward", "backward")
        del f[second]
        f[second] = f[first]

    edit_h5(KERAS, p, alias)
    out = tmp_path / "out.keras"
    outcome = run_main("init", p, "-o", out, "--init", "glorot_uniform", "--seed", "1")
    assert_error(outcome, 1, out, "linked under two names", "nothing was written")
    assert not out.exists() and temp_leftovers(tmp_path) == []


# --- transplant from hostile donors (known failures, marked) -----------------------------------


def test_transplant_donor_with_unknown_activation_skips_only_the_forward_check(tmp_path):
    """A custom activation's code is never run: the weights move, the settings difference is
    reported, and the forward-pass check says why it was skipped."""
    donor = tmp_path / "donor.keras"

    def odd_activation(config):
        _bidirectional(config)["config"]["layer"]["config"]["activation"] = "tanh_x"
        return config

    edit_config(KERAS, donor, odd_activation)
    out = tmp_path / "out.keras"
    outcome = run_main("transplant", donor, KERAS, "-o", out, "--json")
    assert outcome.code == 0, outcome.stderr
    doc = json.loads(outcome.stdout)
    assert any("tanh_x" in note for note in doc["notes"])
    skipped = [c for c in doc["checks"] if "forward pass" in c["check"]]
    assert skipped and all(c["status"] == "skipped" and "tanh_x" in c["detail"] for c in skipped)
    assert all(c["applies"] and not c["ok"] for c in skipped)
    # Written, but not called verified: a check that applies could not run.
    assert out.exists() and doc["verified"] is False


def test_transplant_donor_values_beyond_the_target_dtype(tmp_path):
    donor = tmp_path / "donor.h5"

    def enlarge(f):
        path = weight_datasets(f)[0]
        values = np.full(f[path].shape, 1e300)
        del f[path]
        f[path] = values

    edit_h5(LEGACY, donor, enlarge)
    out = tmp_path / "out.h5"
    outcome = run_main("transplant", donor, LEGACY, "-o", out)
    assert_error(outcome, 3, donor, "beyond the range")
    assert not out.exists()
    outcome = run_main("transplant", donor, LEGACY, "-o", out, "--json")
    assert_error(outcome, 3, donor, "beyond the range")  # no plan in a --json run


def test_string_attribute_with_damaged_type(tmp_path):
    """A string attribute whose type bits say "variable-length, neither string nor sequence"
    crashes HDF5 when read (a segmentation fault, found by fuzzing); such an attribute is
    refused before it is read. Run in child processes, so that a regression fails this test,
    not the whole suite."""
    p = tmp_path / "odd_string.h5"
    data = bytearray(LEGACY.read_bytes())
    # Attribute message v1: the 14-byte name padded to 16, then the datatype: class and
    # version 0x19 (variable-length, version 1), then the bit field that says string, its
    # padding and character set.
    at = data.find(b"keras_version\x00") + 16
    assert data[at] == 0x19 and data[at + 1] == 0x01
    data[at + 1] = (data[at + 1] & 0xF0) | 0x09  # variable-length kind 1 (string) becomes 9
    p.write_bytes(bytes(data))
    out = tmp_path / "out.h5"
    for args in (["inspect", p], ["init", p, "-o", out, "--init", "zeros", "--seed", "1"]):
        run = subprocess.run(
            [sys.executable, "-m", "bilstm_cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 3, (run.returncode, run.stderr)
        assert run.stderr.count("\n") == 1, run.stderr
        assert "variable-length sequence" in run.stderr
        assert "keras_version" in run.stderr
    assert not out.exists()


def test_attribute_name_that_is_not_utf8(tmp_path):
    """h5py gives such a name as bytes; it is carried over and compared like any other."""
    p = tmp_path / "odd_name.h5"

    def add(f):
        f["model_weights"].attrs.create(b"\xff\xfeodd", 1.5)

    edit_h5(LEGACY, p, add)
    out = tmp_path / "out.h5"
    run = run_main("init", p, "-o", out, "--init", "zeros", "--seed", "1")
    assert run.code == 0, run.stderr
    with h5py.File(out, "r") as f:
        assert f["model_weights"].attrs[b"\xff\xfeodd"] == 1.5


def test_layer_name_that_is_not_utf8(tmp_path):
    """A weights-only file whose layer is named by bytes that are not UTF-8: init seeds that
    layer's draws from the name as the file spells it, and writes."""
    p = tmp_path / "odd_layer.weights.h5"

    def rename(f):
        f["layers/bidirectional_2/vars"].attrs["name"] = b"\xff\xfe"

    edit_h5(FIXTURES / "k3_functional_mixed.weights.h5", p, rename)
    layers = json.loads(run_main("inspect", p, "--json").stdout)["layers"]
    assert "\udcff\udcfe" in [layer["name"] for layer in layers]
    for seed in ("1", "1", "2"):
        out = tmp_path / f"out{seed}.weights.h5"
        run = run_main("init", p, "-o", out, "--seed", seed, "--force")
        assert run.code == 0, run.stderr
    assert (tmp_path / "out1.weights.h5").exists() and (tmp_path / "out2.weights.h5").exists()
