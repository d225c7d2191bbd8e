"""Keras' variance-scaling strategies: ``glorot_*``, ``he_*`` and ``lecun_*``.

Fans are taken over the whole matrix as Keras does, or per gate block with ``per_gate=true``.
"""

from __future__ import annotations

import math

import numpy as np

from bilstm_cli.strategies.checks import Fact, bounds_fact, fmt
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.sampling import TRUNCATION, Affine, draw
from bilstm_cli.strategies.spec import Param, Spec, WeightInfo

# Keras divides the target stddev by this constant so that a normal cut at two standard
# deviations ends up with the intended stddev: it is the stddev of a standard normal
# truncated to [-2, 2] (keras/src/initializers/random_initializers.py, VarianceScaling).
TRUNCATED_NORMAL_STD: float = 0.87962566103423978


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape, by Keras' rule.

    1-D: both the length; 2-D: rows and columns; more: the two last axes times the receptive
    field (the product of the leading axes).
    """
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _fan_shape(info: WeightInfo, per_gate: bool) -> tuple[int, ...]:
    if per_gate:
        return tuple(info.shape[:-1]) + (int(info.units),)
    return tuple(info.shape)


class VarianceScaling(Strategy):
    """Draws of variance ``scale / n``, ``n`` the fan that ``mode`` names, as Keras' subclasses
    of its VarianceScaling initializer define them."""

    params = (Param("per_gate", "bool", False),)
    scale: float
    #: ``fan_in`` or ``fan_avg``.
    mode: str
    #: ``uniform`` or ``truncated_normal``.
    distribution: str

    def _variance(self, info: WeightInfo, per_gate: bool) -> tuple[float, int, int]:
        """Target variance with the fans it comes from."""
        fan_in, fan_out = compute_fans(_fan_shape(info, per_gate))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale / max(1.0, n), fan_in, fan_out

    def _bound(self, variance: float) -> float:
        """Largest magnitude a draw can take (limit or truncation point)."""
        if self.distribution == "uniform":
            return math.sqrt(3.0 * variance)
        return TRUNCATION * math.sqrt(variance) / TRUNCATED_NORMAL_STD

    def _column_bounds(self, spec: Spec, info: WeightInfo) -> np.ndarray:
        """Per-column bound (the same everywhere unless per gate)."""
        variance, _, _ = self._variance(info, bool(spec.args.get("per_gate", False)))
        return np.full(info.shape[-1], self._bound(variance), dtype=np.float64)

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        shape = tuple(info.shape)
        bounds = self._column_bounds(spec, info)
        # A scalar scale keeps the fast path when every column shares one bound.
        scale: Affine = bounds if bool(spec.args.get("per_gate")) else float(bounds[0])
        if self.distribution == "uniform":
            return draw("uniform", shape, seed, work, scale=2 * scale, shift=-scale)
        return draw("truncated_normal", shape, seed, work, scale=scale / TRUNCATION)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        per_gate = bool(spec.args.get("per_gate"))
        variance, fan_in, fan_out = self._variance(info, per_gate)
        where = "per gate block" if per_gate else "over the whole matrix"
        if self.distribution == "uniform":
            detail = f"limit {fmt(self._bound(variance))}"
        else:
            detail = f"stddev {fmt(math.sqrt(variance))} after cutting at 2 sigma"
        return f"{self.name}, fans {where} (fan_in {fan_in}, fan_out {fan_out}): {detail}"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        bounds = self._column_bounds(spec, info)
        b = bounds if mask is None else bounds[mask]
        text = f"[-{fmt(float(b.max()))}, {fmt(float(b.max()))}]" if b.size else "[]"
        return [bounds_fact(sel, -b, b, text)]


@register
class GlorotUniform(VarianceScaling):
    """``glorot_uniform``: U(±√(3/fan_avg))."""

    name, usage = "glorot_uniform", "glorot_uniform[:per_gate=true]"
    scale, mode, distribution = 1.0, "fan_avg", "uniform"


@register
class GlorotNormal(VarianceScaling):
    """``glorot_normal``: truncated normal of variance 1/fan_avg."""

    name, usage = "glorot_normal", "glorot_normal[:per_gate=true]"
    scale, mode, distribution = 1.0, "fan_avg", "truncated_normal"


@register
class HeUniform(VarianceScaling):
    """``he_uniform``: U(±√(6/fan_in))."""

    name, usage = "he_uniform", "he_uniform[:per_gate=true]"
    scale, mode, distribution = 2.0, "fan_in", "uniform"


@register
class HeNormal(VarianceScaling):
    """``he_normal``: truncated normal of variance 2/fan_in."""

    name, usage = "he_normal", "he_normal[:per_gate=true]"
    scale, mode, distribution = 2.0, "fan_in", "truncated_normal"


@register
class LecunUniform(VarianceScaling):
    """``lecun_uniform``: U(±√(3/fan_in))."""

    name, usage = "lecun_uniform", "lecun_uniform[:per_gate=true]"
    scale, mode, distribution = 1.0, "fan_in", "uniform"


@register
class LecunNormal(VarianceScaling):
    """``lecun_normal``: truncated normal of variance 1/fan_in."""

    name, usage = "lecun_normal", "lecun_normal[:per_gate=true]"
    scale, mode, distribution = 1.0, "fan_in", "truncated_normal"
