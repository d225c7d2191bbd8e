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
    from bilstm_cli.results import InspectResult, WriteResult

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
    pending: list[tuple[CheckResult, list[Histogram] | None]] = []  # while a glob is unmatched
    unmatched = list(dict.fromkeys(layers))
    read = 0
    for k, path in enumerate(models):
        if len(models) > 1:
            bar("files", k, len(models))
        try:
            if len(models) == 1:
                result = check(path, layers, settings, fail_on, bar)
            else:
                result = check_matching(path, layers, settings, fail_on)
            read += 1
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if is_debug(ctx):
                raise
            bar.clear()
            codes.append(report(exc, path))
            continue
        unmatched = [g for g in unmatched if not any(_matches(n, g) for n in result.layers)]
        if layers and not result.layers:
            continue
        results.append(result)
        codes.append(0 if result.ok else 1)
        pending.append((result, _hists(path, result.layers) if with_hist else None))
        if not unmatched and report_path is None:
            bar.clear()
            _show_all(pending, results[0], as_json, len(models) > 1)
    bar.clear()
    if unmatched and read:
        message = f"--layer '{unmatched[0]}' matches no Bidirectional layer in any file"
        return max(*codes, report(UsageError(message)))
    if report_path is not None and results:
        from bilstm_cli.report import write_report

        # Written before anything is shown: when it cannot be, stdout stays empty (exit 4).
        write_report(results, report_path)
        _show_all(pending, results[0], as_json, len(models) > 1)
        click.echo(f"wrote {report_path}", err=True)
    return max(codes)


def _show_all(
    pending: list[tuple[CheckResult, list[Histogram] | None]],
    first: CheckResult,
    as_json: bool,
    many: bool,
) -> None:
    """Print the held-back results, and forget them."""
    for held, hists in pending:
        _show(held, hists, as_json, many, held is not first)
    pending.clear()


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
        span = f"[{num(h.lo)}, {num(h.hi)}]"
        out.line(f"  {h.role:<16} {gate:<2} {spark(h.counts)} {span}{bad}")


def hist_doc(hists: Sequence[Histogram]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hists]


def show_inspect_hist(
    result: InspectResult, with_gates: bool, as_json: bool, after: bool, many: bool
) -> None:
    """``inspect --hist``: the listing, then the histograms of the listed layers (with
    --json, a ``histograms`` list added to the document)."""
    from bilstm_cli.cli.render import render_inspect
    from bilstm_cli.health.hist import histograms

    names = [r.layer.name for r in result.layers]
    hists = histograms(result.model.path, names) if names else []
    if as_json:
        doc = result.to_dict()
        doc["histograms"] = hist_doc(hists)
        if many:
            sys.stdout.write(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
        else:
            dump_json(doc)
        return
    if after:
        Output().line()
    render_inspect(result, with_gates)
    if hists:
        render_hists(hists)


def _key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["code"], f["layer"], f["direction"], f["role"], f["gate"])


def _where(f: dict[str, Any]) -> str:
    place = "/".join(p for p in (f["layer"], f["direction"], f["role"]) if p)
    return f"{place}[{f['gate']}]" if f["gate"] else place


def add_check(result: WriteResult) -> None:
    """``init``/``transplant --check``: the findings of the changed layers in the input and
    in the written output, and which were fixed or caused, as ``result.extra["check"]``."""
    from bilstm_cli.ops.check import check_layers

    names = list(dict.fromkeys(c.layer for c in result.changes))
    before = check_layers(result.input, names).to_dict()
    after = None
    if not result.dry_run and result.output is not None:
        after = check_layers(result.output, names).to_dict()
    old = {_key(f): f for f in before["findings"]}
    new = {_key(f): f for f in after["findings"]} if after is not None else {}
    summary = ("ok", "counts", "findings", "skipped")
    result.extra["check"] = {
        "layers": names,
        "before": {k: before[k] for k in summary},
        "after": {k: after[k] for k in summary} if after is not None else None,
        "fixed": [f for k, f in old.items() if k not in new] if after is not None else [],
        "caused": [f for k, f in new.items() if k not in old],
    }


def render_check_summary(result: WriteResult) -> None:
    """The ``--check`` table: each finding before → after."""
    doc = result.extra.get("check")
    if doc is None:
        return
    out = Output()
    out.line()
    before = {_key(f): f for f in doc["before"]["findings"]}
    after = {_key(f): f for f in doc["after"]["findings"]} if doc["after"] else None
    keys = list(before) + [k for k in (after or {}) if k not in before]
    if not keys:
        state = "before" if after is None else "before and after"
        out.line(f"check: no findings in the changed layers {state}")
        return
    rows = []
    for k in keys:
        f = before.get(k) or (after or {})[k]
        was = num(before[k]["value"]) if k in before else "-"
        if after is None:
            now, status = "(dry run)", "found"
        else:
            now = num(after[k]["value"]) if k in after else "-"
            status = "still" if k in before and k in after else "fixed" if k in before else "caused"
        rows.append([f["severity"], f["code"], _where(f), f"{was} → {now}", status])
    columns = [("severity", False), ("code", False), ("where", False)]
    columns += [("value before → after", True), ("status", False)]
    out.table("check of the changed layers", columns, rows)
