"""``diff``: which Bidirectional weights differ between two model files, and by how much."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from bilstm_cli import formats
from bilstm_cli.cells.blocks import gate_blocks, gate_mask, parse_gates, parse_target
from bilstm_cli.concurrency import SerialWorker
from bilstm_cli.errors import UsageError
from bilstm_cli.formats import Session
from bilstm_cli.model import Layer, Model
from bilstm_cli.ops.select import find_layer, layer_matches
from bilstm_cli.results import DiffResult, LayerDiff, WeightDiff
from bilstm_cli.stats import weight_stats

# Relative differences are taken against max(|a|, this) so exact zeros do not divide.
# Entries smaller than this fraction of the weight's largest magnitude are compared as if they
# were that small: their relative difference says nothing about the weight.
REL_SCALE_FLOOR = 1e-6


# Elements compared at a time: the float64 working arrays (three rows of it, 1.5 MiB) stay
# this size whatever the weight. Every number taken from them is a maximum or a minimum, so
# the size does not change the results.
_CHUNK = 1 << 16


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in the machine's byte order: values compare, not how a file stores them."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[bool, float, float]:
    """Whether A and B hold bit for bit the same values (whatever byte order each file
    stores), the largest absolute difference, and the largest relative one,
    |a − b| / max(|a|, |b|): symmetric and at most 2, so an entry that is zero on one side
    reads as 100% different rather than as a quotient by zero.

    Streams over the flat values a chunk at a time (two passes: the relative difference
    needs the largest magnitude first), so its working memory does not grow with the weight.
    """
    x, y = _native(np.asarray(a)).ravel(), _native(np.asarray(b)).ravel()
    equal = x.dtype == y.dtype and x.shape == y.shape
    # Bits compared as unsigned integers of the same width, in place (NaN equals itself).
    bits = np.dtype(f"u{x.dtype.itemsize}") if x.dtype.itemsize in (1, 2, 4, 8) else None
    max_abs = scale = 0.0
    # Per chunk: the largest d / size where it is finite (d = |x − y|, size = max(|x|, |y|))
    # and the smallest size. Once the floor is known, a chunk whose sizes all reach it has
    # that quotient as its answer; only the others are computed again, with the floor.
    quotients: list[tuple[int, float, float]] = []
    work = np.empty((3, min(x.size, _CHUNK)))  # reused: no new memory per chunk
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for start in range(0, x.size, _CHUNK):
            xs, ys = x[start : start + _CHUNK], y[start : start + _CHUNK]
            if equal:
                if bits is not None:
                    equal = bool(np.array_equal(xs.view(bits), ys.view(bits)))
                else:
                    equal = xs.tobytes() == ys.tobytes()
            d, size = _chunk(xs, ys, work)
            top, big = float(d.max()), float(size.max())
            if math.isfinite(top) and math.isfinite(big):  # every entry finite
                ratio = np.divide(d, size, out=work[1, : d.size])
                quotient = float(ratio.max()) if big > 0 else 0.0
                quotients.append((start, quotient, float(size.min())))
            else:
                finite = np.isfinite(d)
                if not finite.any():
                    continue
                top, big = float(d[finite].max()), float(size[finite].max())
                quotients.append((start, math.nan, 0.0))
            max_abs, scale = max(max_abs, top), max(scale, big)
        floor = max(scale * REL_SCALE_FLOOR, np.finfo(np.float64).tiny)
        max_rel = 0.0
        for start, quotient, smallest in quotients:
            if smallest < floor or math.isnan(quotient):
                d, size = _chunk(x[start : start + _CHUNK], y[start : start + _CHUNK], work)
                finite = np.isfinite(d)
                quotient = float((d[finite] / np.maximum(size[finite], floor)).max())
            max_rel = max(max_rel, quotient)
    return equal, max_abs, max_rel


def _chunk(xs: np.ndarray, ys: np.ndarray, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|x − y| and max(|x|, |y|) of one chunk, in float64, in rows 2 and 0 of ``work``."""
    n = xs.size
    x64, y64, d = work[0, :n], work[1, :n], work[2, :n]
    np.copyto(x64, xs, casting="unsafe")  # exact: every float widens to float64
    np.copyto(y64, ys, casting="unsafe")
    np.abs(np.subtract(x64, y64, out=d), out=d)
    np.abs(x64, out=x64)
    np.abs(y64, out=y64)
    return d, np.maximum(x64, y64, out=x64)


def _fill_stats(entry: WeightDiff, a: np.ndarray, b: np.ndarray) -> None:
    entry.stats_a, entry.stats_b = weight_stats(a), weight_stats(b)


def _masked(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return values if mask is None else values[..., mask]


def diff(
    path_a: str,
    path_b: str,
    layers: Sequence[str] = (),
    roles: Sequence[str] = (),
    gates: bool = False,
    by: str = "name",
    maps: Sequence[str] = (),
) -> DiffResult:
    """Compare the Bidirectional weights of two files.

    Layers pair ``by`` name (a nested layer also by its own name) or by order (the k-th
    Bidirectional of each file), or as ``maps`` say (``"A_LAYER=B_LAYER"``, repeatable; the
    layers not named are left out). ``layers`` globs and ``roles`` (``"bias[f]"``) narrow the
    comparison; ``gates`` adds a row per gate block. ``identical`` says whether every selected
    weight is bit for bit the same; ``to_dict()`` is ``bilstm diff --json``.

    >>> import bilstm_cli as bl
    >>> bl.diff("fixtures/k2_seq_lstm.h5", "fixtures/k2_seq_lstm.h5").identical
    True
    >>> a, b = "fixtures/k2_seq_lstm.h5", "fixtures/k3_functional_mixed.keras"
    >>> [(x.name, x.name_b, x.status) for x in bl.diff(a, b, by="order").layers]
    [('bidirectional', 'bi_lstm_ave', 'different'), ('bi_gru_mul', 'bi_gru_mul', 'only in B'),
     ('my_bi', 'my_bi', 'only in B')]
    """
    if by not in ("name", "order"):
        raise UsageError(f"--by must be name or order, not '{by}'")
    session = Session(read_only=True)
    targets = [parse_target(r) for r in roles]
    with (
        formats.open_model(path_a, session) as model_a,
        formats.open_model(path_b, session) as model_b,
    ):
        layers_a, layers_b = _chosen(model_a.layers, layers), _chosen(model_b.layers, layers)
        if layers and not layers_a and not layers_b:
            names = ", ".join(x.name for x in model_a.layers + model_b.layers) or "none"
            raise UsageError(f"--layer matches no Bidirectional layer in either file ({names})")
        if maps:
            paired = [_mapped(text, model_a, model_b) for text in maps]
            only_a: list[Layer] = []
            only_b: list[Layer] = []
        else:
            paired, only_a, only_b = _paired(layers_a, layers_b, by)
        helper = SerialWorker()  # each pair's statistics, beside its comparison
        try:
            out = [_layer_diff(la, lb, targets, gates, helper) for la, lb in paired]
            helper.finish()  # every pair's statistics are in
        finally:
            helper.close()
        session.settle()  # the archives' CRCs, taken beside the reading
        layouts = [getattr(m, "layout", None) for m in (model_a, model_b)]
        if any(layouts):  # another framework's file: compared once converted
            said = ", ".join(f"{side}: {x} layout" for side, x in zip("AB", layouts) if x)
            for layer in out:
                layer.notes.append(f"compared in the Keras convention ({said})")
    out.extend(LayerDiff(la.name, la.cell, "only in A") for la in only_a)
    out.extend(LayerDiff(lb.name, lb.cell, "only in B") for lb in only_b)
    return DiffResult(path_a, path_b, out, list(session.notes))


def _paired(
    layers_a: list[Layer], layers_b: list[Layer], by: str
) -> tuple[list[tuple[Layer, Layer]], list[Layer], list[Layer]]:
    """Pairs of layers to compare, and the layers of each file left without a partner."""
    if by == "order":
        n = min(len(layers_a), len(layers_b))
        return list(zip(layers_a[:n], layers_b[:n])), layers_a[n:], layers_b[n:]
    names_b = {x.name: x for x in layers_b}
    paired, only_a = [], []
    for la in layers_a:
        lb = names_b.pop(la.name, None)
        if lb is None:
            only_a.append(la)
        else:
            paired.append((la, lb))
    return paired, only_a, list(names_b.values())


def _mapped(text: str, model_a: Model, model_b: Model) -> tuple[Layer, Layer]:
    """The pair ``--map A_LAYER=B_LAYER`` names."""
    left, eq, right = text.partition("=")
    if not eq or not left.strip() or not right.strip():
        raise UsageError(f"--map '{text}': expected A_LAYER=B_LAYER, e.g. enc=encoder")
    found = []
    for name, model, side in ((left.strip(), model_a, "A"), (right.strip(), model_b, "B")):
        layer = find_layer(model.layers, name)
        if layer is None:
            available = ", ".join(x.name for x in model.layers) or "none"
            raise UsageError(
                f"--map '{text}': no Bidirectional layer '{name}' in {side} ({model.path}; "
                f"available: {available})"
            )
        found.append(layer)
    return found[0], found[1]


def _chosen(layers: list[Layer], globs: Sequence[str]) -> list[Layer]:
    if not globs:
        return layers
    return [x for x in layers if any(layer_matches(x, g) for g in globs)]


def _layer_diff(
    la: Layer,
    lb: Layer,
    targets: list[Any],
    with_gates: bool,
    helper: SerialWorker,
) -> LayerDiff:
    result = LayerDiff(la.name, la.cell, "same", name_b=lb.name)
    if la.cell != lb.cell or la.units != lb.units:
        result.status = "different"
        result.notes.append(f"{la.cell} {la.units} units vs {lb.cell} {lb.units} units")
    for ra in la.weights:
        masks: list[tuple[str | None, np.ndarray | None]] = [(None, None)]
        if targets:
            wanted = [t for t in targets if t.role in (None, ra.role)]
            if not wanted:
                continue
            if any(t.gates for t in wanted) and la.supported:
                columns = np.zeros(ra.shape[-1], dtype=bool)
                for t in wanted:
                    columns |= gate_mask(
                        la.cell, la.units, parse_gates(la.cell, t.gates) if t.gates else None
                    )
                masks = [(",".join(g for t in wanted for g in (t.gates or ())) or None, columns)]
        rb = lb.weight(ra.direction, ra.role)
        if rb is None:
            result.status = "different"
            result.weights.append(WeightDiff(ra.direction, ra.role, None, False, ra.shape, None))
            continue
        a, b = ra.read(), rb.read()
        if a.shape != b.shape:
            result.status = "different"
            result.weights.append(WeightDiff(ra.direction, ra.role, None, False, a.shape, b.shape))
            continue
        if with_gates and la.supported and la.cell != "SimpleRNN" and masks[0][1] is None:
            masks += [
                (g, gate_mask(la.cell, la.units, (g,)))
                for g, _ in gate_blocks(la.cell, la.units)
                if g is not None
            ]
        for gate, mask in masks:
            xa, xb = _masked(a, mask), _masked(b, mask)
            entry = WeightDiff(ra.direction, ra.role, gate, True, xa.shape, xb.shape)
            result.weights.append(entry)
            # Both sides' statistics on the other core, while this thread compares them and
            # then reads the next pair: at most two pairs are held, this one and the next.
            helper.submit(partial(_fill_stats, entry, xa, xb))
            entry.equal, entry.max_abs, entry.max_rel = _compare(xa, xb)
            if not entry.equal:
                result.status = "different"
            del xa, xb
        del a, b  # one weight pair in memory at a time
    return result
