"""Strategies for gated-cell biases: ``unit_forget_bias`` and ``chrono``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bilstm_cli.cells.blocks import GATE_NAMES, gate_slices, has_lstm_gates, selected_blocks
from bilstm_cli.errors import UsageError
from bilstm_cli.strategies.checks import Fact, bounds_fact, constant_fact, fmt
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.sampling import stream
from bilstm_cli.strategies.spec import ArgValue, Param, Spec, WeightInfo


@register
class UnitForgetBias(Strategy):
    """``unit_forget_bias``: an LSTM bias of zeros with the forget gate block set to ones."""

    name = "unit_forget_bias"
    usage = "unit_forget_bias (LSTM bias)"

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        if info.role != "bias" or not has_lstm_gates(info.cell):
            raise UsageError(
                f"unit_forget_bias fits an LSTM or ConvLSTM bias only, not the {info.where()}"
            )

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        out = np.zeros(tuple(info.shape), dtype=work)
        out[..., gate_slices("LSTM", info.units)["f"]] = 1.0
        return out

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        return "zeros with the forget gate block set to ones (unit_forget_bias)"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        out: list[Fact] = []
        for gate, sl in selected_blocks(info.cell, info.units, mask):
            value = 1.0 if gate == "f" else 0.0
            label = f"{GATE_NAMES[info.cell].get(str(gate), gate)} gate {value:g}"
            out.append(constant_fact(arr[..., sl], value, label))
        return out


def _chrono_row(info: WeightInfo) -> tuple[int, ...]:
    """Index prefix of the bias row chrono writes to (row 0 of a reset_after GRU bias)."""
    return (0,) if len(info.shape) == 2 else ()


@register
class Chrono(Strategy):
    """``chrono:tmax=T``: Tallec & Ollivier (2018) chrono initialization of LSTM/GRU biases."""

    name = "chrono"
    usage = "chrono:tmax=T (LSTM/GRU bias)"
    params = (Param("tmax", "float"),)

    def validate(self, args: Mapping[str, ArgValue]) -> None:
        if not float(args["tmax"]) > 2:
            raise UsageError(
                f"chrono: tmax must be above 2 (draws from U(1, tmax-1)), got {args['tmax']}"
            )

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        if info.cell == "SimpleRNN":
            raise UsageError("chrono needs a gated cell (LSTM or GRU); SimpleRNN has no gates")
        if info.role != "bias":
            raise UsageError(f"chrono fits biases only, not the {info.where()}")

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        out = np.zeros(tuple(info.shape), dtype=work)
        tmax = float(spec.args["tmax"])
        # log U(1, tmax - 1) for one gate block, drawn in float64.
        values = np.log(stream(seed, 0).uniform(1.0, tmax - 1.0, size=int(info.units)))
        values = values.astype(work)
        slices = gate_slices(info.cell, info.units)
        if has_lstm_gates(info.cell):
            out[..., slices["f"]] = values
            out[..., slices["i"]] = -values
        else:
            out[_chrono_row(info) + (slices["z"],)] = values
        return out

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        t = float(spec.args["tmax"])
        law = f"log U(1, {fmt(t - 1)})"
        if has_lstm_gates(info.cell):
            return (
                f"chrono (Tallec & Ollivier 2018, tmax {fmt(t)}): forget bias {law}, "
                "input bias its negative, cell and output 0"
            )
        row = " input-bias row" if len(info.shape) == 2 else ""
        return (
            f"chrono (Tallec & Ollivier 2018, tmax {fmt(t)}): update gate z{row} {law}, rest 0 "
            "(Keras' GRU keeps z*h_prev, so z acts as the forget gate)"
        )

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        tmax = float(spec.args["tmax"])
        hi = math.log(tmax - 1.0)
        law = f"[0, log({fmt(tmax - 1)})]"
        out: list[Fact] = []
        blocks = dict(selected_blocks(info.cell, info.units, mask))
        slices = gate_slices(info.cell, info.units)
        if has_lstm_gates(info.cell):
            if "f" in blocks:
                ok, detail = bounds_fact(arr[..., slices["f"]], 0.0, hi, law)[1:3]
                out.append(Fact("forget bias in " + law, ok, detail))
            if "i" in blocks and "f" in blocks:
                ok = bool(np.array_equal(arr[..., slices["i"]], -arr[..., slices["f"]]))
                out.append(Fact("input bias = -forget bias", ok, ""))
            for g in ("c", "o"):
                if g in blocks:
                    label = f"{GATE_NAMES['LSTM'][g]} gate 0"
                    out.append(constant_fact(arr[..., slices[g]], 0.0, label))
            return out
        row = _chrono_row(info)
        if "z" in blocks:
            ok, detail = bounds_fact(arr[row + (slices["z"],)], 0.0, hi, law)[1:3]
            out.append(Fact("update gate bias in " + law, ok, detail))
        rest = np.ones(arr.shape, dtype=bool)
        rest[row + (slices["z"],)] = False
        if mask is not None:
            rest &= np.broadcast_to(mask, arr.shape)
        out.append(constant_fact(arr[rest], 0.0, "other entries 0"))
        return out
