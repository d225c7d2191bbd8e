"""Measuring one child process, and the small helpers bench/run.py reports with.

Every measurement is a fresh subprocess. Its wall time is taken with time.perf_counter()
around start and reaping, and its peak memory is the child's own maximum resident set
size, from os.wait4() on its pid (Linux carries the spawning process's resident size over
exec, so the runner's own ~20 MiB is a floor under every peak, the same for both sides).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    wall: float
    peak_kib: int
    timings: dict[str, float] | None = None


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def peak_mib(self) -> float:
        return statistics.median(s.peak_kib for s in self.samples) / 1024

    def as_json(self) -> dict:
        return {
            "median_wall_s": round(self.wall(), 4),
            "median_peak_mib": round(self.peak_mib(), 1),
            "wall_s": [round(s.wall, 4) for s in self.samples],
            "peak_mib": [round(s.peak_kib / 1024, 1) for s in self.samples],
        }


class CommandFailed(Exception):
    pass


def measure(argv: list[str], cwd: Path, exit_ok: Collection[int] = (0,)) -> tuple[Sample, str]:
    """Run ``argv`` as a fresh child; its wall time, its own peak RSS, and its stdout.

    An exit status outside ``exit_ok`` raises CommandFailed with the end of its stderr.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf8", "replace")
        stderr = err.read().decode("utf8", "replace")
    if proc.returncode not in exit_ok:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise CommandFailed(f"exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    return Sample(wall, int(usage.ru_maxrss)), stdout


def bilstm_timings(stdout: str) -> dict[str, float] | None:
    """The phase timings of a ``bilstm ... --json`` document, when it has them."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    timings = doc.get("timings") if isinstance(doc, dict) else None
    if not isinstance(timings, dict):
        return None
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}


def fmt_ratio(x: float) -> str:
    return f"{x:.1f}x"


def print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def versions() -> dict[str, str | None]:
    out = {}
    for dist in (
        "bilstm-cli",
        "keras",
        "tf-keras",
        "tensorflow-cpu",
        "tensorflow",
        "h5py",
        "numpy",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def source_state(root: Path) -> dict[str, object]:
    """The commit measured, and whether the tool's sources differ from it."""

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "bilstm_cli", "pyproject.toml")
    return {"commit": git("rev-parse", "HEAD"), "bilstm_cli_modified": bool(changed)}
