"""The helper threads: work handed to them runs, returns or raises where it is waited for,
and the threads are kept for the next piece of work rather than started anew."""

from __future__ import annotations

import contextvars
import os
import signal
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli import concurrency
from bilstm_cli.concurrency import Background, SerialWorker, each, in_parallel
from bilstm_cli.formats import base


def _helper_threads() -> int:
    return sum(t.name == "bilstm-helper" for t in threading.enumerate())


def test_background_returns_and_raises_in_the_caller() -> None:
    assert Background(lambda: 41 + 1).result() == 42

    def fail() -> None:
        raise ValueError("in the helper")

    with pytest.raises(ValueError, match="in the helper"):
        Background(fail).result()


def test_helpers_are_kept_between_pieces_of_work() -> None:
    Background(lambda: None).result()  # at least one helper exists and is idle again
    before = _helper_threads()
    for _ in range(50):
        assert in_parallel(lambda: 1, lambda: 2) == (1, 2)
        each(lambda i: i, 4, 2)
    assert _helper_threads() == before


def test_helpers_run_side_by_side_when_asked_at_once() -> None:
    """Two pieces of work that wait for each other finish only if they run at once."""
    first, second = threading.Event(), threading.Event()

    def a() -> str:
        first.set()
        assert second.wait(10)
        return "a"

    def b() -> str:
        second.set()
        assert first.wait(10)
        return "b"

    ja, jb = Background(a), Background(b)
    assert (ja.result(), jb.result()) == ("a", "b")


def test_each_keeps_order_and_spreads_the_work() -> None:
    def work(i: int) -> int:
        x = np.random.default_rng(i).standard_normal((200, 200))
        np.linalg.qr(x)  # lets go of the interpreter, so the other thread takes a turn
        return i * i

    assert each(work, 40, 2) == [i * i for i in range(40)]
    assert each(work, 1, 2) == [0]
    assert each(work, 0, 2) == []
    assert each(work, 5, 1) == [0, 1, 4, 9, 16]


def test_each_raises_the_failure_once_everything_stopped() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        if i == 3:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        each(work, 1000, 2)
    # No new call starts once one failed: at most the other thread's call in progress.
    assert len(started) < 1000
    # Nothing is still running afterwards.
    count = len(started)
    Background(lambda: None).result()
    assert len(started) == count


def test_each_runs_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    try:
        assert set(each(lambda i: var.get(), 8, 2)) == {"caller"}
        with np.errstate(over="raise"):
            with pytest.raises(FloatingPointError):
                each(lambda i: np.float32(3e38) * np.float32(10 + i), 8, 2)
    finally:
        var.set("unset")


def test_background_work_starts_in_a_fresh_context() -> None:
    """A helper reused for many pieces of work does not carry one's settings into the next."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var2", default="unset")

    def sets() -> str:
        var.set("left behind")
        return var.get()

    assert Background(sets).result() == "left behind"
    for _ in range(4):
        assert Background(var.get).result() == "unset"


def test_serial_worker_runs_in_order_and_gives_its_thread_back() -> None:
    Background(lambda: None).result()
    before = _helper_threads()
    worker = SerialWorker()
    order: list[int] = []
    for i in range(20):
        worker.submit(lambda i=i: order.append(i))
    worker.finish()
    assert order == list(range(20))
    worker.close()
    assert _helper_threads() == before  # its thread is idle among the others again
    Background(lambda: None).result()
    assert _helper_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_starts_helpers_of_its_own() -> None:
    Background(lambda: None).result()  # the parent has an idle helper
    assert concurrency._idle
    pid = os.fork()
    if pid == 0:  # the child: its parent's helpers are not there to take work
        code = 1
        try:
            signal.alarm(20)  # waiting for a helper that is not there ends here, as a failure
            code = 0 if in_parallel(lambda: 3, lambda: 4) == (3, 4) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


_SPLIT = base._SPLIT_DIGEST // 4  # float32 values


@pytest.mark.parametrize("n", [0, 1, 7, _SPLIT - 1, _SPLIT, _SPLIT + 3, 3_000_001])
def test_a_fingerprint_taken_in_two_halves_is_the_whole_crc(n: int) -> None:
    """Large arrays are fingerprinted as two halves on two cores; the CRC joined from them is
    the CRC of the whole, whatever the length (odd ones included)."""
    import zlib

    from bilstm_cli.formats.base import digest

    values = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert digest(values) == f"<f4({n},):{zlib.crc32(values.tobytes()):08x}"
    rows = 2 * _SPLIT // 2048  # its every other column: as many values as the threshold
    strided = np.random.default_rng(1).random((rows, 2048), dtype=np.float32)[:, ::2]
    whole = zlib.crc32(np.ascontiguousarray(strided).tobytes())
    assert digest(strided).endswith(f":{whole:08x}")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 2**32 - 1))
def test_the_crc32_used_is_zlibs(data: bytes, start: int) -> None:
    import zlib

    from bilstm_cli.formats import crc

    assert crc.crc32(data, start) == zlib.crc32(data, start)
    assert crc.crc32(memoryview(data)) == zlib.crc32(data)


def test_without_zlib_ng_zlibs_own_crc32_is_used(monkeypatch) -> None:
    import builtins
    import zlib

    from bilstm_cli.formats import crc

    real_import = builtins.__import__

    def no_zlib_ng(name, *args, **kwargs):
        if name.startswith("zlib_ng"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zlib_ng)
    monkeypatch.setattr(crc, "_crc32", crc._pick())
    assert crc._crc32 is zlib.crc32
    assert crc.crc32(b"bilstm") == zlib.crc32(b"bilstm")


def test_zlib_ngs_crc32_is_installed_and_used() -> None:
    from zlib_ng import zlib_ng

    from bilstm_cli.formats import crc

    assert crc.crc32(b"bilstm") == zlib_ng.crc32(b"bilstm")
    assert crc._crc32 is zlib_ng.crc32
