"""Long fuzzing run: thousands of damaged fixture files through ``inspect``, ``init``, ``diff``
and ``transplant``. Every mutator registered in ``tests/fuzzing.py`` (``register_mutator``;
a format adds its own and its fixtures through ``FIXTURE_SOURCES``) takes part.

    python bench/fuzz.py [--cases 4000] [--seed 7] [--workers N] [--timeout 30]
    python bench/fuzz.py --replay flip:k2_seq_lstm.h5:262      # one case, in detail

Cases run in worker processes, several at a time; a case that does not finish in time or
kills its worker (a crash in native code) is reported and the worker replaced. Each worker
runs with an address-space limit, so a file that makes the tool allocate without bound
shows up as a failure instead of exhausting the machine. Prints cases per mutation kind,
the exit codes seen, and every failure with the command that replays it; exits 1 if any.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing  # noqa: E402

MEMORY_LIMIT = 3 * 1024**3


def _worker(conn: Connection, workdir: str, timeout: float) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):
        pass
    while True:
        case = conn.recv()
        if case is None:
            return
        report = fuzzing.check_case(case, Path(workdir), timeout=timeout)
        conn.send(report)


class Slot:
    """One worker process and the case it is running."""

    def __init__(self, ctx: mp.context.BaseContext, workdir: str, timeout: float) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, workdir, timeout), daemon=True)
        self.process.start()
        child.close()
        self.case: fuzzing.Case | None = None
        self.started = 0.0

    def give(self, case: fuzzing.Case) -> None:
        self.case = case
        self.started = time.monotonic()
        self.conn.send(case)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def run(cases: list[fuzzing.Case], workers: int, timeout: float) -> list[fuzzing.Report]:
    ctx = mp.get_context("spawn")
    reports: list[fuzzing.Report] = []
    queue = list(reversed(cases))
    hard_limit = 3 * timeout + 10  # the in-process alarm fires first unless native code hangs
    with tempfile.TemporaryDirectory(prefix="bilstm-fuzz-") as workdir:
        slots = [Slot(ctx, workdir, timeout) for _ in range(max(1, workers))]
        for slot in slots:
            if queue:
                slot.give(queue.pop())
        busy = [s for s in slots if s.case is not None]
        last = time.monotonic()
        while busy:
            ready = wait([s.conn for s in busy], timeout=1.0)
            now = time.monotonic()
            for i, slot in enumerate(slots):
                if slot.case is None:
                    continue
                report = None
                if slot.conn in ready:
                    try:
                        report = slot.conn.recv()
                    except (EOFError, OSError):
                        slot.process.join()
                        report = fuzzing.Report(slot.case, problems=[
                            f"worker died (exit {slot.process.exitcode})"
                        ])
                elif now - slot.started > hard_limit:
                    slot.process.kill()
                    slot.process.join()
                    report = fuzzing.Report(slot.case, problems=[
                        f"no answer after {hard_limit:g} s (hang in native code?)"
                    ])
                if report is None:
                    continue
                reports.append(report)
                if not slot.process.is_alive():
                    slots[i] = slot = Slot(ctx, workdir, timeout)
                slot.case = None
                if queue:
                    slot.give(queue.pop())
            busy = [s for s in slots if s.case is not None]
            if now - last > 10:
                last = now
                print(f"  {len(reports)}/{len(cases)} cases", file=sys.stderr, flush=True)
        for slot in slots:
            slot.stop()
    return reports


def summary(reports: list[fuzzing.Report], elapsed: float) -> int:
    per_kind: collections.Counter[str] = collections.Counter()
    skipped: collections.Counter[str] = collections.Counter()
    codes: dict[str, collections.Counter[int | None]] = collections.defaultdict(
        collections.Counter
    )
    failures = []
    for r in reports:
        per_kind[r.case.kind] += 1
        if r.note.startswith("mutation skipped"):
            skipped[r.case.kind] += 1
        for command in fuzzing.COMMANDS:
            if command in r.codes:
                codes[command][r.codes[command]] += 1
        if r.problems:
            failures.append(r)
    print(f"{len(reports)} cases in {elapsed:.1f} s")
    print("cases per mutation kind:")
    for kind in tuple(fuzzing.MUTATORS):
        extra = f" ({skipped[kind]} mutations could not be made)" if skipped[kind] else ""
        print(f"  {kind:<9} {per_kind[kind]:>6}{extra}")
    print("exit codes:")
    for command, counter in codes.items():
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(counter.items()))
        print(f"  {command:<8} {shown}")
    print(f"failures: {len(failures)}")
    for r in failures:
        print(f"  {r.case}  [{r.note}]")
        for problem in r.problems:
            print(f"      {problem}")
        print(f"      replay: python bench/fuzz.py --replay {r.case}")
    return 1 if failures else 0


def replay(spec: str, timeout: float) -> int:
    kind, fixture, seed = spec.split(":")
    case = fuzzing.Case(fixture, kind, int(seed))
    with tempfile.TemporaryDirectory() as tmp:
        mutant, note = fuzzing.make_mutant(case, Path(tmp))
        intact = fuzzing.FIXTURES / fixture
        print(f"{case}: {note}")
        out = Path(tmp) / "out"
        out.mkdir()
        for args in (
            ("inspect", mutant, "--json"),
            ("init", mutant, "-o", out / f"out{fuzzing.suffix_of(mutant)}", "--init", "zeros",
             "--seed", "1"),
            ("diff", mutant, intact),
            ("transplant", mutant, intact, "-o", out / f"t{fuzzing.suffix_of(intact)}"),
        ):
            outcome = fuzzing.run_main(*args, timeout=timeout)
            print(f"$ bilstm {' '.join(str(a) for a in args)}\n  exit {outcome.code}")
            if outcome.stderr:
                print("  stderr: " + outcome.stderr.rstrip())
    with tempfile.TemporaryDirectory() as tmp:
        report = fuzzing.check_case(case, Path(tmp), timeout=timeout)
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    return 1 if report.problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per command")
    parser.add_argument("--kind", action="append", choices=tuple(fuzzing.MUTATORS))
    parser.add_argument("--replay", metavar="KIND:FIXTURE:SEED")
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args.timeout)
    cases = fuzzing.cases(args.cases, args.seed)
    if args.kind:
        cases = [c for c in cases if c.kind in args.kind]
    print(f"fuzzing: {len(cases)} cases, seed {args.seed}, {args.workers} workers", flush=True)
    start = time.monotonic()
    reports = run(cases, args.workers, args.timeout)
    return summary(reports, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
