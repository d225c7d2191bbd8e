"""``check --report OUT.html``: one self-contained page (inline SVG drawn by matplotlib, inline
CSS, no script, nothing fetched) with each layer's weight histograms per gate, the singular
values of each recurrent block, the forget-gate time scales and the findings.

matplotlib is the optional extra ``report``; :func:`require` says how to install it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bilstm_cli.errors import OutputError, UsageError

if TYPE_CHECKING:
    from bilstm_cli.findings import CheckResult

INSTALL = "pip install 'bilstm-cli[report]'"


def require() -> None:
    """Raise :class:`UsageError` (exit 2) with the install line when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"--report needs matplotlib, which is not installed: {INSTALL}") from None


def write_report(results: Sequence[CheckResult], path: str) -> None:
    """Write the page for ``results`` to ``path``: written beside it and renamed into place,
    so a failure leaves no half-written page."""
    require()
    from bilstm_cli.report.page import render_page

    html = render_page(results)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".bilstm-report-", suffix=".html", dir=folder)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the report: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temp, 0o666 & ~mask)  # what open() would have given, not mkstemp's 0600
        os.replace(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write the report: {exc.strerror or exc}") from None


__all__ = ["INSTALL", "require", "write_report"]
