"""A progress bar on stderr for work that takes a while, on a terminal only.

Nothing is drawn for the first second (most commands are done by then), nothing at all when
stderr is not a terminal, and the bar is removed when the work ends, so stdout's data and the
one-line errors are never mixed with it. ``BILSTM_PROGRESS_AFTER`` sets the delay in seconds.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

DEFAULT_DELAY = 1.0


class ProgressBar:
    """Called as ``bar(phase, done, total)`` by the library; a context manager that clears
    the bar on exit."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        try:
            self.delay = float(os.environ.get("BILSTM_PROGRESS_AFTER", DEFAULT_DELAY))
        except ValueError:
            self.delay = DEFAULT_DELAY
        self.started = time.monotonic()
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self.started < self.delay:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=sys.stderr),
                transient=True,
                # Data written meanwhile must reach stdout as it is, never pass through here.
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
        task = self._tasks.get(phase)
        if task is None:
            task = self._bar.add_task(phase, total=total)
            self._tasks[phase] = task
        self._bar.update(task, completed=done, total=total)

    def clear(self) -> None:
        """Take the bar off the screen (before printing); the next call draws it again."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._tasks.clear()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
