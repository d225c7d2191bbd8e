"""What frameworks give a fresh layer: ``keras_default`` and ``pytorch_default``."""

from __future__ import annotations

import math

import numpy as np

from bilstm_cli.cells.blocks import has_lstm_gates
from bilstm_cli.strategies.checks import Fact, bounds_fact, fmt
from bilstm_cli.strategies.registry import Strategy, lookup, register
from bilstm_cli.strategies.sampling import draw
from bilstm_cli.strategies.spec import Spec, WeightInfo


def _keras_spec(info: WeightInfo) -> Spec:
    """The spec Keras' recurrent layers use for this weight by default."""
    if info.role == "kernel":
        return Spec("glorot_uniform", {"per_gate": False}, "glorot_uniform")
    if info.role == "recurrent_kernel":
        return Spec("orthogonal", {"gain": 1.0, "per_gate": False}, "orthogonal:per_gate=false")
    if has_lstm_gates(info.cell):  # LSTM and ConvLSTM: unit_forget_bias=True by default
        return Spec("unit_forget_bias", {}, "unit_forget_bias")
    return Spec("zeros", {}, "zeros")


@register
class KerasDefault(Strategy):
    """``keras_default``: what a freshly built Keras layer gets, per role."""

    name = "keras_default"
    usage = "keras_default"

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        inner = _keras_spec(info)
        return lookup(inner.name).generate(inner, info, seed, work)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        inner = _keras_spec(info)
        return f"Keras default for {info.role}: {lookup(inner.name).describe(inner, info)}"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        inner = _keras_spec(info)
        return lookup(inner.name).facts(inner, info, arr, sel, mask)


@register
class PytorchDefault(Strategy):
    """``pytorch_default``: U(−1/√units, 1/√units) for every weight, as PyTorch's RNNs."""

    name = "pytorch_default"
    usage = "pytorch_default"

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        k = 1.0 / math.sqrt(info.units)
        return draw("uniform", tuple(info.shape), seed, work, scale=2 * k, shift=-k)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        k = 1.0 / math.sqrt(info.units)
        return f"uniform in [-{fmt(k)}, {fmt(k)}] = ±1/sqrt({info.units}) (PyTorch default)"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        k = 1.0 / math.sqrt(info.units)
        return [bounds_fact(sel, -k, k, f"[-{fmt(k)}, {fmt(k)}]")]
