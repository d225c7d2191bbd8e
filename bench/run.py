"""Time `bilstm` against the Keras way on a generated 57 MiB model, in one run.

    python bench/run.py [--rounds 3] [--warmup 1] [--jobs init,recipe] [--out-dir bench/out]

The baseline is bench/keras_way.py, beside this file: the same jobs done through the Keras
API (load_model, get_weights/set_weights, model.save). The models come from
bench/make_model.py (three Bidirectional(LSTM(512)) layers, about 15 M weights) and are
generated into the output directory when missing.

Jobs: inspect, init (truncated normal), init with the recipe (glorot_uniform kernels,
orthogonal recurrent kernels, zero biases, forget-gate biases one), transplant and diff on
the .keras model, and inspect and init on the .h5 one; and ``check`` against ``inspect
--gates`` on the .keras model, bilstm against itself (bench/ratio.py). Within a round the
two ways alternate (bilstm, keras, bilstm, keras, ...), so both see the same machine state;
rounds are repeated and medians compared (wall time, and each child's peak RSS from
os.wait4, see bench/measure.py). An untimed warm-up round first runs every command once so
that neither side pays for a cold page cache alone.

Beside them, jobs held to absolute bounds rather than to the Keras way: on a ~2 GB model
(bench/make_large.py: a 1M x 500 embedding beside two Bidirectional(LSTM(1024))), inspect
within 0.3 s and init within 2.5x of copying the file with fsync, both under 300 MiB; and
what each extra file costs in one multi-file inspect call (at most 10 ms). Floors timed in
the same rounds: bilstm --help (at most 0.15 s), python -c pass, the bare imports, the copy.

Prints one row per job (medians, ratios keras / bilstm, targets, met or MISSED), how
bilstm's time splits into its own phases and start-up, and the start-up floors; writes
OUT_DIR/results.json, and after a full run (every job, sources committed) the summary in
bench/results.md, which is committed so that a regression shows in review.
A missed target is reported, not failed: the exit status is 0 when
every command ran, 1 when one failed (an unexpected exit status or a missing output).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import (
    CommandFailed,
    Sample,
    Series,
    bilstm_timings,
    fmt_ratio,
    measure,
    print_table,
    source_state,
    versions,
)
from ratio import RATIO_JOBS, report_ratios, run_ratio

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out"
KERAS_WAY = ROOT / "bench" / "keras_way.py"
MAKE_MODEL = ROOT / "bench" / "make_model.py"

MAKE_LARGE = ROOT / "bench" / "make_large.py"
RESULTS_MD = ROOT / "bench" / "results.md"  # committed: the last full run, for review
MANY_SOURCE = ROOT / "fixtures" / "k3_seq_input_lstm_concat.keras"

MODEL = "bench3x512.keras"
MODEL_H5 = "bench3x512.h5"
DONOR = "bench3x512_donor.keras"
PTH = "bench3x512.pth"
MODEL_FILES = (MODEL, MODEL_H5, DONOR, PTH)
MAKE_PTH = ROOT / "bench" / "make_pth.py"
LARGE = "big1m.keras"  # ~2 GB: a 1M x 500 embedding beside two Bidirectional(LSTM(1024))
TWIN = "big1k.keras"  # the same two LSTM layers beside a 1,000-row embedding (~150 MB)
MANY = 10  # extra files in the one multi-file inspect call

PHASES = ("read", "generate", "write", "stats", "verify")
INIT_SPEC = ["--init", "truncated_normal:stddev=0.05", "--seed", "0", "--force", "--json"]
RECIPE_SPEC = [
    *("--init", "kernel=glorot_uniform", "--init", "recurrent_kernel=orthogonal"),
    *("--init", "bias=zeros", "--init", "bias[f]=ones"),
    *("--seed", "0", "--force", "--json"),
]


@dataclass
class Job:
    name: str
    bilstm: list[str]  # arguments after the bilstm executable
    keras: list[str]  # arguments after keras_way.py
    outputs: tuple[str, str] | tuple[()]  # the file each side writes: (bilstm's, keras')
    speed_target: float
    memory_target: float
    exit_ok: tuple[int, ...] = (0,)  # the exit statuses that mean the command worked


JOBS = [
    Job("inspect .keras", ["inspect", MODEL, "--json"], ["inspect", MODEL], (), 14.0, 10.0),
    Job(
        "init .keras",
        ["init", MODEL, "-o", "X.keras", *INIT_SPEC],
        ["init", MODEL, "Y.keras"],
        ("X.keras", "Y.keras"),
        12.0,
        10.0,
    ),
    Job(
        "init recipe .keras",
        ["init", MODEL, "-o", "R.keras", *RECIPE_SPEC],
        ["recipe", MODEL, "S.keras"],
        ("R.keras", "S.keras"),
        8.0,
        10.0,
    ),
    Job(
        "transplant .keras",
        ["transplant", DONOR, MODEL, "-o", "Z.keras", "--force", "--json"],
        ["transplant", DONOR, MODEL, "W.keras"],
        ("Z.keras", "W.keras"),
        20.0,
        10.0,
    ),
    # The two files differ, so both sides exit 1 ("different"); 0 would do as well.
    Job(
        "diff .keras",
        ["diff", MODEL, DONOR, "--json"],
        ["diff", MODEL, DONOR],
        (),
        20.0,
        10.0,
        (0, 1),
    ),
    Job("inspect .h5", ["inspect", MODEL_H5, "--json"], ["inspect", MODEL_H5], (), 14.0, 10.0),
    Job(
        "init .h5",
        ["init", MODEL_H5, "-o", "X.h5", *INIT_SPEC],
        ["init", MODEL_H5, "Y.h5"],
        ("X.h5", "Y.h5"),
        12.0,
        10.0,
    ),
]


@dataclass
class Floor:
    """A command timed beside the jobs as a floor: what no tool could beat."""

    name: str
    argv: list[str]  # "{python}" stands for this interpreter, "{bilstm}" for the tool
    large: bool = False  # needs the large model


FLOORS = [
    Floor("bilstm --help", ["{bilstm}", "--help"]),
    Floor("python -c pass", ["{python}", "-c", "pass"]),
    Floor("bare imports", ["{python}", "-c", "import numpy, h5py, click, rich"]),
    Floor(
        f"copy {LARGE} with fsync",
        [
            "{python}",
            "-c",
            "import os, shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2]); "
            "fd = os.open(sys.argv[2], os.O_RDONLY); os.fsync(fd); os.close(fd); "
            "os.remove(sys.argv[2])",
            LARGE,
            "copy.keras",
        ],
        large=True,
    ),
]


@dataclass
class Bound:
    """A job on its own against absolute bounds (no Keras way beside it): a wall time in
    seconds, or a multiple of a floor's wall time, and a peak memory in MiB."""

    name: str
    bilstm: list[str]  # "{many}" expands to the extra files of the multi-file call
    output: str | None
    max_wall: float | None = None
    floor: str | None = None  # the floor whose time max_floor multiplies
    max_floor: float | None = None
    max_peak_mib: float | None = None


BOUNDS = [
    Bound("inspect 2 GB .keras", ["inspect", LARGE, "--json"], None, 0.3, None, None, 300),
    # Its twin: the same layers in a 150 MB file. Equal times mean the rest is not read.
    Bound("inspect 150 MB twin", ["inspect", TWIN, "--json"], None),
    Bound(
        "init 2 GB .keras",
        ["init", LARGE, "-o", "B.keras", *INIT_SPEC],
        "B.keras",
        None,
        f"copy {LARGE} with fsync",
        2.5,
        300,
    ),
    Bound("inspect 1 small file", ["inspect", "many_0.keras", "--json"], None),
    Bound(f"inspect {MANY + 1} small files", ["inspect", "many_0.keras", "{many}", "--json"], None),
]
# What one extra file in one multi-file call costs, from the two rows above.
PER_FILE = (f"inspect {MANY + 1} small files", "inspect 1 small file", MANY, 0.010)

JOB_KEYS = {
    "inspect": ("inspect .keras",),
    "init": ("init .keras",),
    "recipe": ("init recipe .keras",),
    "transplant": ("transplant .keras",),
    "diff": ("diff .keras",),
    "h5": ("inspect .h5", "init .h5"),
    # bilstm against itself (bench/ratio.py): check over inspect --gates.
    "check": ("check .keras",),
    # bilstm against itself: the same weights read from a .pth and from the .h5.
    "pth": ("inspect .pth",),
    "large": ("inspect 2 GB .keras", "inspect 150 MB twin", "init 2 GB .keras"),
    "many": ("inspect 1 small file", f"inspect {MANY + 1} small files"),
}


def find_bilstm() -> list[str]:
    beside = Path(sys.executable).parent / "bilstm"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("bilstm")
    if found:
        return [found]
    return [sys.executable, "-m", "bilstm_cli"]


def ensure_models(out_dir: Path, large: bool) -> None:
    if not all((out_dir / name).exists() for name in MODEL_FILES):
        print(f"generating the benchmark models in {out_dir} (bench/make_model.py) ...", flush=True)
        subprocess.run([sys.executable, str(MAKE_MODEL), str(out_dir)], check=True)
        subprocess.run([sys.executable, str(MAKE_PTH), str(out_dir)], check=True)
    if large and not all((out_dir / n).exists() for n in (LARGE, TWIN)):
        print(f"generating {LARGE} in {out_dir} (bench/make_large.py) ...", flush=True)
        subprocess.run([sys.executable, str(MAKE_LARGE), str(out_dir)], check=True)


def make_work_dir(out_dir: Path, large: bool) -> Path:
    """A private directory for this run's outputs, with links to the models, so that the
    commands name the files as a user would and concurrent runs never share an output.
    The small files of the multi-file call are real copies: distinct files, as a user has."""
    work = Path(tempfile.mkdtemp(prefix="run-", dir=out_dir))
    for name in MODEL_FILES + ((LARGE, TWIN) if large else ()):
        (work / name).symlink_to(out_dir / name)
    for k in range(MANY + 1):
        shutil.copyfile(MANY_SOURCE, work / f"many_{k}.keras")
    return work


def expand(argv: list[str], bilstm: list[str]) -> list[str]:
    out: list[str] = []
    for a in argv:
        if a == "{bilstm}":
            out += bilstm
        elif a == "{python}":
            out.append(sys.executable)
        elif a == "{many}":
            out += [f"many_{k}.keras" for k in range(1, MANY + 1)]
        else:
            out.append(a)
    return out


def run_bound(bound: Bound, bilstm: list[str], work: Path) -> Sample:
    if bound.output:
        (work / bound.output).unlink(missing_ok=True)
    sample, stdout = measure(bilstm + expand(bound.bilstm, bilstm), work)
    if bound.output and not (work / bound.output).is_file():
        raise CommandFailed(f"bilstm {' '.join(bound.bilstm)} exited 0 but wrote no {bound.output}")
    if bound.output:
        (work / bound.output).unlink()  # 2 GB each: do not keep them
    sample.timings = bilstm_timings(stdout)
    return sample


def report_bounds(
    bounds: list[Bound], series: dict[str, Series], floors: dict[str, Series]
) -> tuple[list[dict], list[str]]:
    """Print the jobs held to absolute bounds and the cost of an extra file; their results
    and the misses."""
    rows, results, missed = [], [], []
    for b in bounds:
        s = series[b.name]
        limits, short = [], []
        if b.max_wall is not None:
            limits.append(f"<={b.max_wall:g} s")
            if s.wall() > b.max_wall:
                short.append("time")
        ratio = None
        if b.floor is not None and b.max_floor is not None:
            ratio = s.wall() / floors[b.floor].wall()
            limits.append(f"<={b.max_floor:g}x floor")
            if ratio > b.max_floor:
                short.append("time")
        if b.max_peak_mib is not None:
            limits.append(f"<={b.max_peak_mib:g} MiB")
            if s.peak_mib() > b.max_peak_mib:
                short.append("memory")
        if short:
            missed.append(f"{b.name}: {' & '.join(short)} ({', '.join(limits)})")
        rows.append(
            [
                b.name,
                f"{s.wall():.3f}",
                f"{s.peak_mib():.1f}",
                "" if ratio is None else fmt_ratio(ratio),
                ", ".join(limits) or "-",
                ("MISSED " + " & ".join(short) if short else "met") if limits else "-",
            ]
        )
        results.append(
            {
                "job": b.name,
                "bilstm_command": ["bilstm", *b.bilstm],
                "bilstm": s.as_json(),
                "floor": b.floor,
                "floor_ratio": None if ratio is None else round(ratio, 2),
                "limits": limits,
                "met": not short,
            }
        )
    many, one, count, limit = PER_FILE
    per_file = None
    if many in series and one in series:
        per_file = (series[many].wall() - series[one].wall()) / count
        ok = per_file <= limit
        if not ok:
            missed.append(f"extra file in one inspect call: {per_file * 1000:.1f} ms > 10 ms")
        rows.append(
            [
                "each extra file",
                f"{per_file:.4f}",
                "",
                "",
                f"<={limit * 1000:g} ms",
                "met" if ok else "MISSED time",
            ]
        )
        results.append({"job": "each extra file", "wall_s": round(per_file, 5), "met": ok})
    if rows:
        print()
        print_table(
            ["bounded job", "bilstm s", "bilstm MiB", "vs floor", "bound", "result"],
            rows,
            right={1, 2, 3},
        )
    return results, missed


def run_pair(job: Job, bilstm: list[str], keras: list[str], work: Path) -> list[Sample]:
    """One bilstm run, then one keras run, each checked for its output file."""
    samples = []
    outputs = job.outputs or (None, None)
    sides = (("bilstm", bilstm + job.bilstm, outputs[0]), ("keras", keras + job.keras, outputs[1]))
    for side, argv, output in sides:
        if output:
            (work / output).unlink(missing_ok=True)
        sample, stdout = measure(argv, work, job.exit_ok)
        if output and not (work / output).is_file():
            raise CommandFailed(f"{' '.join(argv)} exited 0 but wrote no {output}")
        if side == "bilstm":
            sample.timings = bilstm_timings(stdout)
        samples.append(sample)
    return samples


def report(jobs: list[Job], series: dict[tuple[str, str], Series]) -> tuple[list[dict], list[str]]:
    """Print the table of medians, ratios and targets; the jobs' results and the misses."""
    rows, results, missed = [], [], []
    for job in jobs:
        b, k = series[(job.name, "bilstm")], series[(job.name, "keras")]
        speed = k.wall() / b.wall()
        memory = k.peak_mib() / b.peak_mib()
        short = []
        if speed < job.speed_target:
            short.append(f"speed {fmt_ratio(speed)} < {job.speed_target:g}x")
        if memory < job.memory_target:
            short.append(f"memory {fmt_ratio(memory)} < {job.memory_target:g}x")
        if short:
            missed.append(f"{job.name}: {', '.join(short)}")
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
                "MISSED " + " & ".join(s.split()[0] for s in short) if short else "met",
            ]
        )
        results.append(
            {
                "job": job.name,
                "bilstm_command": ["bilstm", *job.bilstm],
                "keras_command": ["python", "bench/keras_way.py", *job.keras],
                "bilstm": b.as_json(),
                "keras": k.as_json(),
                "speed_ratio": round(speed, 2),
                "memory_ratio": round(memory, 2),
                "speed_target": job.speed_target,
                "memory_target": job.memory_target,
                "speed_met": speed >= job.speed_target,
                "memory_met": memory >= job.memory_target,
                "met": not short,
            }
        )
    print()
    headers = ["job", "bilstm s", "keras s", "speed", "bilstm MiB", "keras MiB", "memory"]
    print_table([*headers, "target", "result"], rows, right={1, 2, 3, 4, 5, 6})
    return results, missed


def report_split(jobs: list[Job], series: dict[tuple[str, str], Series]) -> dict[str, dict]:
    """Where bilstm's time goes: its own phase timings, and the rest (interpreter,
    imports, argument parsing, output) as start-up."""
    rows, splits = [], {}
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
        rows.append(
            [job.name, f"{wall:.3f}", *(f"{phases[p]:.3f}" for p in PHASES), f"{startup:.3f}"]
        )
    if rows:
        print()
        print(
            "bilstm time split (medians, seconds): the phases from its --json 'timings'; "
            "start-up = wall - their sum\n(interpreter, imports, reading the layout, staging "
            "the copy, renaming, output, exit)"
        )
        print_table(["job", "wall", *PHASES, "start-up"], rows, right=set(range(1, 8)))
    return splits


HELP_LIMIT = 0.15  # seconds for bilstm --help


def results_markdown(doc: dict) -> str:
    """The committed summary of a full run: one table of ratios, one of bounds, the floors."""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run.py) on {doc['date']}, commit "
        f"`{(doc['source'].get('commit') or '?')[:12]}`, {doc['rounds']} rounds (medians), "
        f"{doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}. "
        "Ratios are the Keras way (bench/keras_way.py) over bilstm, measured in the same run.",
        "",
        "| job | bilstm s | keras s | speed | bilstm MiB | keras MiB | memory | target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for j in doc["jobs"]:
        b, k = j["bilstm"], j["keras"]
        lines.append(
            f"| {j['job']} | {b['median_wall_s']:.3f} | {k['median_wall_s']:.3f} | "
            f"{j['speed_ratio']:.1f}x | {b['median_peak_mib']:.1f} | {k['median_peak_mib']:.1f} | "
            f"{j['memory_ratio']:.1f}x | >={j['speed_target']:g}x / >={j['memory_target']:g}x | "
            f"{'met' if j['met'] else 'MISSED'} |"
        )
    lines += [
        "",
        "| bounded job | bilstm s | bilstm MiB | vs floor | bound | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for j in doc["bounded"]:
        if "bilstm" not in j:
            lines.append(
                f"| {j['job']} | {j['wall_s']:.4f} | | | <=10 ms | "
                f"{'met' if j['met'] else 'MISSED'} |"
            )
            continue
        ratio = "" if j["floor_ratio"] is None else f"{j['floor_ratio']:.2f}x"
        result = ("met" if j["met"] else "MISSED") if j["limits"] else "-"
        lines.append(
            f"| {j['job']} | {j['bilstm']['median_wall_s']:.3f} | "
            f"{j['bilstm']['median_peak_mib']:.1f} | "
            f"{ratio} | {', '.join(j['limits']) or '-'} | {result} |"
        )
    if doc.get("bilstm_time_split"):
        lines += [
            "",
            "Where bilstm's time goes (medians, seconds; the phases from its --json `timings`,",
            "start-up = wall - their sum: interpreter, imports, reading the layout, staging the",
            "copy, the rename after the flush to disk, output, exit):",
            "",
            "| job | wall | read | generate | write | stats | verify | start-up |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, split in doc["bilstm_time_split"].items():
            cells = [f"{split.get(k + '_s', 0.0):.3f}" for k in ("wall", *PHASES, "startup")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for j in doc.get("ratio_jobs", []):
        if not lines[-1].startswith("- "):
            lines += ["", "bilstm against itself (bench/ratio.py, medians):", ""]
        lines.append(
            f"- {j['job']}: {j['bilstm']['median_wall_s']:.3f} s against "
            f"{j['baseline']['median_wall_s']:.3f} s ({' '.join(j['baseline_command'][1:2])}), "
            f"{j['time_ratio']:.2f}x, at most {j['max_ratio']:g}x: "
            f"{'met' if j['met'] else 'MISSED'}"
        )
    lines += ["", "Floors (medians):", ""]
    for name, s in doc["startup"].items():
        lines.append(f"- {name}: {s['median_wall_s']:.3f} s, {s['median_peak_mib']:.1f} MiB")
    lines += ["", "Missed targets: " + ("; ".join(doc["missed"]) if doc["missed"] else "none"), ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[Job], list[Bound]]:
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
    args.ratio_jobs = [j for j in RATIO_JOBS if j.name in names]
    args.everything = set(wanted) == set(JOB_KEYS)
    return args, [j for j in JOBS if j.name in names], [b for b in BOUNDS if b.name in names]


def main(argv: list[str]) -> int:
    args, jobs, bounds = parse_args(argv)
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    large = any(LARGE in b.bilstm for b in bounds)
    ensure_models(out_dir, large)
    work = make_work_dir(out_dir, large)  # the commands name the models relative to it

    bilstm = find_bilstm()
    keras = [sys.executable, str(KERAS_WAY)]
    floor_argv = {f.name: expand(f.argv, bilstm) for f in FLOORS if large or not f.large}
    print(f"bilstm: {' '.join(bilstm)}")
    print(f"keras way: {' '.join(keras)}")
    print(f"models: {out_dir}; rounds: {args.rounds} (after {args.warmup} warm-up)")
    state = source_state(ROOT)
    dirty = " (bilstm_cli has uncommitted changes)" if state["bilstm_cli_modified"] else ""
    print(f"commit: {state['commit']}{dirty}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)

    series = {(j.name, side): Series() for j in jobs for side in ("bilstm", "keras")}
    ratio_series = {
        (j.name, side): Series() for j in args.ratio_jobs for side in ("command", "baseline")
    }
    floors = {name: Series() for name in floor_argv}
    bounded = {b.name: Series() for b in bounds}
    try:
        for r in range(-args.warmup, args.rounds):
            label = f"warm-up {r + args.warmup + 1}" if r < 0 else f"round {r + 1}/{args.rounds}"
            for floor, fargv in floor_argv.items():
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
            for rjob in args.ratio_jobs:
                c, base = run_ratio(rjob, bilstm, work)
                print(
                    f"  {label:>12}  {rjob.name:<18} bilstm {c.wall:6.2f} s   baseline "
                    f"{base.wall:6.2f} s ({' '.join(rjob.baseline[:1])})",
                    flush=True,
                )
                if r >= 0:
                    ratio_series[(rjob.name, "command")].samples.append(c)
                    ratio_series[(rjob.name, "baseline")].samples.append(base)
            for bound in bounds:
                b = run_bound(bound, bilstm, work)
                print(
                    f"  {label:>12}  {bound.name:<18} bilstm {b.wall:6.2f} s "
                    f"{b.peak_kib / 1024:7.1f} MiB",
                    flush=True,
                )
                if r >= 0:
                    bounded[bound.name].samples.append(b)
    except CommandFailed as exc:
        print(f"bench: a command failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results, missed = report(jobs, series) if jobs else ([], [])
    ratio_results, ratio_missed = report_ratios(args.ratio_jobs, ratio_series)
    missed += ratio_missed
    splits = report_split(jobs, series)
    bound_results, bound_missed = report_bounds(bounds, bounded, floors)
    missed += bound_missed
    print()
    print(
        "floors: "
        + "; ".join(f"{n} {s.wall():.3f} s ({s.peak_mib():.1f} MiB)" for n, s in floors.items())
    )
    help_wall = floors["bilstm --help"].wall()
    if help_wall > HELP_LIMIT:
        missed.append(f"bilstm --help: {help_wall:.3f} s > {HELP_LIMIT:g} s")

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
        "keras_way": str(KERAS_WAY.relative_to(ROOT)),
        "model_sizes": {
            n: (out_dir / n).stat().st_size for n in MODEL_FILES + ((LARGE, TWIN) if large else ())
        },
        "jobs": results,
        "ratio_jobs": ratio_results,
        "bounded": bound_results,
        "bilstm_time_split": splits,
        "startup": {name: s.as_json() for name, s in floors.items()},
        "missed": missed,
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    if args.everything and not state["bilstm_cli_modified"]:
        RESULTS_MD.write_text(results_markdown(doc))
        print(f"wrote {RESULTS_MD} (commit it: a regression then shows in review)")
    if missed:
        print(f"targets missed (reported, not failed): {len(missed)}")
        for line in missed:
            print(f"  missed: {line}")
    else:
        print("every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
