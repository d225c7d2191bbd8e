"""Structure-aware mutation fuzzing of the PyTorch, safetensors, npz and ONNX readers.

Each mutant of a committed fixture in fixtures/foreign/ is derived from ``(fixture, kind,
seed)`` and replayable. The readers must either read every tensor or refuse the file with
one :class:`~bilstm_cli.errors.BilstmError` line — never another exception, never a hang,
and never more memory than a small bound (the fixtures are a few kilobytes; a reader that
believed a lying size would allocate gigabytes).
"""

from __future__ import annotations

import json
import random
import signal
import struct
import tracemalloc
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from foreign_files import FOREIGN

from bilstm_cli.errors import BilstmError
from bilstm_cli.formats.base import Session, sniff
from bilstm_cli.formats.foreign_kind import kind_of
from bilstm_cli.formats.tensors import open_tensors

CASES = 400
SEED = 4242
PEAK_BYTES = 32 << 20
SECONDS = 10

FIXTURES = sorted(p.name for p in FOREIGN.iterdir() if p.suffix != ".md")


def kinds_for(name: str) -> tuple[str, ...]:
    kinds = ["flip", "truncate"]
    if name.endswith((".pt", ".pth", ".npz")):
        kinds += ["member", "pickle"] if not name.endswith(".npz") else ["member"]
    if name.endswith(".safetensors"):
        kinds.append("header")
    return tuple(kinds)


@dataclass(frozen=True)
class Case:
    fixture: str
    kind: str
    seed: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.fixture}:{self.seed}"


def cases(count: int, seed: int) -> list[Case]:
    pairs = [(f, k) for f in FIXTURES for k in kinds_for(f)]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    return [Case(*pairs[i % len(pairs)], seed * 1_000_003 + i) for i in range(count)]


# --- mutations --------------------------------------------------------------------------------

ODD = [None, True, -1, 0, 2**31, 2**63, 2**64 + 1, 1.5, "F32", "BF16", "x", [], [0], [-1, 4],
       [2**40, 2**40], [0, 2**62], {}, "\ud800"]  # fmt: skip


def _flip(data: bytes, rng: random.Random, anchors: list[int]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        if anchors and rng.random() < 0.7:
            pos = min(len(buf) - 1, rng.choice(anchors) + rng.randrange(48))
        else:
            pos = rng.randrange(len(buf))
        buf[pos] ^= rng.randrange(1, 256)
    return bytes(buf)


def _anchors(data: bytes) -> list[int]:
    found = []
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"\x80\x02", b"ctorch", b"Q",
                b"data_offsets", b"shape", b"dtype"):  # fmt: skip
        start = data.find(sig)
        while start >= 0 and len(found) < 2000:
            found.append(start)
            start = data.find(sig, start + 1)
    return found


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _zip(dst: Path, members: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w") as z:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)


def mutate(case: Case, dst: Path) -> str:
    src = FOREIGN / case.fixture
    rng = random.Random(str(case))
    data = src.read_bytes()
    if case.kind == "flip":
        dst.write_bytes(_flip(data, rng, _anchors(data)))
        return "flip"
    if case.kind == "truncate":
        cut = rng.randrange(len(data))
        dst.write_bytes(data[:cut])
        return f"truncate to {cut}"
    members = _members(src) if case.kind in ("pickle", "member") else []
    if case.kind == "pickle":
        i = next(k for k, (n, _) in enumerate(members) if n.endswith("/data.pkl"))
        name, pkl = members[i]
        members[i] = (name, _flip(pkl, rng, _anchors(pkl)))
        _zip(dst, members)
        return "flip inside data.pkl"
    if case.kind == "member":
        k = rng.randrange(len(members))
        name, body = members[k]
        op = rng.choice(("remove", "empty", "cut", "swap", "duplicate", "garbage"))
        if op == "remove":
            del members[k]
        elif op == "empty":
            members[k] = (name, b"")
        elif op == "cut":
            members[k] = (name, body[: rng.randrange(len(body) + 1)])
        elif op == "swap":
            j = rng.randrange(len(members))
            members[k], members[j] = (name, members[j][1]), (members[j][0], body)
        elif op == "duplicate":
            members.append((name, body[: len(body) // 2]))
        else:
            members[k] = (name, bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
        _zip(dst, members)
        return f"{op} {name}"
    # safetensors header: change one value, keeping the length field honest
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    name = rng.choice(sorted(header))
    entry = header[name]
    if isinstance(entry, dict) and entry and rng.random() < 0.8:
        key = rng.choice(sorted(entry))
        entry[key] = rng.choice(ODD)
        note = f"{name}.{key} = {str(entry[key])[:20]}"
    else:
        header[name] = rng.choice(ODD)
        note = f"{name} = {str(header[name])[:20]}"
    raw = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    return note


# --- the check --------------------------------------------------------------------------------


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def check(case: Case, directory: Path) -> list[str]:
    """What went wrong reading the mutant of ``case`` (nothing, for a reader that behaved)."""
    path = directory / f"mutant{Path(case.fixture).suffix}"
    note = mutate(case, path)
    problems: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    tracemalloc.start()
    try:
        # No formats.hdf5.about() here: it would turn a stray TypeError into an error line.
        kind = kind_of(sniff(str(path)))
        if kind is not None:
            f = open_tensors(str(path), kind, Session())
            try:
                for name in f.tensors:
                    f.read(name)
            finally:
                f.close()
    except BilstmError as exc:
        if "\n" in exc.message or not exc.message:
            problems.append(f"error is not one line: {exc.message!r}")
        if exc.exit_code not in (2, 3):
            problems.append(f"exit code {exc.exit_code}: {exc.message}")
    except _Timeout:
        problems.append(f"still reading after {SECONDS} s")
    except Exception as exc:  # anything else would be a traceback for the user
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if peak > PEAK_BYTES:
        problems.append(f"peak memory {peak} bytes")
    return [f"{case} [{note}] {p}" for p in problems]


@pytest.mark.parametrize("kind", ["flip", "truncate", "member", "pickle", "header"])
def test_quick_foreign_fuzz(tmp_path, kind):
    chosen = [c for c in cases(CASES, SEED) if c.kind == kind]
    assert chosen
    failed = []
    for case in chosen:
        failed += check(case, tmp_path)
    assert not failed, "\n".join(failed)


# Cases that once failed, kept so they stay fixed.
REGRESSIONS = [
    # a dtype that was a JSON object: the dtype lookup raised TypeError (unhashable)
    Case("lstm_bi2.safetensors", "header", 4242012903),
    # data.pkl's compressed size in the central directory flipped to 2.7 GB: one read of
    # that size allocated 256 MB before the CRC check refused the member
    Case("rnn_bi2.pt", "flip", 99003471),
]


@pytest.mark.parametrize("case", REGRESSIONS, ids=str)
def test_foreign_fuzz_regressions(tmp_path, case):
    assert not check(case, tmp_path)


def test_mutations_are_deterministic(tmp_path):
    case = Case("lstm_bi2.safetensors", "header", 7)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert mutate(case, tmp_path / "a" / "m") == mutate(case, tmp_path / "b" / "m")
    assert (tmp_path / "a" / "m").read_bytes() == (tmp_path / "b" / "m").read_bytes()


def test_the_fuzzer_reaches_the_readers(tmp_path):
    # Mutants that still read, and mutants refused by each reader: the fuzzing is not only
    # testing that damaged files are not recognised at all.
    read, refused = set(), set()
    for case in cases(CASES, SEED):
        path = tmp_path / f"m{Path(case.fixture).suffix}"
        mutate(case, path)
        try:
            kind = kind_of(sniff(str(path)))
            if kind is None:
                continue
            f = open_tensors(str(path), kind, Session())
            for name in f.tensors:
                f.read(name)
            f.close()
            read.add(kind)
        except BilstmError:
            refused.add(kind)
    assert {"pytorch", "safetensors", "onnx"} <= refused
    assert {"pytorch", "safetensors", "onnx", "npz"} <= read
