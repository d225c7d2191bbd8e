"""Running two pieces of work at once on the machine's cores.

The heavy steps of a command (reading and writing bytes, CRC-32, NumPy arithmetic) let go of
the interpreter while they run, so a second thread does real work beside the first.

The helper threads are kept once started: a command hands work to a helper dozens of times
(each weight's statistics, its write beside its CRC, its random draws), and starting a thread
costs from half a millisecond to several on a busy machine, where handing work to a waiting
one costs a tenth of that. A helper that finishes a piece of work waits for the next among the
idle ones; there are never more than the most pieces of work that ran at once.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


class _Helper:
    """A daemon thread that runs one piece of work at a time."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Background[Any]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="bilstm-helper").start()

    def _loop(self) -> None:
        while True:
            job: Background[Any] | None = self.jobs.get()
            assert job is not None
            job._run()
            with _idle_lock:  # back among the idle ones before the job says it is done,
                _idle.append(self)  # so the next piece of work finds this helper
            job._done.release()
            job = None  # its result belongs to whoever waits for it


_idle: list[_Helper] = []
_idle_lock = threading.Lock()


def _forget_helpers() -> None:
    """A forked child has none of its parent's threads: it starts its own."""
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def _helper() -> _Helper:
    with _idle_lock:
        if _idle:
            return _idle.pop()
    return _Helper()


class Background(Generic[A]):
    """``work`` started now in a helper thread; :meth:`result` waits for it and returns what
    it returned, or raises what it raised, in the calling thread. The work runs in a context
    of its own, as on a new thread."""

    def __init__(self, work: Callable[[], A]) -> None:
        self._work: Callable[[], A] | None = work
        self._outcome: tuple[bool, Any] = (False, None)
        self._done = threading.Lock()
        self._done.acquire()
        _helper().jobs.put(self)

    def _run(self) -> None:
        work, self._work = self._work, None  # the helper keeps nothing of it afterwards
        assert work is not None
        try:
            self._outcome = (True, contextvars.Context().run(work))
        except BaseException as exc:  # raised by result(), in the calling thread
            self._outcome = (False, exc)

    def wait(self) -> None:
        with self._done:
            pass

    def result(self) -> A:
        self.wait()
        ok, value = self._outcome
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


def each(work: Callable[[int], T], count: int, workers: int) -> list[T]:
    """``[work(i) for i in range(count)]``, spread over this thread and up to ``workers - 1``
    helpers, which take the next ``i`` as they become free. Each call runs in a copy of the
    caller's context, so NumPy's error state (``np.errstate``) holds there too. After a
    failure no new call starts; the first failure is raised here once every thread is done
    (at once if this thread is interrupted while it waits)."""
    base = contextvars.copy_context()

    def one(i: int) -> T:
        return base.copy().run(work, i)

    if count <= 1 or workers <= 1:
        return [one(i) for i in range(count)]
    results: list[Any] = [None] * count
    indices = iter(range(count))  # taking the next index is one step: no two threads share one
    failed: list[BaseException] = []

    def drain() -> None:
        for i in indices:
            if failed:
                return
            try:
                results[i] = one(i)
            except BaseException as exc:
                failed.append(exc)
                return

    helpers: list[Background[None]] = []
    try:
        for _ in range(min(workers, count) - 1):
            helpers.append(Background(drain))
        drain()
        for helper in helpers:
            helper.wait()
    except BaseException as exc:  # interrupted while starting or waiting: the helpers
        failed.append(exc)  # finish the call in hand and take no other
        raise
    if failed:
        raise failed[0]
    return results


class SerialWorker:
    """A helper thread for the forward-pass arithmetic (NumPy lets go of the interpreter in
    it), so that it runs beside the main thread's reading, writing and statistics. Tasks run in
    the order given, one at a time, and a new one waits until the last is done: the weights
    held for the arithmetic are never more than one. The thread is taken from the helpers with
    the first task and given back by :meth:`close`."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Lock()  # held while a task is given and not yet done
        self._thread: Background[None] | None = None
        self._error: BaseException | None = None

    def submit(self, task: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = Background(self._run)
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

    def finish(self) -> None:
        """Wait for every task given so far; raise the first failure here."""
        if self._thread is not None:  # the last task is done once the lock is free
            self._idle.acquire()
            self._idle.release()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._tasks.put(None)
            thread.wait()
