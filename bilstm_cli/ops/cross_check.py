"""Forward passes compared across frameworks: the same cell computed by two frameworks'
arithmetic (biases summed or split, blocks reordered) agrees within a tolerance derived from the
dtypes, relative to the output scale, and the measured difference is reported either way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bilstm_cli.cells.convention import cross_tolerance
from bilstm_cli.results import Check

if TYPE_CHECKING:
    from bilstm_cli.ops.pairs import Pair


class Run(Protocol):
    def output(self) -> np.ndarray: ...


def within_tolerance(
    where: str, name: str, expected: Sequence[np.ndarray], got: Sequence[np.ndarray], rel: float
) -> Check:
    """Whether ``got`` matches ``expected`` within ``rel`` of the largest expected magnitude
    (``rel`` 0: exactly), with the measured difference in the detail."""
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(expected, got))
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in expected)
    if not np.isfinite(diff):
        return Check.of(where, name, False, "outputs not finite")
    if rel == 0.0:
        detail = f"largest output difference {diff:.3g}"
        return Check.of(
            where, name, diff == 0.0, detail if diff == 0 else detail + " (should be 0)"
        )
    tol = rel * max(scale, np.finfo(np.float64).tiny)
    detail = (
        f"largest output difference {diff:.3g}, tolerance {tol:.3g} "
        f"({rel:g} of the output scale {scale:.3g})"
    )
    return Check.of(where, name, diff <= tol, detail)


@dataclass
class CrossProbe:
    """Another framework's donor cell, run in its own semantics, against the written Keras
    cell of a transplant."""

    pair: Pair
    name: str
    donor: Callable[[], np.ndarray]
    written: Run
    reverse: bool  # the written run read time backwards: flip it back into time order
    dtypes: list[str]

    def check(self) -> Check:
        expected = self.donor()
        got = self.written.output()
        if self.reverse:
            got = got[:, ::-1]
        if self.pair.complete and not self.pair.differences:
            rel = cross_tolerance(self.dtypes)
            return within_tolerance(self.pair.label, self.name, [expected], [got], rel)
        diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
        why = "a partial transplant" if not self.pair.complete else "settings that differ"
        return Check.skipped(
            self.pair.label,
            self.name,
            f"outputs differ by up to {diff:.3g}, as expected with {why}; not a check here",
            applies=False,
        )
