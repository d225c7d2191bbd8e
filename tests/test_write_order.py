"""The order in which a write makes a weight's new values and reads its current ones."""

from __future__ import annotations

import numpy as np

from bilstm_cli.model import Weight
from bilstm_cli.ops.apply import Job, Part, _Clock, _current_and_new


class _Staged:
    """Hands out a weight's current values and records when it was asked."""

    def __init__(self, values: np.ndarray, log: list[str]) -> None:
        self.values = values
        self.log = log

    def read(self, location: str) -> np.ndarray:
        self.log.append("read")
        return self.values


def _job(dtype: str, log: list[str], dtype_only: bool) -> Job:
    def build(current: np.ndarray) -> np.ndarray:
        log.append(f"build {current.dtype.name} {current.size}")
        return np.full((2, 3), 0.5, dtype=current.dtype)

    ref = Weight("forward", "kernel", "layers/x/vars/0", (2, 3), dtype)
    return Job(None, ref, [Part(None, None, "test")], build, lambda v: [], dtype_only)  # type: ignore[arg-type]


def test_new_values_depending_only_on_the_dtype_are_made_before_the_current_are_read():
    log: list[str] = []
    current = np.ones((2, 3), np.float32)
    got, new = _current_and_new(
        _job("float32", log, True), _Staged(current, log), _Clock({}), 0.0
    )
    assert log == ["build float32 0", "read"]
    assert got is current and new.dtype == np.float32


def test_a_layout_dtype_that_differs_from_the_values_read_makes_them_again():
    log: list[str] = []
    current = np.ones((2, 3), np.float64)
    got, new = _current_and_new(
        _job("float16", log, True), _Staged(current, log), _Clock({}), 0.0
    )
    assert log == ["build float16 0", "read", "build float64 6"]
    assert new.dtype == np.float64


def test_other_jobs_read_first():
    log: list[str] = []
    _current_and_new(
        _job("float32", log, False), _Staged(np.ones((2, 3), np.float32), log), _Clock({}), 0.0
    )
    assert log == ["read", "build float32 6"]
