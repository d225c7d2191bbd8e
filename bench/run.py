"""Time `bilstm` against the Keras way on a generated 57 MiB model, in one run.

    python bench/run.py [--rounds 3] [--warmup 1] [--jobs init,transplant] [--out-dir bench/out]

The baseline is keras_way.py (load_model, get_weights/set_weights, model.save), taken
from $BILSTM_KERAS_WAY or else ../shared/bench/keras_way.py beside the repository root.
The models come from bench/make_model.py (three Bidirectional(LSTM(512)) layers, about
15 M weights) and are generated into the output directory when missing.

Every measurement is a fresh subprocess. Within a round the two ways alternate
(bilstm, keras, bilstm, keras, ...), so both see the same machine state; rounds are
repeated and medians compared. For each child the wall time is taken with
time.perf_counter() around start and reaping, and the peak memory is that child's own
maximum resident set size, from os.wait4() on its pid (Linux carries the spawning
process's resident size over exec, so this runner's own ~20 MiB is a floor under every
peak; it is the same for both sides). An untimed warm-up round first
runs every command once so that neither side pays for a cold page cache alone.

Prints one row per job (medians, ratios keras / bilstm, targets) and how bilstm's `init`
time splits into its own phases and start-up; writes OUT_DIR/results.json. Exit status:
0 every target met, 1 a target missed or a command failed, 2 the baseline script is
missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out"
DEFAULT_KERAS_WAY = ROOT.parent / "shared" / "bench" / "keras_way.py"
MAKE_MODEL = ROOT / "bench" / "make_model.py"

MODEL = "bench3x512.keras"
MODEL_H5 = "bench3x512.h5"
DONOR = "bench3x512_donor.keras"
MODEL_FILES = (MODEL, MODEL_H5, DONOR)

PHASES = ("read", "generate", "write", "stats", "verify")
INIT_SPEC = ["--init", "truncated_normal:stddev=0.05", "--seed", "0", "--force", "--json"]


@dataclass
class Job:
    name: str
    bilstm: list[str]  # arguments after the bilstm executable
    keras: list[str]  # arguments after keras_way.py
    outputs: tuple[str, str] | tuple[()]  # the file each side writes: (bilstm's, keras')
    speed_target: float
    memory_target: float


JOBS = [
    Job("inspect .keras", ["inspect", MODEL, "--json"], ["inspect", MODEL], (), 10.0, 5.0),
    Job(
        "init .keras",
        ["init", MODEL, "-o", "X.keras", *INIT_SPEC],
        ["init", MODEL, "Y.keras"],
        ("X.keras", "Y.keras"),
        8.0,
        8.0,
    ),
    Job(
        "transplant .keras",
        ["transplant", DONOR, MODEL, "-o", "Z.keras", "--force", "--json"],
        ["transplant", DONOR, MODEL, "W.keras"],
        ("Z.keras", "W.keras"),
        10.0,
        8.0,
    ),
    Job("inspect .h5", ["inspect", MODEL_H5, "--json"], ["inspect", MODEL_H5], (), 10.0, 5.0),
    Job(
        "init .h5",
        ["init", MODEL_H5, "-o", "X.h5", *INIT_SPEC],
        ["init", MODEL_H5, "Y.h5"],
        ("X.h5", "Y.h5"),
        8.0,
        8.0,
    ),
]
JOB_KEYS = {
    "inspect": ("inspect .keras",),
    "init": ("init .keras",),
    "transplant": ("transplant .keras",),
    "h5": ("inspect .h5", "init .h5"),
}


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


def measure(argv: list[str], cwd: Path) -> tuple[Sample, str]:
    """Run ``argv`` as a fresh child; its wall time, its own peak RSS, and its stdout."""
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
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise CommandFailed(f"exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    return Sample(wall, int(usage.ru_maxrss)), stdout


def bilstm_timings(stdout: str) -> dict[str, float] | None:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    timings = doc.get("timings") if isinstance(doc, dict) else None
    if not isinstance(timings, dict):
        return None
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}


def find_bilstm() -> list[str]:
    beside = Path(sys.executable).parent / "bilstm"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("bilstm")
    if found:
        return [found]
    return [sys.executable, "-m", "bilstm_cli"]


def ensure_models(out_dir: Path) -> None:
    if all((out_dir / name).exists() for name in MODEL_FILES):
        return
    print(f"generating the benchmark models in {out_dir} (bench/make_model.py) ...", flush=True)
    subprocess.run([sys.executable, str(MAKE_MODEL), str(out_dir)], check=True)


def make_work_dir(out_dir: Path) -> Path:
    """A private directory for this run's outputs, with links to the models, so that the
    commands name the files as a user would and concurrent runs never share an output."""
    work = Path(tempfile.mkdtemp(prefix="run-", dir=out_dir))
    for name in MODEL_FILES:
        (work / name).symlink_to(out_dir / name)
    return work


def run_pair(job: Job, bilstm: list[str], keras: list[str], work: Path):
    """One bilstm run, then one keras run, each checked for its output file."""
    samples = []
    outputs = job.outputs or (None, None)
    sides = (("bilstm", bilstm + job.bilstm, outputs[0]), ("keras", keras + job.keras, outputs[1]))
    for side, argv, output in sides:
        expected = [output] if output else []
        for name in expected:
            (work / name).unlink(missing_ok=True)
        sample, stdout = measure(argv, work)
        for name in expected:
            if not (work / name).is_file():
                raise CommandFailed(f"{' '.join(argv)} exited 0 but wrote no {name}")
        if side == "bilstm":
            sample.timings = bilstm_timings(stdout)
        samples.append(sample)
    return samples


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
    for dist in ("bilstm-cli", "keras", "tensorflow-cpu", "tensorflow", "h5py", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def source_state() -> dict[str, object]:
    """The commit measured, and whether the tool's sources differ from it."""

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "bilstm_cli", "pyproject.toml")
    return {"commit": git("rev-parse", "HEAD"), "bilstm_cli_modified": bool(changed)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Time bilstm against the Keras way (see the module docstring)."
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--jobs",
        default=",".join(JOB_KEYS),
        help=f"comma-separated subset of {','.join(JOB_KEYS)} (default: all)",
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="default bench/out")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    wanted = [k.strip() for k in args.jobs.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in JOB_KEYS]
    if unknown or not wanted:
        parser.error(f"--jobs: choose from {', '.join(JOB_KEYS)}")
    names = {n for k in wanted for n in JOB_KEYS[k]}
    jobs = [j for j in JOBS if j.name in names]

    keras_way = Path(os.environ.get("BILSTM_KERAS_WAY") or DEFAULT_KERAS_WAY).resolve()
    if not keras_way.is_file():
        print(
            f"bench: the baseline script {keras_way} does not exist; set BILSTM_KERAS_WAY "
            "to the path of keras_way.py",
            file=sys.stderr,
        )
        return 2

    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(out_dir)
    work = make_work_dir(out_dir)  # the commands name the models relative to it

    bilstm = find_bilstm()
    keras = [sys.executable, str(keras_way)]
    help_argv = bilstm + ["--help"]
    python_argv = [sys.executable, "-c", "pass"]
    print(f"bilstm: {' '.join(bilstm)}")
    print(f"keras way: {' '.join(keras)}")
    print(f"models: {out_dir}; rounds: {args.rounds} (after {args.warmup} warm-up)")
    state = source_state()
    dirty = " (bilstm_cli has uncommitted changes)" if state["bilstm_cli_modified"] else ""
    print(f"commit: {state['commit']}{dirty}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)

    series = {(j.name, side): Series() for j in jobs for side in ("bilstm", "keras")}
    floors = {"bilstm --help": Series(), "python -c pass": Series()}
    try:
        for r in range(-args.warmup, args.rounds):
            label = f"warm-up {r + args.warmup + 1}" if r < 0 else f"round {r + 1}/{args.rounds}"
            for floor, fargv in (("bilstm --help", help_argv), ("python -c pass", python_argv)):
                sample, _ = measure(fargv, work)
                if r >= 0:
                    floors[floor].samples.append(sample)
            for job in jobs:
                b, k = run_pair(job, bilstm, keras, work)
                print(
                    f"  {label:>12}  {job.name:<18} bilstm {b.wall:6.2f} s {b.peak_kib / 1024:7.1f}"
                    f" MiB   keras {k.wall:6.2f} s {k.peak_kib / 1024:7.1f} MiB",
                    flush=True,
                )
                if r >= 0:
                    series[(job.name, "bilstm")].samples.append(b)
                    series[(job.name, "keras")].samples.append(k)
    except CommandFailed as exc:
        print(f"bench: a command failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    results = []
    failed = []
    for job in jobs:
        b, k = series[(job.name, "bilstm")], series[(job.name, "keras")]
        speed = k.wall() / b.wall()
        memory = k.peak_mib() / b.peak_mib()
        ok = speed >= job.speed_target and memory >= job.memory_target
        if not ok:
            failed.append(job.name)
        rows.append(
            [
                job.name,
                f"{b.wall():.3f}",
                f"{k.wall():.3f}",
                fmt_ratio(speed),
                f"{b.peak_mib():.1f}",
                f"{k.peak_mib():.1f}",
                fmt_ratio(memory),
                f">={job.speed_target:g}x / >={job.memory_target:g}x",
                "PASS" if ok else "FAIL",
            ]
        )
        results.append(
            {
                "job": job.name,
                "bilstm_command": ["bilstm", *job.bilstm],
                "keras_command": ["python", "keras_way.py", *job.keras],
                "bilstm": series[(job.name, "bilstm")].as_json(),
                "keras": series[(job.name, "keras")].as_json(),
                "speed_ratio": round(speed, 2),
                "memory_ratio": round(memory, 2),
                "speed_target": job.speed_target,
                "memory_target": job.memory_target,
                "speed_ok": speed >= job.speed_target,
                "memory_ok": memory >= job.memory_target,
                "pass": ok,
            }
        )

    print()
    print_table(
        [
            "job",
            "bilstm s",
            "keras s",
            "speed",
            "bilstm MiB",
            "keras MiB",
            "memory",
            "target",
            "result",
        ],
        rows,
        right={1, 2, 3, 4, 5, 6},
    )

    # Where bilstm's time goes: its own phase timings, and the rest (interpreter, imports,
    # argument parsing, output) as start-up.
    help_wall = floors["bilstm --help"].wall()
    python_wall = floors["python -c pass"].wall()
    split_rows = []
    splits = {}
    for job in jobs:
        samples = series[(job.name, "bilstm")].samples
        if not all(s.timings for s in samples):
            continue
        phases = {p: statistics.median(s.timings.get(p, 0.0) for s in samples) for p in PHASES}
        startup = statistics.median(
            s.wall - sum(s.timings.get(p, 0.0) for p in PHASES) for s in samples
        )
        wall = series[(job.name, "bilstm")].wall()
        splits[job.name] = {
            "wall_s": round(wall, 4),
            **{f"{p}_s": round(v, 4) for p, v in phases.items()},
            "startup_s": round(startup, 4),
        }
        split_rows.append(
            [job.name, f"{wall:.3f}", *(f"{phases[p]:.3f}" for p in PHASES), f"{startup:.3f}"]
        )
    if split_rows:
        print()
        print(
            "bilstm time split (medians, seconds): the phases from its --json 'timings'; "
            "start-up = wall - their sum\n(interpreter, imports, reading the layout, staging "
            "the copy, renaming, output, exit)"
        )
        print_table(["job", "wall", *PHASES, "start-up"], split_rows, right=set(range(1, 8)))
    print()
    print(
        f"start-up floor: bilstm --help {help_wall:.3f} s "
        f"({floors['bilstm --help'].peak_mib():.1f} MiB); "
        f"python -c pass {python_wall:.3f} s ({floors['python -c pass'].peak_mib():.1f} MiB)"
    )

    doc = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        },
        "source": state,
        "versions": versions(),
        "keras_way": str(keras_way),
        "model_sizes": {n: (out_dir / n).stat().st_size for n in MODEL_FILES},
        "jobs": results,
        "bilstm_time_split": splits,
        "startup": {name: s.as_json() for name, s in floors.items()},
        "failed": failed,
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    if failed:
        print(f"bench: target missed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
