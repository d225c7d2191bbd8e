"""Jobs that time one bilstm command against another bilstm command (not against Keras).

Reading the three 512-unit layers from a PyTorch ``.pth`` is to cost about what reading the
same weights from the ``.h5`` does (at most 1.5 times). ``check`` on them is to cost no more
than about three times ``inspect --gates`` on the same file: both read every weight and study
every gate block; ``check`` adds the spectral estimates (a few Krylov steps per block, never a
full eigendecomposition), time scales, unit and direction comparisons. Within a round the two
commands alternate, like the Keras comparisons; medians are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from measure import Sample, Series, measure, print_table


@dataclass
class RatioJob:
    name: str
    command: list[str]  # arguments after the bilstm executable: the command timed
    baseline: list[str]  # ... and the one it is compared with
    max_ratio: float  # command / baseline wall time, at most
    exit_ok: tuple[int, ...] = (0,)


MODEL = "bench3x512.keras"
RATIO_JOBS = [
    # The same weights as a PyTorch state dict and as a legacy .h5: reading them from the
    # .pth (a restricted unpickler, storages read in place) costs about what the .h5 does.
    RatioJob(
        "inspect .pth",
        ["inspect", "bench3x512.pth", "--json"],
        ["inspect", "bench3x512.h5", "--json"],
        1.5,
    ),
    RatioJob(
        "check .keras",
        # The generated model's weights are random, not trained: findings are expected, so
        # exit 1 ("check found problems") counts as having worked.
        ["check", MODEL, "--json"],
        ["inspect", MODEL, "--gates", "--json"],
        3.0,
        (0, 1),
    ),
]


def run_ratio(job: RatioJob, bilstm: list[str], work: Path) -> tuple[Sample, Sample]:
    """The command, then its baseline."""
    command, _ = measure(bilstm + job.command, work, job.exit_ok)
    baseline, _ = measure(bilstm + job.baseline, work)
    return command, baseline


def report_ratios(
    jobs: list[RatioJob], series: dict[tuple[str, str], Series]
) -> tuple[list[dict], list[str]]:
    rows, results, missed = [], [], []
    for job in jobs:
        c, b = series[(job.name, "command")], series[(job.name, "baseline")]
        ratio = c.wall() / b.wall()
        met = ratio <= job.max_ratio
        if not met:
            baseline = " ".join(job.baseline[:1] + job.baseline[2:-1])
            missed.append(f"{job.name}: {ratio:.2f}x of {baseline} > {job.max_ratio:g}x")
        rows.append(
            [
                job.name,
                f"{c.wall():.3f}",
                f"{b.wall():.3f}",
                f"{ratio:.2f}x",
                f"{c.peak_mib():.1f}",
                f"{b.peak_mib():.1f}",
                f"<={job.max_ratio:g}x",
                "met" if met else "MISSED",
            ]
        )
        results.append(
            {
                "job": job.name,
                "bilstm_command": ["bilstm", *job.command],
                "baseline_command": ["bilstm", *job.baseline],
                "bilstm": c.as_json(),
                "baseline": b.as_json(),
                "time_ratio": round(ratio, 3),
                "max_ratio": job.max_ratio,
                "met": met,
            }
        )
    if rows:
        print()
        print("bilstm against bilstm (medians): the command's time over its baseline's")
        headers = ["job", "command s", "baseline s", "ratio", "cmd MiB", "base MiB", "target"]
        print_table([*headers, "result"], rows, right={1, 2, 3, 4, 5})
    return results, missed
