"""Strategies that write one value everywhere: ``zeros``, ``ones`` and ``constant``."""

from __future__ import annotations

import numpy as np

from bilstm_cli.errors import UsageError
from bilstm_cli.strategies.checks import Fact, constant_fact, fmt, range_problem
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.spec import Param, Spec, WeightInfo


class _Fill(Strategy):
    """Every entry set to :meth:`value`."""

    def value(self, spec: Spec) -> float:
        """The value written everywhere."""
        return float(spec.args["value"])

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        return np.full(tuple(info.shape), self.value(spec), dtype=work)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        return f"all {self.name}"

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        value = self.value(spec)
        problem = range_problem(abs(value), info.dtype, f"the value {value:.6g}")
        if problem:
            raise UsageError(problem)

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        return [constant_fact(sel, self.value(spec))]


@register
class Zeros(_Fill):
    """``zeros``: every entry 0."""

    name = "zeros"
    usage = "zeros"

    def value(self, spec: Spec) -> float:
        return 0.0


@register
class Ones(_Fill):
    """``ones``: every entry 1."""

    name = "ones"
    usage = "ones"

    def value(self, spec: Spec) -> float:
        return 1.0


@register
class Constant(_Fill):
    """``constant:VALUE``: every entry VALUE."""

    name = "constant"
    usage = "constant:VALUE"
    params = (Param("value", "float"),)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        return f"constant {fmt(self.value(spec))}"
