"""Running two pieces of work at once on the machine's cores.

The heavy steps of a command (reading and writing bytes, CRC-32, NumPy arithmetic) let go of
the interpreter while they run, so a second thread does real work beside the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")


def in_parallel(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run ``first`` in a helper thread while this thread runs ``second``; return both
    results. A failure in either is raised here, ``second``'s first."""
    box: list[Any] = []

    def work() -> None:
        try:
            box.append((True, first()))
        except BaseException as exc:  # raised below, in the calling thread
            box.append((False, exc))

    helper = threading.Thread(target=work, daemon=True)
    helper.start()
    try:
        result = second()
    finally:
        helper.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value, result
