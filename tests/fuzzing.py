"""Mutation fuzzing of model files: damaged copies of the committed fixtures, fed to the CLI.

Every mutant is derived deterministically from ``(fixture, kind, seed)``, so a failure can be
replayed exactly. ``check_case`` runs ``bilstm inspect --json`` and ``bilstm init`` on the
mutant in this process and returns the problems it saw (an empty list means the tool behaved):

- the exit code is one of the documented ones and never the "unexpected error" fallback;
- stderr has no traceback and at most one line, an ``Error:`` line naming the file on failure;
- the mutant is byte-for-byte unchanged afterwards and no temporary file is left behind;
- a successful ``init`` leaves a complete output that ``inspect`` reads; a failed one, none.

Also home to the small file-editing helpers the hostile-input tests build their files with.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4}
WEIGHTS_H5 = "model.weights.h5"


# --- helpers to build hostile files ------------------------------------------------------------


def suffix_of(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".weights.h5", ".keras", ".h5"):
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_keras(path: str | Path) -> bool:
    return suffix_of(path) == ".keras"


def read_members(path: str | Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def write_members(
    path: str | Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED
) -> None:
    """A zip archive holding ``members`` in order (duplicates allowed, as a hostile file may)."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with warnings_off():
                z.writestr(info, data)


@contextlib.contextmanager
def warnings_off() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def edit_h5(src: str | Path, dst: str | Path, edit: Callable[[h5py.File], None]) -> None:
    """Copy a model file to ``dst`` and let ``edit`` change its HDF5 weights in place
    (for a ``.keras`` archive: its ``model.weights.h5`` member, re-zipped afterwards)."""
    if not is_keras(src):
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as f:
            edit(f)
        return
    members = read_members(src)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / WEIGHTS_H5
        weights.write_bytes(dict(members)[WEIGHTS_H5])
        with h5py.File(weights, "r+") as f:
            edit(f)
        data = weights.read_bytes()
    write_members(dst, [(n, data if n == WEIGHTS_H5 else d) for n, d in members])


def load_config(path: str | Path) -> Any:
    if is_keras(path):
        return json.loads(dict(read_members(path))["config.json"])
    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    return json.loads(raw)


def edit_config(src: str | Path, dst: str | Path, edit: Callable[[Any], Any]) -> None:
    """Copy a model file to ``dst`` with its JSON configuration replaced by ``edit(config)``
    (``edit`` may return bytes/str to store raw text instead of JSON)."""
    new = edit(load_config(src))
    raw = new if isinstance(new, bytes | str) else json.dumps(new)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if is_keras(src):
        members = read_members(src)
        write_members(dst, [(n, raw if n == "config.json" else d) for n, d in members])
        return
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        try:
            f.attrs["model_config"] = raw
        except ValueError:  # embedded NULs: store the bytes as opaque data instead
            f.attrs["model_config"] = np.void(raw)


def weight_datasets(f: h5py.Group) -> list[str]:
    """Every dataset path of a Bidirectional's forward/backward weights, in file order."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and ("forward" in name or "backward" in name):
            found.append(name)

    f.visititems(visit)
    return found


def temp_leftovers(directory: str | Path) -> list[str]:
    """Files in ``directory`` that look like the tool's staged outputs."""
    return sorted(n for n in os.listdir(directory) if n.startswith(".") and ".tmp" in n)


# --- running the command in this process -------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


class CaseTimeout(BaseException):
    """Raised by the alarm when one case runs longer than its time bound."""


def run_main(*args: str | Path, timeout: float | None = None) -> Outcome:
    """``bilstm ARGS`` through the console-script entry point, stdout/stderr captured."""
    from bilstm_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    previous = None
    if timeout:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    sys.stdout, sys.stderr = out, err
    # A fresh process would print every warning on stderr: collect them and count them so.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            main([str(a) for a in args])
            code: Any = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdout, sys.stderr = old
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    return Outcome(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


def error_line_problems(
    outcome: Outcome,
    file: str | Path,
    what: str,
    output: str | Path | None = None,
    also: str | Path | None = None,
) -> list[str]:
    """What is wrong with the stderr of one run (empty when nothing is). The error must name
    the input (or ``also``, a second input), or the output when that is what failed (exit 4,
    or 1: verification)."""
    problems = []
    err = outcome.stderr
    lines = err.splitlines()
    if "Traceback" in err:
        problems.append(f"{what}: traceback on stderr")
    if outcome.code not in DOCUMENTED_EXIT_CODES:
        problems.append(f"{what}: exit code {outcome.code}")
    if outcome.code == 0:
        return problems
    if len(lines) != 1:
        problems.append(f"{what}: {len(lines)} stderr lines: {err[:300]!r}")
    elif not lines[0].startswith("Error: "):
        problems.append(f"{what}: stderr does not start with 'Error: ': {lines[0][:200]!r}")
    elif lines[0].startswith("Error: unexpected "):
        problems.append(f"{what}: unexpected error: {lines[0][:300]}")
    elif (
        Path(file).name not in lines[0]
        and not (also is not None and str(also) in lines[0])
        and not (output is not None and outcome.code in (1, 4) and Path(output).name in lines[0])
    ):
        problems.append(f"{what}: error does not name {Path(file).name}: {lines[0][:200]}")
    return problems


# --- mutations ---------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**40, -(2**63), 1.5, float("nan"), float("inf"), "", "x",
    "LSTM", "GRU", "Bidirectional", "../../etc/passwd", [], [1, 2], {}, {"class_name": None},
    {"module": "os", "class_name": "system", "config": "touch /tmp/never"}, "\u2603" * 3,
]
INTERESTING_KEYS = (
    "units", "class_name", "layer", "backward_layer", "config", "layers", "name", "use_bias",
    "reset_after", "merge_mode", "module", "registered_name", "activation",
    "recurrent_activation", "go_backwards", "inbound_nodes", "build_config",
)


# Where HDF5 keeps structure (object headers, B-trees, heaps, symbol tables) and where a zip
# keeps its headers: flips there reach the parsers instead of only changing weight values.
SIGNATURES = (b"OHDR", b"TREE", b"HEAP", b"SNOD", b"GCOL", b"FRHP", b"FHDB", b"BTHD", b"BTLF",
              b"\x89HDF", b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06")


def _structure_offsets(data: bytes) -> list[int]:
    found = []
    for sig in SIGNATURES:
        start = data.find(sig)
        while start >= 0 and len(found) < 5000:
            found.append(start)
            start = data.find(sig, start + 1)
    return found


def _flip(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    anchors = _structure_offsets(data) if rng.random() < 0.6 else []
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        if anchors:
            pos = min(len(buf) - 1, rng.choice(anchors) + rng.randrange(96))
        else:
            pos = rng.randrange(len(buf))
        buf[pos] ^= rng.randrange(1, 256)
    return bytes(buf)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return data[: rng.randrange(0, 64)]
    if roll < 0.3:
        return data[: len(data) - rng.randrange(1, 64)]
    return data[: rng.randrange(0, len(data))]


def mutate_bytes(src: Path, dst: Path, kind: str, rng: random.Random) -> str:
    data = src.read_bytes()
    new = _flip(data, rng) if kind == "flip" else _truncate(data, rng)
    dst.write_bytes(new)
    return f"{kind} ({len(data)} -> {len(new)} bytes)"


def mutate_zip(src: Path, dst: Path, rng: random.Random) -> str:
    members = read_members(src)
    names = [n for n, _ in members]
    op = rng.choice(
        ("remove", "duplicate", "swap", "rename", "evil_name", "deflate", "bad_crc", "empty",
         "reorder", "extra_weights")
    )
    if op == "remove":
        k = rng.randrange(len(members))
        del members[k]
        note = f"remove {names[k]}"
    elif op == "duplicate":
        k = rng.randrange(len(members))
        other = rng.choice(members)[1] if rng.random() < 0.5 else members[k][1]
        members.insert(rng.randrange(len(members) + 1), (names[k], other))
        note = f"duplicate {names[k]}"
    elif op == "swap":
        i, j = rng.sample(range(len(members)), 2) if len(members) > 1 else (0, 0)
        (a, da), (b, db) = members[i], members[j]
        members[i], members[j] = (a, db), (b, da)
        note = f"swap contents of {a} and {b}"
    elif op == "rename":
        k = rng.randrange(len(members))
        members[k] = (rng.choice(("CONFIG.JSON", "x/config.json", "model.weights.npz",
                                  names[k] + ".bak")), members[k][1])
        note = f"rename {names[k]}"
    elif op == "evil_name":
        evil = rng.choice(("../escape.txt", "/abs/path", "assets/../../up", "C:/win.txt"))
        members.insert(rng.randrange(len(members) + 1), (evil, b"x"))
        note = f"add member {evil}"
    elif op == "deflate":
        write_members(dst, members, zipfile.ZIP_DEFLATED)
        return "zip: recompress with deflate"
    elif op == "bad_crc":
        write_members(dst, members)
        data = bytearray(dst.read_bytes())
        target = rng.choice(names)
        content = dict(members)[target]
        pos = data.find(content[:64]) if content else -1
        if pos >= 0 and content:
            data[pos + rng.randrange(min(len(content), 64))] ^= 0xFF
        dst.write_bytes(bytes(data))
        return f"zip: corrupt stored bytes of {target}"
    elif op == "empty":
        k = rng.randrange(len(members))
        members[k] = (names[k], b"")
        note = f"empty {names[k]}"
    elif op == "reorder":
        rng.shuffle(members)
        note = "reorder members"
    else:
        members.append(("model.weights.h5", dict(members).get(WEIGHTS_H5, b"")[:1000]))
        note = "second, truncated model.weights.h5"
    write_members(dst, members)
    return f"zip: {note}"


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, (*path, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return {}
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return doc


def mutate_config_doc(config: Any, rng: random.Random) -> tuple[Any, str]:
    """A changed copy of a configuration and what was changed."""
    doc = copy.deepcopy(config)
    nodes = list(_nodes(doc))
    keyed = [(p, v) for p, v in nodes if p and p[-1] in INTERESTING_KEYS]
    path, value = rng.choice(keyed) if keyed and rng.random() < 0.75 else rng.choice(nodes)
    op = rng.choice(("replace", "replace", "delete", "retype", "raw"))
    where = "/".join(str(p) for p in path) or "<root>"
    if op == "raw":
        text = json.dumps(doc)
        cut = rng.randrange(len(text))
        return text[:cut] + rng.choice(("", "}", "\x00", "[" * 5000, "\ud800")) , "raw text cut"
    if op == "delete":
        return _delete(doc, path), f"delete {where}"
    if op == "retype":
        if isinstance(value, dict):
            new: Any = list(value.values())
        elif isinstance(value, list):
            new = {str(i): v for i, v in enumerate(value)}
        elif isinstance(value, str):
            new = [value]
        elif isinstance(value, bool | int | float):
            new = str(value)
        else:
            new = {"value": value}
        return _set(doc, path, new), f"retype {where}"
    new = rng.choice(ODD_VALUES)
    if isinstance(value, str) and rng.random() < 0.3:
        new = value + rng.choice(("_x", "Cell", "/", ".."))
    return _set(doc, path, copy.deepcopy(new)), f"set {where} = {str(new)[:40]}"


def mutate_config(src: Path, dst: Path, rng: random.Random) -> str:
    notes: list[str] = []

    def edit(config: Any) -> Any:
        doc, note = mutate_config_doc(config, rng)
        notes.append(note)
        return doc

    edit_config(src, dst, edit)
    return f"config: {notes[0]}"


def mutate_h5(src: Path, dst: Path, rng: random.Random) -> str:
    notes: list[str] = []

    def edit(f: h5py.File) -> None:
        notes.append(_mutate_h5_file(f, rng))

    edit_h5(src, dst, edit)
    return f"h5: {notes[0]}"


def _attr_holders(f: h5py.File) -> list[tuple[h5py.HLObject, str]]:
    found: list[tuple[h5py.HLObject, str]] = [(f, k) for k in f.attrs]

    def visit(name: str, obj: Any) -> None:
        for k in obj.attrs:
            found.append((obj, k))

    f.visititems(visit)
    return found


def _mutate_h5_file(f: h5py.File, rng: random.Random) -> str:
    weights = weight_datasets(f)
    ops = ["attr", "attr", "attr", "drop", "replace", "link", "dtype", "structure", "values"]
    if not weights:
        ops = ["attr"]
    op = rng.choice(ops)
    if op == "structure":
        return _mutate_structure(f, weights, rng)
    if op == "values":
        return _extreme_values(f, rng.choice(weights), rng)
    if op == "attr":
        holders = _attr_holders(f)
        if not holders:
            return "no attributes"
        obj, key = rng.choice(holders)
        value = obj.attrs[key]
        choice = rng.randrange(7)
        if choice == 0:
            del obj.attrs[key]
            return f"delete attr {key} of {obj.name}"
        if choice == 1 and isinstance(value, np.ndarray) and value.size > 1:
            items = list(value)
            rng.shuffle(items)
            items = items[: rng.randrange(len(items) + 1)] + items[: rng.randrange(2)]
            try:
                obj.attrs[key] = np.array(items, dtype=value.dtype) if items else np.array([])
            except (TypeError, ValueError):
                obj.attrs[key] = np.array([str(i) for i in items], dtype=h5py.string_dtype())
            return f"shuffle/drop items of attr {key} of {obj.name}"
        if choice == 2 and isinstance(value, np.ndarray) and value.size >= 1:
            items = [str(v.decode() if isinstance(v, bytes) else v) for v in value.reshape(-1)]
            k = rng.randrange(len(items))
            items[k] = rng.choice(("/", "..", "../../x", "/model_weights", "a" * 300, "",
                                   items[k] + "/..", "kernel:0"))
            obj.attrs[key] = np.array(items, dtype=h5py.string_dtype())
            return f"bad item in attr {key} of {obj.name}"
        new = rng.choice((0, -1, 3.5, b"\xff\xfe", "", "{}", "[]", np.arange(3), np.zeros((2, 2)),
                          b"null", '{"class_name": "Sequential", "config": {"layers": 5}}'))
        obj.attrs[key] = new
        return f"set attr {key} of {obj.name} to {str(new)[:30]}"
    path = rng.choice(weights)
    ds = f[path]
    if op == "drop":
        del f[path]
        return f"delete {path}"
    if op == "replace":
        shape = rng.choice(((), (0,), (1,), (ds.shape[0] + 1,) + ds.shape[1:], (3, 3, 3),
                            ds.shape[::-1]))
        del f[path]
        f.create_dataset(path, data=np.ones(shape, np.float32))
        return f"reshape {path} to {shape}"
    if op == "link":
        other = rng.choice(weights)
        del f[path]
        kind = rng.randrange(3)
        if kind == 0:
            f[path] = h5py.SoftLink("/" + other)
        elif kind == 1:
            f[path] = h5py.ExternalLink("elsewhere.h5", "/" + other)
        else:
            f.create_group(path)
        return f"replace {path} by {('soft link', 'external link', 'group')[kind]}"
    data = ds[()]
    del f[path]
    dtype = rng.choice((np.int32, np.float16, np.float64, np.uint8, h5py.string_dtype(), bool))
    if dtype is h5py.string_dtype():
        f.create_dataset(path, data=np.full(data.shape, "w", dtype=object), dtype=dtype)
    else:
        f.create_dataset(path, data=data.astype(dtype))
    return f"retype {path} as {np.dtype(dtype)}"


def _extreme_values(f: h5py.File, path: str, rng: random.Random) -> str:
    """Values at the edges of what floats hold: huge, tiny, infinite, not a number."""
    shape = f[path].shape
    dtype = rng.choice((np.float16, np.float32, np.float64))
    info = np.finfo(dtype)
    top = info.max
    pick = rng.choice(("max", "min", "tiny", "subnormal", "nan", "inf", "mixed"))
    fill = {
        "max": top, "min": -top, "tiny": info.tiny,
        "subnormal": info.smallest_subnormal, "nan": np.nan, "inf": np.inf, "mixed": 0.0,
    }[pick]
    values = np.full(shape, fill, dtype=dtype)
    if pick == "mixed" and values.size:
        flat = values.reshape(-1)
        flat[::2] = top
        flat[1::3] = -np.inf
        flat[2::5] = np.nan
    del f[path]
    f[path] = values
    return f"{path} set to {pick} {np.dtype(dtype)}"


def _groups(f: h5py.File) -> list[str]:
    found = [""]
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group) else None)
    return found


def _mutate_structure(f: h5py.File, weights: list[str], rng: random.Random) -> str:
    """Hard-link cycles and aliases, and data kept elsewhere, anywhere in the file."""
    groups = _groups(f)
    op = rng.randrange(6)
    where = rng.choice(groups)
    name = f"{where}/fuzz_{rng.randrange(1000)}" if where else f"fuzz_{rng.randrange(1000)}"
    if op == 0:
        target = rng.choice(groups)
        f[name] = f[target] if target else f["/"]
        return f"hard link {name} -> /{target} (may be a cycle)"
    if op == 1:
        source, target = rng.sample(weights, 2) if len(weights) > 1 else (weights[0],) * 2
        del f[target]
        f[target] = f[source]
        return f"weight {target} made a second name of {source}"
    if op == 2:
        f.create_dataset(name, shape=(4, 4), dtype="f4", chunks=(4, 4), compression=32001,
                         allow_unknown_filter=True)
        return f"dataset {name} needing filter 32001"
    if op == 3:
        f.create_dataset(name, shape=(4,), dtype="f4", external=[("/dev/zero", 0, 16)])
        return f"dataset {name} stored in /dev/zero"
    if op == 4:
        layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
        layout[...] = h5py.VirtualSource("/etc/passwd", "x", shape=(4,))
        f.create_virtual_dataset(name, layout, fillvalue=0)
        return f"virtual dataset {name}"
    f.create_dataset(name, shape=(2**20, 2**20), dtype="f8", chunks=(1, 1024))
    return f"dataset {name} declaring 8 TB"


# --- the mutator registry: each format plugs its own in ----------------------------------------


@dataclass(frozen=True)
class Mutator:
    """One kind of damage: ``applies(path)`` says which fixtures it can damage, ``mutate(src,
    dst, rng)`` writes the damaged copy and returns what it did."""

    name: str
    applies: Callable[[Path], bool]
    mutate: Callable[[Path, Path, random.Random], str]


MUTATORS: dict[str, Mutator] = {}
# Where fixtures come from, per format family: each returns paths under fixtures/.
FIXTURE_SOURCES: list[Callable[[], list[Path]]] = []


def register_mutator(name: str, applies: Callable[[Path], bool] = lambda p: True):
    """Decorator: ``@register_mutator("safetensors-header", applies=is_safetensors)``."""

    def add(mutate: Callable[[Path, Path, random.Random], str]):
        MUTATORS[name] = Mutator(name, applies, mutate)
        return mutate

    return add


def is_hdf5_model(path: Path) -> bool:
    return suffix_of(path) in (".keras", ".h5", ".weights.h5")


def _has_config(path: Path) -> bool:
    if is_keras(path):
        return True
    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs


register_mutator("flip", is_hdf5_model)(lambda s, d, r: mutate_bytes(s, d, "flip", r))
register_mutator("truncate", is_hdf5_model)(lambda s, d, r: mutate_bytes(s, d, "truncate", r))
register_mutator("h5", is_hdf5_model)(mutate_h5)
register_mutator("zip", is_keras)(mutate_zip)
register_mutator("config", lambda p: is_hdf5_model(p) and _has_config(p))(mutate_config)


@register_mutator("storage", is_hdf5_model)
def mutate_storage(src: Path, dst: Path, rng: random.Random) -> str:
    """How a weight is stored: declared far beyond what is written, partly written, chunked
    and compressed, big-endian; or damage aimed at a dataset's HDF5 object header."""
    op = rng.choice(("unwritten", "partial", "compressed", "big_endian", "header", "header"))
    if op == "header":
        return _damage_object_header(src, dst, rng)
    notes: list[str] = []

    def edit(f: h5py.File) -> None:
        path = rng.choice(weight_datasets(f))
        values = f[path][()]
        del f[path]
        shape = values.shape or (1,)
        chunks = tuple(max(1, n // rng.choice((1, 2, 3))) for n in shape)
        if op == "unwritten":
            rows = shape[0] * rng.choice((1, 1000, 10**6, 10**8))
            f.create_dataset(path, shape=(rows, *shape[1:]), dtype="f4", chunks=chunks)
            notes.append(f"{path} declared {(rows, *shape[1:])}, no chunk written")
        elif op == "partial":
            ds = f.create_dataset(path, shape=shape, dtype=values.dtype, chunks=chunks)
            ds[: max(0, shape[0] - 1)] = values.reshape(shape)[: max(0, shape[0] - 1)]
            notes.append(f"{path} chunked, last chunk(s) unwritten")
        elif op == "compressed":
            packed = bool(values.shape)
            f.create_dataset(path, data=values, chunks=chunks if packed else None,
                             compression="gzip" if packed else None, shuffle=packed)
            notes.append(f"{path} chunked and deflated")
        else:
            f.create_dataset(path, data=values.astype(values.dtype.newbyteorder(">")))
            notes.append(f"{path} stored big-endian")

    edit_h5(src, dst, edit)
    return f"storage: {notes[0]}"


def _damage_object_header(src: Path, dst: Path, rng: random.Random) -> str:
    """Bytes flipped inside one weight dataset's object header (its dataspace, datatype,
    layout and filter messages live there)."""
    members = read_members(src) if is_keras(src) else None
    data = dict(members)[WEIGHTS_H5] if members else src.read_bytes()
    with h5py.File(io.BytesIO(data), "r") as f:
        path = rng.choice(weight_datasets(f))
        addr = h5py.h5o.get_info(f[path].id).addr
    buf = bytearray(data)
    for _ in range(rng.choice((1, 2, 4))):
        pos = min(len(buf) - 1, addr + rng.randrange(16, 272))
        buf[pos] = rng.choice((0x00, 0xFF, buf[pos] ^ (1 << rng.randrange(8))))
    if members:
        write_members(dst, [(n, bytes(buf) if n == WEIGHTS_H5 else d) for n, d in members])
    else:
        dst.write_bytes(bytes(buf))
    return f"storage: object header of {path} at {addr} damaged"


_CENTRAL = struct.Struct("<4s6H3L5H2L")  # a zip central directory record, 46 bytes
_CENTRAL_FIELDS = {  # field index: what it is
    3: "flags", 4: "method", 7: "crc", 8: "compressed size", 9: "size", 10: "name length",
    11: "extra length", 13: "disk", 16: "local header offset",
}


@register_mutator("zipdir", is_keras)
def mutate_zip_directory(src: Path, dst: Path, rng: random.Random) -> str:
    """A field of the zip central directory or of its end record changed, or the weights
    member deflated with zeros appended (a decompression bomb, sized for a quick run)."""
    if rng.random() < 0.25:
        members = read_members(src)
        pad = rng.choice((2, 8, 70)) * 1024**2
        with zipfile.ZipFile(dst, "w") as z:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with z.open(info, "w") as w:
                    w.write(data)
                    if name == WEIGHTS_H5:
                        w.write(bytes(pad))
        return f"zipdir: weights deflated with {pad >> 20} MiB of zeros appended"
    data = bytearray(src.read_bytes())
    starts = []
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        starts.append(at)
        at = data.find(b"PK\x01\x02", at + 1)
    end = data.rfind(b"PK\x05\x06")
    if not starts or end < 0 or rng.random() < 0.2:
        field = rng.choice((8, 10, 12, 16, 20))  # entries, entries, cd size, cd offset, comment
        width = 2 if field in (8, 10, 20) else 4
        value = rng.choice((0, 1, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << (8 * width))))
        data[end + field : end + field + width] = (value % (1 << (8 * width))).to_bytes(
            width, "little"
        )
        dst.write_bytes(bytes(data))
        return f"zipdir: end record byte {field} set to {value}"
    at = rng.choice(starts)
    record = list(_CENTRAL.unpack_from(data, at))
    index = rng.choice(list(_CENTRAL_FIELDS))
    width = 2 if index <= 6 or 10 <= index <= 14 else 4
    top = (1 << (8 * width)) - 1
    record[index] = rng.choice((0, 1, top, record[index] + 1, max(0, record[index] - 1),
                                rng.randrange(top + 1), 8, 99, 12))
    record[index] = min(max(record[index], 0), top)
    _CENTRAL.pack_into(data, at, *record)
    dst.write_bytes(bytes(data))
    return f"zipdir: central directory {_CENTRAL_FIELDS[index]} set to {record[index]}"


@register_mutator("layers", lambda p: is_hdf5_model(p) and _has_config(p))
def mutate_layer_count(src: Path, dst: Path, rng: random.Random) -> str:
    """A configuration with its layers repeated thousands of times, or nested deep."""
    notes: list[str] = []
    count = rng.choice((50, 1500, 5000))

    def edit(config: Any) -> Any:
        layers = _layer_list_of(config)
        if layers is None or not layers:
            notes.append("no layer list")
            return config
        if rng.random() < 0.3:
            nested: Any = copy.deepcopy(config)
            for _ in range(rng.choice((10, 40, 200))):
                nested = {"class_name": "Functional", "config": {"layers": [nested]}}
            notes.append("model nested deep")
            return nested
        pick = [x for x in layers if isinstance(x, dict) and x.get("class_name") == "Bidirectional"]
        entry = pick[0] if pick else layers[-1]
        layers.extend(copy.deepcopy(entry) for _ in range(count))
        notes.append(f"{count} more copies of {entry.get('class_name')}")
        return config

    edit_config(src, dst, edit)
    return f"layers: {notes[0]}"


def _layer_list_of(config: Any) -> list[Any] | None:
    conf = config.get("config") if isinstance(config, dict) else None
    if isinstance(conf, list):
        return conf
    if isinstance(conf, dict) and isinstance(conf.get("layers"), list):
        return conf["layers"]
    return None


def keras_fixtures() -> list[Path]:
    """Every committed Keras model fixture (the manifest's files)."""
    doc = json.loads((FIXTURES / "manifest.json").read_text())
    entries = doc["fixtures"] if isinstance(doc, dict) else doc
    return [FIXTURES / e["file"] for e in entries]


FIXTURE_SOURCES.append(keras_fixtures)


def fixtures() -> list[Path]:
    """Every fixture of every format that registered a source."""
    found: list[Path] = []
    for source in FIXTURE_SOURCES:
        found += [p for p in source() if p not in found]
    return found


def kinds_for(path: Path) -> tuple[str, ...]:
    return tuple(name for name, m in MUTATORS.items() if m.applies(path))


@dataclass(frozen=True)
class Case:
    fixture: str  # relative to fixtures/
    kind: str
    seed: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.fixture}:{self.seed}"


def make_mutant(case: Case, directory: Path) -> tuple[Path, str]:
    """Write the mutant of ``case`` into ``directory``; return its path and a description."""
    src = FIXTURES / case.fixture
    dst = directory / f"mutant{suffix_of(src)}"
    rng = random.Random(f"{case.fixture}/{case.kind}/{case.seed}")
    return dst, MUTATORS[case.kind].mutate(src, dst, rng)


def cases(count: int, seed: int = 0) -> list[Case]:
    """``count`` cases spread evenly over fixtures and the mutation kinds that apply to them."""
    pairs = [
        (str(p.relative_to(FIXTURES)), kind) for p in fixtures() for kind in kinds_for(p)
    ]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    return [Case(pairs[i % len(pairs)][0], pairs[i % len(pairs)][1], seed * 1_000_003 + i)
            for i in range(count)]


@dataclass
class Report:
    case: Case
    note: str = ""
    codes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


COMMANDS = ("inspect", "init", "diff", "transplant")


def check_case(
    case: Case, workdir: Path, timeout: float = 10.0, commands: tuple[str, ...] = COMMANDS
) -> Report:
    """Build the mutant of ``case`` under ``workdir``, run the tool on it, report problems.

    ``diff`` compares the mutant with its intact fixture, ``transplant`` uses the mutant as
    the donor for the intact fixture."""
    directory = workdir / f"case{case.seed}"
    outdir = directory / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    report = Report(case)
    try:
        mutant, report.note = make_mutant(case, directory)
    except Exception as exc:  # the mutation itself failed: not the tool's problem
        report.note = f"mutation skipped ({type(exc).__name__}: {exc})"
        shutil.rmtree(directory, ignore_errors=True)
        return report
    intact = FIXTURES / case.fixture
    before = sha256(mutant), sha256(intact)
    output = outdir / f"out{suffix_of(mutant)}"
    transplanted = outdir / f"transplanted{suffix_of(intact)}"
    runs = {
        "inspect": ("inspect", mutant, "--json"),
        "init": ("init", mutant, "-o", output, "--init", "zeros", "--seed", "1", "--json"),
        "diff": ("diff", mutant, intact, "--json"),
        "transplant": ("transplant", mutant, intact, "-o", transplanted, "--json"),
    }
    try:
        for name in commands:
            try:
                outcome = run_main(*runs[name], timeout=timeout)
            except CaseTimeout:
                report.problems.append(f"{name}: still running after {timeout:g} s")
                continue
            report.codes[name] = outcome.code
            written = {"init": output, "transplant": transplanted}.get(name)
            if name == "diff" and outcome.code == 1 and not outcome.stderr:
                pass  # differences found: a result, not an error
            else:
                report.problems += error_line_problems(
                    outcome, mutant, name, written, also=intact if name != "init" else None
                )
            if outcome.code in (0, 1) and name in ("inspect", "diff") and outcome.stdout:
                try:
                    json.loads(outcome.stdout)
                except ValueError:
                    report.problems.append(f"{name}: --json printed no valid JSON")
            if written is not None:
                report.problems += _check_written(name, outcome, written, timeout)
        if (sha256(mutant), sha256(intact)) != before:
            report.problems.append("an input file was modified")
        for d in (directory, outdir):
            left = temp_leftovers(d)
            if left:
                report.problems.append(f"temporary files left in {d.name}: {left}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return report


def _check_written(name: str, outcome: Outcome, output: Path, timeout: float) -> list[str]:
    if outcome.code != 0:
        if output.exists():
            return [f"{name}: exit {outcome.code} but an output file exists"]
        return []
    if not output.exists():
        return [f"{name}: exit 0 but no output file"]
    try:
        again = run_main("inspect", output, "--json", timeout=timeout)
    except CaseTimeout:
        return [f"inspect of {name}'s output: still running"]
    if again.code != 0:
        return [f"inspect of {name}'s output: exit {again.code}: {again.stderr.strip()[:200]}"]
    return []
