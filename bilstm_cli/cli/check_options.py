"""The options of ``bilstm check``, and ``--check`` of the commands that write a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bilstm_cli.cli.options import layer_option


def check_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--check`` on init and transplant: findings of the changed layers before and after."""
    return click.option(
        "--check",
        "with_check",
        is_flag=True,
        help="Also check the changed layers before and after (findings of 'bilstm check').",
    )(f)


def check_command_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--layer, --fail-on, --set, --hist, --json and --report, in that order in --help."""
    f = click.option(
        "--report",
        "report_path",
        metavar="OUT.html",
        help="Also write a self-contained HTML page with histograms and spectra (needs the "
        "'report' extra: matplotlib).",
    )(f)
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document; for several files, one per line (JSON Lines).",
    )(f)
    f = click.option(
        "--hist", "with_hist", is_flag=True, help="Add per-gate histograms (Unicode)."
    )(f)
    f = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="CODE.THRESHOLD=VALUE",
        help="Change a threshold ('recurrent.exploding.max_singular=10') or a severity "
        "('init.fresh.severity=off'). Repeatable.",
    )(f)
    f = click.option(
        "--fail-on",
        type=click.Choice(["warning", "error"]),
        default="error",
        show_default=True,
        help="Exit 1 when a finding of this severity (or worse) is found.",
    )(f)
    return layer_option(f)
