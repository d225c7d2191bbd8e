"""The write pipeline shared by ``init`` and ``transplant``.

A command makes a :class:`Plan`: the model's layout, what it will say (notes, seed, pairs) and
how to make its :class:`Job` objects, one per weight it changes. :func:`apply` stages the
output, runs each job on the weight's current values (one weight in memory at a time), re-opens
what it wrote and verifies it, and only then renames it into place. ``Plan.preview()`` runs the
same jobs without writing (a dry run).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bilstm_cli import dtypes, formats
from bilstm_cli.concurrency import in_parallel
from bilstm_cli.errors import InputError, UsageError, VerifyError
from bilstm_cli.formats import Session
from bilstm_cli.formats.base import Stage
from bilstm_cli.model import Layer, Model, Weight
from bilstm_cli.ops import Progress
from bilstm_cli.results import FAILED, Change, Check, Fact, WriteResult
from bilstm_cli.stats import weight_stats


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
    ``facts`` checks the re-read values after writing. ``dtype_only``: ``build`` uses only
    the dtype of what it is given, and gives the same array each time for it.
    """

    layer: Layer
    ref: Weight
    parts: list[Part]
    build: Callable[[np.ndarray], np.ndarray]
    facts: Callable[[np.ndarray], list[Fact]]
    dtype_only: bool = False


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


# What a plan makes when it runs: its jobs, and the extra checks (if any) for verification.
MakeJobs = Callable[[contextlib.ExitStack, bool], tuple[list[Job], Verifier | None]]


def _stamp(path: str) -> tuple[object, ...]:
    """The state of every file a model at ``path`` is made of (shards and folders too)."""
    from bilstm_cli.formats import component_files

    stamps: list[object] = []
    for part in component_files(path):
        try:
            st = os.stat(part)
        except OSError:
            stamps.append((part,))
            continue
        stamps.append((part, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@dataclass
class Plan:
    """A change planned on a model file, not yet made.

    ``preview()`` predicts the result without writing (``--dry-run``); ``to_dict()`` is that
    prediction's JSON document; :func:`apply` writes it. A plan holds no open file: what it
    needs is opened when it runs, and a file changed since planning is refused.

    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["kernel=zeros"], seed=1)
    >>> plan.to_dict()["dry_run"], [c.after["max"] for c in plan.preview().changes]
    (True, [0.0, 0.0])
    """

    model: Model
    result: WriteResult
    make_jobs: MakeJobs
    session: Session = field(default_factory=Session)
    stamps: dict[str, tuple[object, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stamps:
            self.stamps = {p: _stamp(p) for p in self.inputs}

    @property
    def inputs(self) -> list[str]:
        donor = self.result.extra.get("donor")
        return [self.model.path] + ([donor] if isinstance(donor, str) else [])

    def _fresh(self, dry_run: bool, output: str | None) -> WriteResult:
        for path, stamp in self.stamps.items():
            if _stamp(path) != stamp:
                raise InputError(f"{path}: changed since the plan was made; plan again")
        return replace(
            self.result,
            output=output,
            dry_run=dry_run,
            changes=[],
            checks=[],
            notes=list(self.result.notes),
            timings={},
            extra=dict(self.result.extra),
        )

    def preview(self, output: str | None = None, progress: Progress | None = None) -> WriteResult:
        """What applying the plan would change, with predicted statistics; writes nothing.
        ``output`` is where it would be written (the document's ``output``)."""
        result = self._fresh(True, output)
        with contextlib.ExitStack() as stack:
            jobs, _ = self.make_jobs(stack, True)
            execute(self.model, jobs, result, None, False, self.session, progress=progress)
        return result

    def to_dict(self) -> dict[str, Any]:
        """The ``--dry-run --json`` document of this plan."""
        return self.preview().to_dict()


def apply(
    plan: Plan,
    output: str,
    force: bool = False,
    verify: str | None = None,
    progress: Progress | None = None,
) -> WriteResult:
    """Write ``plan`` to ``output``, verified; the input is never modified.

    ``output`` must not exist unless ``force``; ``verify="keras"`` also loads the result
    with Keras. Raises :class:`~bilstm_cli.errors.VerifyError` (nothing written) when a check
    fails, :class:`~bilstm_cli.errors.OutputError` when the output cannot be written.

    >>> import bilstm_cli as bl
    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["recurrent_kernel=orthogonal"], seed=7)
    >>> bl.apply(plan, "reinit.h5").verified
    True
    """
    if verify not in (None, "keras"):
        raise UsageError(f"verify must be None or 'keras', not {verify!r}")
    if verify == "keras":
        from bilstm_cli.ops.verify_keras import require

        require(plan.model)  # missing Keras is a usage error before anything is staged
    result = plan._fresh(False, output)
    with contextlib.ExitStack() as stack:
        jobs, verifier = plan.make_jobs(stack, False)
        return execute(
            plan.model,
            jobs,
            result,
            output,
            force,
            plan.session,
            verifier,
            verify == "keras",
            progress,
        )


def execute(
    model: Model,
    jobs: list[Job],
    result: WriteResult,
    output: str | None,
    force: bool,
    session: Session,
    verifier: Verifier | None = None,
    verify_keras: bool = False,
    progress: Progress | None = None,
) -> WriteResult:
    """Run ``jobs`` against ``model``: predict only (dry run) or write, verify and commit."""
    tell = progress or (lambda phase, done, total: None)
    clock = _Clock(result.timings)
    if any(job.ref.shape in model.optimizer_shapes for job in jobs):
        result.notes.append(
            f"the file holds optimizer state ({', '.join(model.optimizer_groups)}) with slots "
            "shaped like the changed weights; it was kept as it was and is now stale for them"
        )
    if result.dry_run:
        session.settle()  # nothing is copied: a check put off for the copy is made now
        reader = formats.open_reader(model.path, session)
        try:
            for k, job in enumerate(jobs):
                tell("predicting", k, len(jobs))
                t = time.perf_counter()
                current = reader.read(job.ref.location)
                t = clock.add("read", t)
                new = job.build(current)
                t = clock.add("generate", t)
                _record(job, current, new, result)
                clock.add("stats", t)
        finally:
            reader.close()
        return result

    assert output is not None
    writer = formats.writer_for(model)
    out = writer.check_output(model, output, force)
    result.output = output
    with writer.stage(model, out, [job.ref.location for job in jobs], session) as staged:
        for k, job in enumerate(jobs):
            tell("writing", k, len(jobs))
            t = time.perf_counter()
            current, new = _current_and_new(job, staged, clock, t)
            t = time.perf_counter()
            staged.write(job.ref.location, new)
            t = clock.add("write", t)
            _record(job, current, new, result)
            del current, new  # keep one weight in memory at a time
            clock.add("stats", t)
        tell("writing", len(jobs), len(jobs))
        t = time.perf_counter()
        staged.finish()
        t = clock.add("write", t)
        tell("verifying", 0, 1)
        _verify(model, staged, jobs, result, verifier or Verifier(), session)
        if verify_keras:
            from bilstm_cli.ops.verify_keras import verify as keras_verify

            staged.seal()  # Keras reads the archive as it will be renamed, CRC included
            result.checks.extend(keras_verify(model, staged.staged_path, session))
        clock.add("verify", t)
        tell("verifying", 1, 1)
        failed = [c for c in result.checks if c.status == FAILED]
        if failed:
            first = failed[0]
            raise VerifyError(
                f"{output}: verification failed at {first.where}: {first.name} {first.detail}"
                f" ({len(failed)} check(s) failed); nothing was written"
            )
        staged.commit()
    # Verified only when every check that applies ran and passed: a skipped one that applies
    # (a forward pass with an activation the reference does not know) leaves it unverified.
    result.verified = all(c.ok or not c.applies for c in result.checks)
    return result


def _current_and_new(
    job: Job, staged: Stage, clock: _Clock, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """A weight's current values and its new ones. When the new ones depend only on the
    dtype, they are made first and the current ones read after: the two are then not held
    while the new ones are made, which is when a command needs the most memory (the
    factorizations of an orthogonal recipe, on each core)."""
    if job.dtype_only:
        expected = np.empty(0, dtypes.memory_dtype(job.ref.dtype))
        new = job.build(expected)
        t = clock.add("generate", t)
        current = staged.read(job.ref.location)
        clock.add("read", t)
        if dtypes.storage(current) == dtypes.storage(expected) and current.dtype == new.dtype:
            return current, new
        t = time.perf_counter()  # the layout named another dtype than the one read
    else:
        current = staged.read(job.ref.location)
        t = clock.add("read", t)
    new = job.build(current)
    clock.add("generate", t)
    return current, new


def _verify(
    model: Model,
    staged: Stage,
    jobs: list[Job],
    result: WriteResult,
    verifier: Verifier,
    session: Session,
) -> None:
    by_dataset = {job.ref.location: job for job in jobs}

    def check_facts(dataset: str, values: np.ndarray) -> None:
        job = by_dataset.get(dataset)
        if job is not None:
            for fact in job.facts(values):
                result.checks.append(Check.of(where(job), *fact))
        verifier.written(dataset, values)

    # One walk over both files: everything else unchanged, each written weight as intended,
    # and each strategy's facts checked on the values as read back.
    try:
        verifier.begin(staged.staged_path)
        writer = formats.writer_for(model)
        found = writer.unchanged_except(
            model, staged.staged_path, staged.written, check_facts, session
        )
        written = len(staged.written)
        result.checks[:0] = [
            Check.of(
                "file",
                "written weights read back",
                not found.not_as_written,
                "; ".join(found.not_as_written)
                or f"{found.read_back} of {written} bit for bit as intended",
                written,
            ),
            Check.of(
                "file",
                "everything else unchanged",
                not found.unchanged,
                "; ".join(found.unchanged) or "other datasets, attributes and members as before",
            ),
        ]
        result.checks.extend(verifier.checks())
    finally:
        verifier.close()
