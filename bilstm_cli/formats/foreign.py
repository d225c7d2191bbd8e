"""Other frameworks' files (PyTorch state dicts, safetensors, ``.npz``, ONNX) as models.

The ``foreign`` format entry (:mod:`~bilstm_cli.formats.foreign_kind`) claims any file
:func:`~bilstm_cli.formats.foreign_kind.kind_of` recognises; this module reads it and shows
its recurrent layers in the Keras convention (see foreign_layout.py): every
:meth:`Weight.read` returns the Keras-layout array (transposed, gate blocks reordered, the two
biases summed or stacked as Keras keeps them). The model's :attr:`ForeignModel.layout` says
which framework's names and semantics the file holds. These files are read-only here:
``bilstm export`` writes other frameworks' layouts.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilstm_cli.errors import InputError
from bilstm_cli.formats.base import Session, sniff
from bilstm_cli.formats.foreign_kind import kind_of
from bilstm_cli.formats.foreign_layout import Found, RawCell, interpret
from bilstm_cli.formats.hdf5 import about
from bilstm_cli.formats.tensors import TensorFile, open_tensors
from bilstm_cli.model import Model

#: What ``inspect`` says each layout is.
LAYOUTS = {
    "pytorch": "PyTorch state dict (nn.LSTM/GRU/RNN names, two biases, GRU gates r,z,n)",
    "onnx": "ONNX recurrent operators (W, R, B; LSTM gates i,o,f,c)",
    "keras": "Keras roles (kernel, recurrent_kernel, bias)",
    "": "no recurrent layer found",
}

#: The key of safetensors metadata where ``bilstm export`` records each layer's settings.
METADATA_KEY = "bilstm.layers"


@dataclass
class ForeignModel(Model):
    """A model read from another framework's file; ``layout`` is ``pytorch``, ``onnx`` or
    ``keras`` (the names the tensors carry), or empty when no recurrent layer was found."""

    layout: str = ""


def _metadata(tf: TensorFile) -> dict[str, Any]:
    """The settings ``bilstm export`` recorded in a safetensors header, if any."""
    if tf.framework != "safetensors":
        return {}
    try:
        with open(tf.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        recorded = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "{}"))
    except (OSError, ValueError, struct.error, AttributeError, TypeError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _open(path: str, session: Session) -> tuple[TensorFile, Found]:
    kind = kind_of(sniff(path))
    if kind is None:
        raise InputError("not a file of named tensors")
    tf = open_tensors(path, kind, session)
    try:
        return tf, interpret(tf, _metadata(tf))
    except BaseException:
        tf.close()
        raise


def read_model(path: str, session: Session) -> Model:
    """The recurrent layers of the file at ``path`` in the Keras picture; no values read."""
    with about(path):
        tf, found = _open(path, session)
        try:
            framework = tf.framework
            notes = [f"{LAYOUTS[found.layout]}; weights shown in the Keras convention"]
            notes += found.notes + list(tf.notes)
        finally:
            tf.close()
    for layer in found.layers:
        layer.notes += [f"no Keras equivalent: {why}" for why in layer.refusals]
    for plain in found.plain:
        plain.notes += [f"no Keras equivalent: {why}" for why in plain.refusals]
    return ForeignModel(
        path,
        framework,
        None,
        list(found.layers),
        False,
        notes=notes,
        plain_layers=list(found.plain),
        layout=found.layout,
    )


class ForeignReader:
    """Reads each weight in the Keras convention; :meth:`read_raw` gives a stored tensor as
    the framework keeps it (for a forward pass in its own semantics)."""

    def __init__(self, path: str, tf: TensorFile, found: Found) -> None:
        self.path = path
        self._tf = tf
        self._recipes = found.recipes

    def read(self, location: str) -> np.ndarray:
        recipe = self._recipes.get(location)
        if recipe is None:
            raise InputError(f"{self.path}: no weight at {location}")
        with about(self.path):
            return recipe.build(self.read_raw)

    def read_raw(self, name: str) -> np.ndarray:
        with about(self.path):
            return np.asarray(self._tf.read(name))

    def close(self) -> None:
        self._tf.close()


def open_reader(path: str, session: Session) -> ForeignReader:
    with about(path):
        tf, found = _open(path, session)
    return ForeignReader(path, tf, found)


def raw_forward(reader: ForeignReader, raw: RawCell, x: np.ndarray) -> np.ndarray:
    """One stored direction run on ``x`` in its own framework's semantics, from the tensors as
    the file keeps them (not the Keras-convention weights): outputs (batch, time, units) in
    time order."""
    from bilstm_cli.cells.framework_forward import onnx_forward, pytorch_forward
    from bilstm_cli.formats.foreign_onnx import raw_matrix

    t = raw.tensors
    if raw.framework == "pytorch":
        b_ih, b_hh = (reader.read_raw(t[b]) if b in t else None for b in ("bias_ih", "bias_hh"))
        return pytorch_forward(
            x,
            raw.cell,
            reader.read_raw(t["weight_ih"]),
            reader.read_raw(t["weight_hh"]),
            b_ih,
            b_hh,
            reverse=raw.reverse,
        )
    quantized = "W_scale" in t
    w = raw_matrix(reader.read_raw, t, "W", raw.index, quantized)
    r = raw_matrix(reader.read_raw, t, "R", raw.index, quantized)
    b = reader.read_raw(t["B"])[raw.index] if t.get("B") else None
    a = raw.attributes
    return onnx_forward(
        x,
        raw.cell,
        w,
        r,
        b,
        reverse=raw.reverse,
        activations=a["activations"],
        alphas=a["alphas"],
        betas=a["betas"],
        clip=a["clip"],
        input_forget=a["input_forget"],
        linear_before_reset=a["linear_before_reset"],
    )
