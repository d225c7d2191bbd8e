"""Strategies drawing from a fixed distribution: ``uniform``, ``normal``, ``truncated_normal``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bilstm_cli.errors import UsageError
from bilstm_cli.strategies.checks import Fact, bounds_fact, fmt, range_problem
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.sampling import TRUNCATION, draw, largest_normal
from bilstm_cli.strategies.spec import ArgValue, Param, Spec, WeightInfo


def _work(dtype: str) -> str:
    """The dtype values are drawn in for weights stored as ``dtype``."""
    return "float64" if dtype == "float64" else "float32"


@register
class Uniform(Strategy):
    """``uniform:LO,HI``: U[LO, HI), by default Keras' RandomUniform range."""

    name = "uniform"
    usage = "uniform:minval=-0.05,maxval=0.05"
    params = (Param("minval", "float", -0.05), Param("maxval", "float", 0.05))

    def validate(self, args: Mapping[str, ArgValue]) -> None:
        if not float(args["minval"]) < float(args["maxval"]):
            raise UsageError(
                f"uniform: minval ({args['minval']}) must be below maxval ({args['maxval']})"
            )

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        lo, hi = float(spec.args["minval"]), float(spec.args["maxval"])
        # The draw is scaled by hi - lo in the working dtype, which must hold it too.
        problem = range_problem(
            max(abs(lo), abs(hi)), info.dtype, f"the bound {fmt(max(abs(lo), abs(hi)))}"
        ) or range_problem(hi - lo, _work(info.dtype), f"the width {fmt(hi - lo)}")
        if problem:
            raise UsageError(problem)

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        lo, hi = float(spec.args["minval"]), float(spec.args["maxval"])
        return draw("uniform", tuple(info.shape), seed, work, scale=hi - lo, shift=lo)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        lo, hi = float(spec.args["minval"]), float(spec.args["maxval"])
        return f"uniform in [{fmt(lo)}, {fmt(hi)})"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        lo, hi = float(spec.args["minval"]), float(spec.args["maxval"])
        return [bounds_fact(sel, lo, hi, f"[{fmt(lo)}, {fmt(hi)}]")]


@register
class Normal(Strategy):
    """``normal:M,S``: N(M, S²)."""

    name = "normal"
    usage = "normal:mean=0,stddev=0.05"
    params = (Param("mean", "float", 0.0), Param("stddev", "float", 0.05))

    def validate(self, args: Mapping[str, ArgValue]) -> None:
        if not float(args["stddev"]) > 0:
            raise UsageError(f"{self.name}: stddev must be positive, got {args['stddev']}")

    def reach(self, work: str) -> float:
        """How many standard deviations from the mean a draw can land."""
        return largest_normal(np.dtype(work))

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        mean, stddev = float(spec.args["mean"]), float(spec.args["stddev"])
        k = self.reach(_work(info.dtype))
        largest = abs(mean) + k * stddev
        problem = range_problem(
            largest, info.dtype, f"values up to {fmt(largest)} ({fmt(k)} stddev from the mean)"
        )
        if problem:
            raise UsageError(problem)

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        mean, stddev = float(spec.args["mean"]), float(spec.args["stddev"])
        return draw(self.name, tuple(info.shape), seed, work, scale=stddev, shift=mean)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        mean, stddev = float(spec.args["mean"]), float(spec.args["stddev"])
        return f"normal (mean {fmt(mean)}, stddev {fmt(stddev)})"


@register
class TruncatedNormal(Normal):
    """``truncated_normal:M,S``: N(M, S²) with every value beyond 2S from M redrawn."""

    name = "truncated_normal"
    usage = "truncated_normal:mean=0,stddev=0.05 (cut at 2 stddev)"

    def reach(self, work: str) -> float:
        return TRUNCATION

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        mean, stddev = float(spec.args["mean"]), float(spec.args["stddev"])
        return f"truncated normal (mean {fmt(mean)}, stddev {fmt(stddev)}, redrawn beyond 2 stddev)"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        mean, stddev = float(spec.args["mean"]), float(spec.args["stddev"])
        lo, hi = mean - TRUNCATION * stddev, mean + TRUNCATION * stddev
        return [bounds_fact(sel, lo, hi, f"[{fmt(lo)}, {fmt(hi)}]")]
