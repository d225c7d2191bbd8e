"""``bilstm check`` on one or several files, its tables, and the ``--hist`` histograms that
``check`` and ``inspect`` draw on request."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from bilstm_cli.cli.funnel import is_debug, report
from bilstm_cli.cli.render import Output, dump_json, num
from bilstm_cli.errors import UsageError
from bilstm_cli.findings import RULES

if TYPE_CHECKING:
    from bilstm_cli.findings import CheckResult, Finding
    from bilstm_cli.health.hist import Histogram

SPARKS = " ▁▂▃▄▅▆▇█"


def run_check(
    ctx: click.Context,
    models: Sequence[str],
    layers: Sequence[str],
    fail_on: str,
    sets: Sequence[str],
    with_hist: bool,
    as_json: bool,
    report_path: str | None,
) -> int:
    """Check every file; print each result as it comes; the exit code (worst of the files':
    3 unreadable, 1 a finding reached ``fail_on``, 0 all well)."""
    from bilstm_cli.cli.progress import ProgressBar
    from bilstm_cli.findings import resolve, thresholds_from
    from bilstm_cli.ops.check import check, check_matching

    settings = resolve(thresholds_from(sets))
    if report_path is not None:
        from bilstm_cli.report import require

        require()
    bar = ProgressBar()
    codes: list[int] = [0]
    results: list[CheckResult] = []
    unmatched = list(dict.fromkeys(layers))
    for k, path in enumerate(models):
        if len(models) > 1:
            bar("files", k, len(models))
        try:
            if len(models) == 1:
                result = check(path, layers, settings, fail_on, bar)
            else:
                result = check_matching(path, layers, settings, fail_on)
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if is_debug(ctx):
                raise
            bar.clear()
            codes.append(report(exc, path))
            continue
        bar.clear()
        unmatched = [g for g in unmatched if not any(_matches(n, g) for n in result.layers)]
        if layers and not result.layers:
            continue
        hists = _hists(path, result.layers) if with_hist else None
        _show(result, hists, as_json, len(models) > 1, bool(results))
        results.append(result)
        codes.append(0 if result.ok else 1)
    bar.clear()
    if unmatched and results:
        codes.append(
            report(
                UsageError(f"--layer '{unmatched[0]}' matches no Bidirectional layer in any file")
            )
        )
    if report_path is not None and results:
        from bilstm_cli.report import write_report

        write_report(results, report_path)
        click.echo(f"wrote {report_path}", err=True)
    return max(codes)


def _matches(name: str, pattern: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(name, pattern) or fnmatchcase(name.rsplit("/", 1)[-1], pattern)


def _hists(path: str, layers: Sequence[str]) -> list[Histogram]:
    from bilstm_cli.health.hist import histograms

    return histograms(path, layers) if layers else []


def _show(
    result: CheckResult, hists: list[Histogram] | None, as_json: bool, many: bool, after: bool
) -> None:
    if as_json:
        doc = result.to_dict()
        if hists is not None:
            doc["histograms"] = [h.to_dict() for h in hists]
        if many:
            sys.stdout.write(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
        else:
            dump_json(doc)
    else:
        if after:
            Output().line()
        render_check(result)
        if hists:
            render_hists(hists)
    sys.stdout.flush()


def finding_rows(findings: Sequence[Finding]) -> list[list[str]]:
    return [
        [f.severity, f.code, f.where, num(f.value), num(f.threshold), f.detail] for f in findings
    ]


FINDING_COLUMNS = [
    ("severity", False),
    ("code", False),
    ("where", False),
    ("value", True),
    ("threshold", True),
    ("detail", False),
]


def render_check(result: CheckResult) -> None:
    out = Output()
    version = f", written by Keras {result.keras_version}" if result.keras_version else ""
    out.line(f"{result.file}: {result.format}{version}; {len(result.layers)} layer(s) checked")
    for note in result.notes:
        out.line(f"note: {note}")
    if result.findings:
        out.line()
        out.table("findings", FINDING_COLUMNS, finding_rows(result.findings))
        out.line()
        for code in dict.fromkeys(f.code for f in result.findings):
            out.line(f"{code}: {RULES[code].why}")
    if result.skipped:
        out.line()
        for s in result.skipped:
            where = "/".join(p for p in (s.layer, s.direction, s.role) if p)
            out.line(f"skipped {s.check} at {where}: {s.why}")
    counts = result.counts()
    tally = f"{counts['error']} error(s), {counts['warning']} warning(s)"
    out.line()
    if result.ok:
        out.line(f"OK: nothing reaches --fail-on {result.fail_on} ({tally})")
    else:
        reach = len(result.failing)
        out.line(f"FAILED: {reach} finding(s) reach --fail-on {result.fail_on} ({tally})")


def spark(counts: Sequence[int]) -> str:
    """One character per bin, its height proportional to the count (blank for none)."""
    top = max(counts) if counts else 0
    if top == 0:
        return " " * len(counts)
    steps = len(SPARKS) - 1
    return "".join(SPARKS[0 if c == 0 else max(1, round(c / top * steps))] for c in counts)


def render_hists(hists: Sequence[Histogram]) -> None:
    """Histograms grouped by layer and direction, one line per role and gate block."""
    out = Output()
    out.line()
    out.line(f"histograms ({len(hists[0].counts)} bins from min to max of each block)")
    heading = None
    for h in hists:
        if (h.layer, h.direction) != heading:
            heading = (h.layer, h.direction)
            out.line(f"{h.layer}/{h.direction}")
        gate = h.gate or "-"
        bad = f"  +{h.nonfinite} non-finite" if h.nonfinite else ""
        out.line(f"  {h.role:<16} {gate:<2} {spark(h.counts)} {num(h.lo)} … {num(h.hi)}{bad}")


def hist_doc(hists: Sequence[Histogram]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hists]
