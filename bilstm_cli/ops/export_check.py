"""The forward-pass checks of an export, in both conventions.

1. The target framework's semantics: each direction of each layer run by the NumPy reference
   of that framework (:mod:`~bilstm_cli.cells.framework_forward`) on the tensors as written,
   against the source layer run in Keras' semantics. The arithmetic differs (biases split,
   blocks reordered), so they agree within a tolerance derived from the dtypes, and the
   measured difference is reported.
2. The Keras convention: the written file read back by this tool's own reader, each layer run
   again in Keras' semantics; converting there and back loses nothing, so this one is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.convention import cross_tolerance
from bilstm_cli.cells.framework_forward import (
    ONNX_DEFAULT_ACTIVATIONS,
    onnx_activation_params,
    onnx_forward,
    pytorch_forward,
)
from bilstm_cli.errors import BilstmError
from bilstm_cli.formats import Session
from bilstm_cli.formats.foreign import ForeignReader
from bilstm_cli.formats.foreign_layout import interpret
from bilstm_cli.model import CellSettings
from bilstm_cli.ops.cross_check import within_tolerance
from bilstm_cli.ops.export_names import Placed, onnx_attributes
from bilstm_cli.ops.select import find_layer
from bilstm_cli.results import Check

Arrays = dict[str, dict[str, np.ndarray]]


def _config(s: CellSettings, major: int) -> reference.CellConfig:
    return reference.CellConfig(
        cell=s.cell,
        units=s.units,
        activation=s.activation or "tanh",
        recurrent_activation=s.recurrent_activation or "sigmoid",
        use_bias=s.use_bias,
        reset_after=bool(s.reset_after),
        go_backwards=s.go_backwards,
        keras_major=major,
    )


def keras_outputs(p: Placed, arrays: Arrays, major: int, x: np.ndarray) -> list[np.ndarray]:
    """Both directions of the layer in Keras' semantics, in time order."""
    out = []
    for direction, s in p.layer.settings.items():
        roles = arrays[direction]
        y = reference.rnn_forward(
            x, roles["kernel"], roles["recurrent_kernel"], roles.get("bias"), _config(s, major)
        )
        out.append(y[:, ::-1] if s.go_backwards else y)
    return out


def _framework_outputs(
    p: Placed, layout: str, read: Any, major: int, x: np.ndarray
) -> list[np.ndarray]:
    s = p.layer.forward
    out = []
    if layout == "pytorch":
        for k, direction in enumerate(("forward", "backward")):
            sfx = f"_l{p.index}" + ("_reverse" if direction == "backward" else "")
            biases = [f"{p.prefix}.bias_ih{sfx}", f"{p.prefix}.bias_hh{sfx}"]
            b_ih, b_hh = (read(b) if s.use_bias else None for b in biases)
            out.append(
                pytorch_forward(
                    x,
                    s.cell,
                    read(f"{p.prefix}.weight_ih{sfx}"),
                    read(f"{p.prefix}.weight_hh{sfx}"),
                    b_ih,
                    b_hh,
                    reverse=k == 1,
                    nonlinearity=s.activation or "tanh",
                )
            )
        return out
    attrs = onnx_attributes(p.layer, major)
    per = len(ONNX_DEFAULT_ACTIVATIONS[s.cell])
    alphas, betas = onnx_activation_params(
        attrs["activations"], attrs.get("activation_alpha", []), attrs.get("activation_beta", [])
    )
    w, r = read(f"{p.prefix}.W"), read(f"{p.prefix}.R")
    b = read(f"{p.prefix}.B") if s.use_bias else None
    for k in range(2):
        own = slice(k * per, (k + 1) * per)
        out.append(
            onnx_forward(
                x,
                s.cell,
                w[k],
                r[k],
                None if b is None else b[k],
                reverse=k == 1,
                activations=attrs["activations"][own],
                alphas=alphas[own],
                betas=betas[own],
                linear_before_reset=attrs.get("linear_before_reset", 0),
            )
        )
    return out


def forward_checks(
    staged: str,
    placed: list[Placed],
    layout: str,
    major: int,
    sources: dict[str, Arrays],
    metadata: dict[str, Any],
    session: Session,
) -> list[Check]:
    """Both checks for every exported layer, on the file as written at ``staged``."""
    from bilstm_cli.formats.base import sniff
    from bilstm_cli.formats.foreign_kind import kind_of
    from bilstm_cli.formats.tensors import open_tensors

    checks = []
    expected = {}
    for p in placed:
        arrays = sources[p.layer.name]
        x = reference.probe_batch(arrays["forward"]["kernel"].shape[0], seed=2)
        expected[p.layer.name] = (x, keras_outputs(p, arrays, major, x))
    if layout != "keras":
        kind = kind_of(sniff(staged))
        assert kind is not None  # the read-back check has opened it already
        tf = open_tensors(staged, kind, session)
        try:
            for p in placed:
                x, want = expected[p.layer.name]
                got = _framework_outputs(p, layout, tf.read, major, x)
                dtypes = [a.dtype.name for a in sources[p.layer.name]["forward"].values()]
                name = f"forward pass ({layout} semantics)"
                checks.append(
                    within_tolerance(p.layer.name, name, want, got, cross_tolerance(dtypes))
                )
        finally:
            tf.close()
    name = "forward pass (Keras convention, read back)"
    try:
        # This tool's own reader, told what the file records beside its tensors (an .npz
        # keeps no attributes, so it is given them as the export meant them).
        kind = kind_of(sniff(staged))
        assert kind is not None
        tf = open_tensors(staged, kind, session)
        reader = ForeignReader(staged, tf, interpret(tf, metadata))
        try:
            back = interpret(tf, metadata).layers
            for p in placed:
                own = f"{p.prefix}.l{p.index}" if layout == "pytorch" else p.layer.name
                layer = find_layer(back, own)
                if layer is None:
                    checks.append(Check.of(p.layer.name, name, False, f"no layer {own} read back"))
                    continue
                read_back: Arrays = {}
                for w in layer.weights:
                    read_back.setdefault(w.direction, {})[w.role] = reader.read(w.location)
                x, want = expected[p.layer.name]
                # Run with the source's settings: a written file may not record them (npz).
                got = keras_outputs(p, read_back, major, x)
                checks.append(within_tolerance(p.layer.name, name, want, got, 0.0))
        finally:
            reader.close()
    except BilstmError as exc:
        checks.append(Check.of("file", name, False, f"not readable as written ({exc.message})"))
    return checks
