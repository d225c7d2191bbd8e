"""``inspect``: every Bidirectional layer of a file, each weight's role, shape and statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bilstm_cli import formats
from bilstm_cli.cells import blocks as gate_layout
from bilstm_cli.concurrency import SerialWorker
from bilstm_cli.model import Layer
from bilstm_cli.ops import Progress
from bilstm_cli.ops.select import layers_matching, select_layers
from bilstm_cli.results import InspectResult, LayerReport, WeightReport
from bilstm_cli.stats import gate_stats, weight_stats


def inspect(
    path: str,
    layers: Sequence[str] = (),
    gates: bool = False,
    progress: Progress | None = None,
) -> InspectResult:
    """Every Bidirectional layer of the model at ``path`` (or those the ``layers`` globs
    match) with each weight's role, shape, dtype, location and statistics; ``gates`` adds
    per-gate-block statistics. ``to_dict()`` of the result is ``bilstm inspect --json``.

    >>> import bilstm_cli as bl
    >>> report = bl.inspect("fixtures/k2_seq_lstm.h5", gates=True)
    >>> [(r.layer.name, r.layer.cell, r.layer.units) for r in report.layers]
    [('bidirectional', 'LSTM', 3)]
    """
    return _inspect(path, layers, gates, True, progress)


def inspect_matching(
    path: str, layers: Sequence[str], gates: bool = False, progress: Progress | None = None
) -> InspectResult:
    """:func:`inspect` of the layers that ``layers`` (at least one glob) match in this file,
    where a glob matching nothing is not an error: the result may hold no layer. What
    ``bilstm inspect`` runs on each of several files, whose globs need to match in one only."""
    return _inspect(path, layers, gates, False, progress)


def _inspect(
    path: str,
    layers: Sequence[str],
    gates: bool,
    every_glob: bool,
    progress: Progress | None,
) -> InspectResult:
    # Read-only: a large archive member is read only where the listed weights are.
    session = formats.Session(read_only=True)
    with formats.open_model(path, session) as model:
        if every_glob:
            chosen = select_layers(model.layers, layers, path)
        else:
            chosen = layers_matching(model.layers, layers)
        reports = [
            LayerReport(layer, gate_layout.CELL_GATES.get(layer.cell, ())) for layer in chosen
        ]
        total, done = sum(len(r.layer.weights) for r in reports), 0
        beside = SerialWorker()  # its thread starts with the first large weight, if any
        try:
            for report in reports:
                layer = report.layer
                for ref in layer.weights:
                    if progress is not None:
                        progress("reading", done, total)
                    done += 1
                    values = ref.read()
                    entry = WeightReport(ref, {})
                    report.weights.append(entry)
                    count = _counter(entry, values, gates and layer.supported, layer)
                    if values.size >= _BESIDE:
                        beside.submit(count)  # while the next weight is read
                    else:
                        count()
                    del values, count  # at most this one and the next in memory
            beside.finish()
        finally:
            beside.close()
        session.settle()  # the archive's CRC, taken beside the reading
    return InspectResult(model, reports)


# From this many values a weight's statistics are taken on a helper thread while the next
# weight is read: reading lets go of the interpreter, so the two overlap on two cores. Small
# weights are counted at once (a thread would cost more than it saves).
_BESIDE = 1 << 20


def _counter(
    entry: WeightReport, values: np.ndarray, gates: bool, layer: Layer
) -> Callable[[], None]:
    """What fills ``entry`` with the statistics of ``values`` (and per gate when asked)."""

    def count() -> None:
        entry.stats = weight_stats(values)
        if gates:
            entry.gates = gate_stats(values, layer.cell, entry.ref.role, layer.units)

    return count
