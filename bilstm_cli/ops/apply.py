"""The write pipeline shared by ``init`` and ``transplant``.

A command plans a list of :class:`Job` objects, one per weight dataset it changes. This module
stages the output, runs each job on the weight's current values (one dataset in memory at a
time), re-opens what it wrote and verifies it, and only then renames it into place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.concurrency import in_parallel
from bilstm_cli.errors import VerificationError
from bilstm_cli.formats import h5safe
from bilstm_cli.formats.compare import unchanged_except
from bilstm_cli.formats.reader import open_weights
from bilstm_cli.formats.staging import StagedWrite, check_output
from bilstm_cli.model import Layer, Model, Weight
from bilstm_cli.stats import weight_stats

Fact = tuple[str, bool, str]


@dataclass
class Part:
    """One changed piece of a weight: the whole weight or some of its gate blocks."""

    gates: tuple[str, ...] | None
    mask: np.ndarray | None  # columns of the last axis; None for the whole weight
    source: str


@dataclass
class Job:
    """How one weight dataset changes.

    ``build`` takes the current values and returns the new array (same shape and dtype);
    ``facts`` checks the re-read values after writing.
    """

    layer: Layer
    ref: Weight
    parts: list[Part]
    build: Callable[[np.ndarray], np.ndarray]
    facts: Callable[[np.ndarray], list[Fact]]


@dataclass
class Change:
    layer: str
    direction: str
    role: str
    gates: tuple[str, ...] | None
    source: str
    before: dict[str, Any]
    after: dict[str, Any]
    dataset: str


@dataclass
class Check:
    where: str
    name: str
    ok: bool
    detail: str


@dataclass
class WriteResult:
    command: str
    input: str
    output: str | None
    dry_run: bool
    verified: bool = False
    changes: list[Change] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Verifier:
    """Checks a command adds to the shared verification walk.

    ``begin`` is told where the staged file is, ``written`` is given each written dataset's
    values as the walk reads them back (so nothing is read twice), and ``checks`` then
    returns what was found. ``close`` always runs last.
    """

    def begin(self, staged_path: str) -> None:
        pass

    def written(self, dataset: str, values: np.ndarray) -> None:
        pass

    def checks(self) -> list[Check]:
        return []

    def close(self) -> None:
        pass


def where(job: Job, part: Part | None = None) -> str:
    gates = f"[{','.join(part.gates)}]" if part is not None and part.gates else ""
    return f"{job.layer.name}/{job.ref.direction}/{job.ref.role}{gates}"


# Below this many values a part's two statistics are taken one after the other.
_PARALLEL_STATS = 1 << 16


def _stats_pair(before: np.ndarray, after: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """``weight_stats`` of both arrays; for large ones, on two cores."""
    if before.size < _PARALLEL_STATS:
        return weight_stats(before), weight_stats(after)
    return in_parallel(lambda: weight_stats(before), lambda: weight_stats(after))


def _record(job: Job, before: np.ndarray, after: np.ndarray, result: WriteResult) -> None:
    for part in job.parts:
        b = before if part.mask is None else before[..., part.mask]
        a = after if part.mask is None else after[..., part.mask]
        before_stats, after_stats = _stats_pair(b, a)
        result.changes.append(
            Change(
                layer=job.layer.name,
                direction=job.ref.direction,
                role=job.ref.role,
                gates=part.gates,
                source=part.source,
                before=before_stats,
                after=after_stats,
                dataset=job.ref.location,
            )
        )


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - since)
        return now


def execute(
    model: Model,
    jobs: list[Job],
    result: WriteResult,
    output: str | None,
    force: bool,
    verifier: Verifier | None = None,
    verify_keras: bool = False,
) -> WriteResult:
    """Run ``jobs`` against ``model``: predict only (dry run) or write, verify and commit."""
    clock = _Clock(result.timings)
    if model.optimizer_groups and jobs:
        result.notes.append(
            f"the file holds optimizer state ({', '.join(model.optimizer_groups)}); it was kept "
            "as it was and is now stale for the changed weights"
        )
    if result.dry_run:
        with open_weights(model.path) as f:
            for job in jobs:
                t = time.perf_counter()
                current = h5safe.read(h5safe.dataset(f, job.ref.location), job.ref.location)
                t = clock.add("read", t)
                new = job.build(current)
                t = clock.add("generate", t)
                _record(job, current, new, result)
                clock.add("stats", t)
        return result

    assert output is not None
    out = check_output(model, output, force)
    result.output = output
    with StagedWrite(model, out, [job.ref.location for job in jobs]) as staged:
        for job in jobs:
            t = time.perf_counter()
            current = staged.read(job.ref.location)
            t = clock.add("read", t)
            new = job.build(current)
            t = clock.add("generate", t)
            staged.write(job.ref.location, new)
            t = clock.add("write", t)
            _record(job, current, new, result)
            del current, new  # keep one weight in memory at a time
            clock.add("stats", t)
        t = time.perf_counter()
        staged.finish()
        t = clock.add("write", t)
        _verify(model, staged, jobs, result, verifier or Verifier())
        if verify_keras:
            from bilstm_cli.ops.verify_keras import verify as keras_verify

            staged.seal()  # Keras reads the archive as it will be renamed, CRC included
            result.checks.extend(keras_verify(model, staged.staged_path))
        clock.add("verify", t)
        failed = [c for c in result.checks if not c.ok]
        if failed:
            first = failed[0]
            raise VerificationError(
                f"{output}: verification failed at {first.where}: {first.name} {first.detail}"
                f" ({len(failed)} check(s) failed); nothing was written"
            )
        staged.commit()
    result.verified = True
    return result


def _verify(
    model: Model,
    staged: StagedWrite,
    jobs: list[Job],
    result: WriteResult,
    verifier: Verifier,
) -> None:
    by_dataset = {job.ref.location: job for job in jobs}

    def check_facts(dataset: str, values: np.ndarray) -> None:
        job = by_dataset.get(dataset)
        if job is not None:
            for name, ok, detail in job.facts(values):
                result.checks.append(Check(where(job), name, ok, detail))
        verifier.written(dataset, values)

    # One walk over both files: everything else unchanged, each written weight as intended,
    # and each strategy's facts checked on the values as read back.
    try:
        verifier.begin(staged.staged_path)
        problems = unchanged_except(model, staged.staged_path, staged.written, check_facts)
        result.checks.insert(
            0,
            Check(
                "file",
                "everything else unchanged",
                not problems,
                "; ".join(problems)
                if problems
                else "other datasets, attributes and members as before",
            ),
        )
        result.checks.extend(verifier.checks())
    finally:
        verifier.close()
