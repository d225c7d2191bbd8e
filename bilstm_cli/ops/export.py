"""``export``: a model's Bidirectional weights as another framework's named tensors, in a
``.safetensors`` or ``.npz`` file, verified like every write.

The file is written beside its final name, then verified: every tensor re-read and compared
bit for bit with what was meant; each layer run by the NumPy reference forward pass in the
target framework's own semantics on the tensors as written, against the source layer run in
Keras' (within a tolerance derived from the dtypes); and the written file read back by this
tool's own reader into the Keras convention and run again. Only then is it renamed into place.
What the target framework cannot express is refused, by name, before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bilstm_cli import cells, formats
from bilstm_cli.cells import cudnn
from bilstm_cli.errors import InputError, OutputError, UsageError, VerifyError
from bilstm_cli.formats import Session, digest
from bilstm_cli.model import Layer, Model
from bilstm_cli.ops.export_check import forward_checks
from bilstm_cli.ops.export_names import LAYOUTS, Placed, place, recorded, refusals, tensors
from bilstm_cli.ops.pairs import keras_major
from bilstm_cli.ops.select import select_layers
from bilstm_cli.results import FAILED, Check, ExportResult

SUFFIXES = (".safetensors", ".npz")


def export(
    model: str,
    output: str,
    layout: str = "pytorch",
    maps: Sequence[str] = (),
    layers: Sequence[str] = (),
    force: bool = False,
) -> ExportResult:
    """Write the Bidirectional weights of the model at ``model`` to ``output`` (``.safetensors``
    or ``.npz``) as ``layout`` (``pytorch``, ``keras`` or ``onnx``) names and lays them out.

    ``pytorch`` gives each layer the state dict of a module attribute named like the layer
    (``maps`` ``"LAYER=MODULE.lK"`` stack layers into one multi-layer module): load one
    module's keys with ``load_state_dict(strict=True)`` into ``nn.LSTM/GRU/RNN(...,
    bidirectional=True, batch_first=True)``. ``layers`` globs narrow the layers. The result is
    verified (re-read, forward passes in both conventions) before it is renamed into place;
    ``to_dict()`` is ``bilstm export --json``.

    >>> import bilstm_cli as bl
    >>> result = bl.export("fixtures/k2_seq_lstm.h5", "lstm.safetensors")
    >>> result.verified, [t["name"] for t in result.tensors][:3]
    (True, ['bidirectional.weight_ih_l0', 'bidirectional.weight_hh_l0', 'bidirectional.bias_ih_l0'])
    """
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    session = Session()
    with contextlib.ExitStack() as stack, formats.open_model(model, session) as source:
        if not source.layers:
            raise InputError(f"{model}: no Bidirectional layer to export")
        stored = {x.name: x.cell for x in select_layers(source.layers, layers, model)}
        chosen = [_as_keras(x) for x in select_layers(source.layers, layers, model)]
        unsupported = [x for x in chosen if x.cell not in ("LSTM", "GRU", "SimpleRNN")]
        if unsupported:
            raise InputError(
                f"{model}: layer '{unsupported[0].name}' wraps {unsupported[0].cell}, which "
                f"{layout} has no layer for (select other layers with --layer)"
            )
        major = keras_major(source)
        for layer in chosen:
            why = refusals(layer, layout, major)
            if why:
                raise InputError(
                    f"{model}: layer '{layer.name}' cannot be exported: {why[0]} "
                    "(select other layers with --layer)"
                )
        placed = place(chosen, maps, layout)
        out = _check_output(source, output, force)
        result = ExportResult(model, output, layout)
        named: dict[str, np.ndarray] = {}
        metadata: dict[str, Any] = {}
        sources = {}
        for p in placed:
            arrays = sources[p.layer.name] = _keras_arrays(p.layer, stored[p.layer.name])
            made = tensors(p, layout, arrays)
            clash = sorted(set(made) & set(named))
            if clash:
                raise UsageError(f"two layers would both write tensor '{clash[0]}'")
            named.update(made)
            metadata[p.layer.name] = recorded(p, layout, major)
            result.layers.append(_layer_doc(p, list(made), layout, metadata[p.layer.name]))
            for name, values in made.items():
                result.tensors.append(_tensor_doc(name, values, p.layer))
            if any(s.activation is None for s in (p.layer.forward, p.layer.backward)):
                result.notes.append(
                    f"{p.layer.name}: no cell settings in the file; Keras' defaults assumed "
                    "(tanh, sigmoid)"
                )
            if layout == "onnx" and out.lower().endswith(".npz") and p.layer.cell == "GRU":
                result.notes.append(
                    f"{p.layer.name}: an .npz records no attributes; its ONNX node needs "
                    f"linear_before_reset={1 if p.layer.forward.reset_after else 0}"
                )
            if p.layer.merge_mode not in ("concat", None) and layout != "keras":
                result.notes.append(
                    f"{p.layer.name}: merge_mode={p.layer.merge_mode}; the same weights, the "
                    "merge of the two directions is yours to apply"
                )
        t0 = _clock(timings, "convert", t0)
        staged = _staged_name(out)
        stack.enter_context(_sigterm_stops())
        try:
            _write(staged, named, layout, metadata, out)
            t0 = _clock(timings, "write", t0)
            result.checks.append(_read_back(staged, named, session))
            result.checks += forward_checks(
                staged, placed, layout, major, sources, metadata, session
            )
            _clock(timings, "verify", t0)
            failed = [c for c in result.checks if c.status == FAILED]
            if failed:
                raise VerifyError(
                    f"{output}: verification failed at {failed[0].where}: {failed[0].name} "
                    f"{failed[0].detail} ({len(failed)} check(s) failed); nothing was written"
                )
            _commit(staged, out, output)
        finally:
            if os.path.exists(staged):
                with contextlib.suppress(OSError):
                    os.remove(staged)
    result.verified = all(c.ok or not c.applies for c in result.checks)
    result.timings = timings
    return result


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM while writing stops like Ctrl-C, so the staged file is removed."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _clock(timings: dict[str, float], phase: str, since: float) -> float:
    now = time.perf_counter()
    timings[phase] = timings.get(phase, 0.0) + now - since
    return now


def _as_keras(layer: Layer) -> Layer:
    """A CuDNN-era layer as the Keras layer it is read as (LSTM, GRU with reset_after)."""
    if not cudnn.is_cudnn(layer.cell):
        return layer
    return replace(
        layer,
        forward=cells.keras_settings(layer.forward),
        backward=cells.keras_settings(layer.backward),
    )


def _keras_arrays(layer: Layer, stored_cell: str) -> dict[str, dict[str, np.ndarray]]:
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for w in layer.weights:
        values = w.read()
        if cudnn.is_cudnn(stored_cell):
            values = cudnn.to_keras(stored_cell, w.role, values, layer.units)
        values = np.ascontiguousarray(values)
        if values.dtype.kind != "f":
            raise InputError(f"{layer.name}/{w.direction}/{w.role} holds {values.dtype} values")
        arrays.setdefault(w.direction, {})[w.role] = values
    return arrays


def _layer_doc(p: Placed, names: list[str], layout: str, meta: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "layer": p.layer.name,
        "cell": p.layer.cell,
        "units": p.layer.units,
        "prefix": p.prefix,
        "index": p.index,
        "tensors": names,
    }
    if layout == "onnx":  # the node to build around W, R, B
        doc["attributes"] = meta
    return doc


def _tensor_doc(name: str, values: np.ndarray, layer: Layer) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(values.shape),
        "dtype": values.dtype.name,
        "layer": layer.name,
    }


def _check_output(source: Model, output: str, force: bool) -> str:
    """Refuse an output path that cannot or should not be written; return it absolute."""
    out = os.path.abspath(output)
    directory = os.path.dirname(out)
    if not out.lower().endswith(SUFFIXES):
        raise OutputError(f"{output}: export writes a .safetensors or .npz file")
    if not os.path.isdir(directory):
        raise OutputError(f"{output}: directory {directory} does not exist")
    if os.path.isdir(out):
        raise OutputError(f"{output}: is a directory")
    if os.path.exists(out):
        if not os.path.isfile(out):
            raise OutputError(
                f"{output}: is a device, pipe or socket, not a file; not replacing it"
            )
        if os.path.samefile(out, source.path) and not force:
            raise OutputError(f"{output}: is the input file; pass --force to replace it")
        if not force:
            raise OutputError(f"{output}: already exists; pass --force to overwrite it")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{output}: directory {directory} is not writable")
    return out


def _staged_name(out: str) -> str:
    directory, base = os.path.split(out)
    return os.path.join(directory, f".{base}.{os.urandom(4).hex()}.tmp")


def _write(
    staged: str, named: dict[str, np.ndarray], layout: str, metadata: dict[str, Any], out: str
) -> None:
    try:
        if out.lower().endswith(".safetensors"):
            from safetensors.numpy import save_file

            meta = {"bilstm.layout": layout, "bilstm.layers": json.dumps(metadata)}
            save_file(named, staged, metadata=meta)
        else:
            with open(staged, "xb") as f:
                np.savez(f, allow_pickle=False, **named)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{out}: cannot be written ({exc.strerror or exc})") from None


def _read_back(staged: str, named: dict[str, np.ndarray], session: Session) -> Check:
    """Every tensor of the written file, re-read, is bit for bit what was meant, and nothing
    else is there."""
    from bilstm_cli.formats.base import sniff
    from bilstm_cli.formats.foreign_kind import kind_of
    from bilstm_cli.formats.tensors import open_tensors

    kind = kind_of(sniff(staged))
    if kind is None:
        return Check.of("file", "written tensors read back", False, "not readable as written")
    tf = open_tensors(staged, kind, session)
    try:
        problems = [n for n in named if n not in tf.tensors]
        problems += [f"unexpected {n}" for n in tf.tensors if n not in named]
        same = 0
        for name, meant in named.items():
            if name in tf.tensors:
                if digest(np.asarray(tf.read(name))) == digest(meant):
                    same += 1
                else:
                    problems.append(f"{name} differs")
    finally:
        tf.close()
    detail = "; ".join(problems) or f"{same} of {len(named)} bit for bit as intended"
    return Check.of("file", "written tensors read back", not problems, detail, len(named))


def _commit(staged: str, out: str, output: str) -> None:
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staged, 0o666 & ~umask)
        os.replace(staged, out)
    except OSError as exc:
        raise OutputError(f"{output}: cannot be written ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(out) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["LAYOUTS", "export"]
