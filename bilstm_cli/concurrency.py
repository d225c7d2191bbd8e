"""Running two pieces of work at once on the machine's cores.

The heavy steps of a command (reading and writing bytes, CRC-32, NumPy arithmetic) let go of
the interpreter while they run, so a second thread does real work beside the first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

A = TypeVar("A")
B = TypeVar("B")


class Background(Generic[A]):
    """``work`` started now in a helper thread; :meth:`result` waits for it and returns what
    it returned, or raises what it raised, in the calling thread."""

    def __init__(self, work: Callable[[], A]) -> None:
        self._box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                self._box.append((True, work()))
            except BaseException as exc:  # raised by result(), in the calling thread
                self._box.append((False, exc))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> A:
        self._thread.join()
        ok, value = self._box[0]
        if not ok:
            raise value
        return cast(A, value)


def in_parallel(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run ``first`` in a helper thread while this thread runs ``second``; return both
    results. A failure in either is raised here, ``second``'s first."""
    helper = Background(first)
    try:
        result = second()
    finally:
        helper.wait()
    return helper.result(), result


class SerialWorker:
    """A helper thread for the forward-pass arithmetic (NumPy lets go of the interpreter in
    it), so that it runs beside the main thread's reading, writing and statistics. Tasks run in
    the order given, one at a time, and a new one waits until the last is done: the weights
    held for the arithmetic are never more than one."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(1)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, task: Callable[[], None]) -> None:
        if self._thread is None:
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()  # kept only once started: a signal can interrupt start()
            self._thread = thread
        self._idle.acquire()
        self._tasks.put(task)

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                if self._error is None:
                    task()
            except BaseException as exc:  # re-raised by finish(), in the main thread
                self._error = exc
            finally:
                del task  # let go of its weight before saying so
                self._idle.release()

    def beside(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        """:func:`in_parallel` on this worker's thread, started once for many calls rather
        than a new thread each time: ``first`` there, ``second`` here."""
        box: list[A] = []
        self.submit(lambda: box.append(first()))
        try:
            result = second()
        except BaseException:
            self._wait()
            raise
        self.finish()
        return box[0], result

    def _wait(self) -> None:
        if self._thread is not None:
            self._idle.acquire()
            self._idle.release()

    def finish(self) -> None:
        """Wait for every task given so far; raise the first failure here."""
        self._wait()  # the last task is done
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._tasks.put(None)
            thread.join()
